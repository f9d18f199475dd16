"""The DeepSpeed config follows the spec and the hardware the workers got."""

from __future__ import annotations

from typing import Any

from distill_jobs.training.dsconfig import deepspeed_config
from distill_operator.api.spec import Training


def training(**fields: Any) -> Training:
    return Training.model_validate(fields)


def test_batch_sizes_multiply_micro_batch_accumulation_and_workers() -> None:
    config = deepspeed_config(
        training(microBatchSize=4, deepspeed={"gradientAccumulationSteps": 3}),
        world_size=2,
        on_gpu=False,
        total_steps=10,
    )
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 24


def test_cpu_training_is_fp32_with_torch_adamw_whatever_precision_says() -> None:
    config = deepspeed_config(
        training(deepspeed={"precision": "bf16"}), world_size=2, on_gpu=False, total_steps=10
    )
    assert "bf16" not in config and "fp16" not in config
    assert config["optimizer"]["params"]["torch_adam"] is True


def test_gpu_training_takes_the_spec_precision() -> None:
    bf16 = deepspeed_config(training(), world_size=8, on_gpu=True, total_steps=10)
    fp16 = deepspeed_config(
        training(deepspeed={"precision": "fp16"}), world_size=8, on_gpu=True, total_steps=10
    )
    assert bf16["bf16"] == {"enabled": True} and "torch_adam" not in bf16["optimizer"]["params"]
    assert fp16["fp16"]["enabled"] is True and "bf16" not in fp16


def test_zero3_with_offload_offloads_optimizer_and_parameters_and_gathers_on_save() -> None:
    zero = deepspeed_config(
        training(deepspeed={"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True}),
        world_size=2,
        on_gpu=True,
        total_steps=10,
    )["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_parameter_offload_needs_zero3() -> None:
    zero = deepspeed_config(
        training(deepspeed={"zeroStage": 2, "offloadParams": True}),
        world_size=2,
        on_gpu=True,
        total_steps=10,
    )["zero_optimization"]
    assert "offload_param" not in zero


def test_each_schedule_warms_up_linearly_then_holds_or_decays_to_the_last_step() -> None:
    def scheduler(schedule: str) -> dict[str, Any]:
        spec = training(lrSchedule=schedule, warmupSteps=5, learningRate=0.01)
        return deepspeed_config(spec, world_size=1, on_gpu=False, total_steps=40)["scheduler"]

    constant, linear, cosine = (scheduler(s) for s in ("constant", "linear", "cosine"))
    assert constant["type"] == "WarmupLR" and constant["params"]["warmup_max_lr"] == 0.01
    assert linear["type"] == "WarmupDecayLR" and linear["params"]["total_num_steps"] == 40
    assert cosine["type"] == "WarmupCosineLR" and cosine["params"]["total_num_steps"] == 40
    for config in (constant, linear, cosine):
        assert config["params"]["warmup_num_steps"] == 5
        assert config["params"]["warmup_type"] == "linear"


def test_no_warmup_still_gives_deepspeed_a_positive_warmup() -> None:
    config = deepspeed_config(training(warmupSteps=0), world_size=1, on_gpu=False, total_steps=3)
    assert config["scheduler"]["params"]["warmup_num_steps"] == 1
