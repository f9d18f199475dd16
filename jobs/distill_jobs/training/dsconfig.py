"""The DeepSpeed config of a training run, built from ``spec.students.training``.

Everything DeepSpeed needs comes from the spec and the hardware the workers got: ZeRO
stage and offload, precision (bf16/fp16 on GPUs; CPUs train in fp32), batch sizes,
gradient accumulation and clipping, AdamW and a warm-up schedule.
"""

from __future__ import annotations

from typing import Any

# lrSchedule → DeepSpeed scheduler; every one warms up linearly first.
SCHEDULERS = {"constant": "WarmupLR", "linear": "WarmupDecayLR", "cosine": "WarmupCosineLR"}


def deepspeed_config(
    training: Any, *, world_size: int, on_gpu: bool, total_steps: int
) -> dict[str, Any]:
    """A DeepSpeed config dict.

    Args:
        training: the spec's ``Training`` model.
        world_size: number of training processes.
        on_gpu: whether the workers have GPUs (precision and optimizer follow).
        total_steps: optimizer steps of the whole run (decay schedules end there).
    """
    settings = training.deepspeed
    zero: dict[str, Any] = {"stage": settings.zero_stage}
    if settings.offload_optimizer and settings.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if settings.offload_params and settings.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    if settings.zero_stage == 3:
        # The final save gathers the partitioned weights into one model on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": training.micro_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "train_batch_size": training.micro_batch_size
        * settings.gradient_accumulation_steps
        * world_size,
        "gradient_clipping": settings.gradient_clipping,
        "zero_optimization": zero,
        "optimizer": _optimizer(training, on_gpu=on_gpu),
        "scheduler": _scheduler(training, total_steps=total_steps),
        "steps_per_print": 10**9,  # progress goes to status, not DeepSpeed's log lines
        "wall_clock_breakdown": False,
    }
    if on_gpu and settings.precision.value == "bf16":
        config["bf16"] = {"enabled": True}
    elif on_gpu and settings.precision.value == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if settings.offload_optimizer and not on_gpu:
        # DeepSpeed insists on its compiled CPU Adam for offload unless told otherwise.
        config["zero_force_ds_cpu_optimizer"] = False
    return config


def _optimizer(training: Any, *, on_gpu: bool) -> dict[str, Any]:
    params: dict[str, Any] = {
        "lr": training.learning_rate,
        "weight_decay": training.weight_decay,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
    }
    if not on_gpu:
        # torch's AdamW: DeepSpeed's fused and CPU Adam are C++ ops compiled on first use.
        params["torch_adam"] = True
    return {"type": "AdamW", "params": params}


def _scheduler(training: Any, *, total_steps: int) -> dict[str, Any]:
    warmup = max(1, training.warmup_steps)  # DeepSpeed rejects zero warm-up steps
    total = max(total_steps, warmup)
    kind = SCHEDULERS[training.lr_schedule.value]
    if kind == "WarmupCosineLR":
        params: dict[str, Any] = {
            "total_num_steps": total,
            "warmup_num_steps": warmup,
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": 0.0,
        }
    else:
        params = {"warmup_min_lr": 0.0, "warmup_max_lr": training.learning_rate}
        params["warmup_num_steps"] = warmup
        if kind == "WarmupDecayLR":
            params["total_num_steps"] = total
    params["warmup_type"] = "linear"
    return {"type": kind, "params": params}
