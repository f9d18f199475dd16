"""Training throughput: our DeepSpeed path (ZeRO-2, ZeRO-3) vs a plain PyTorch DDP loop.

All variants train the same tiny model on the same synthetic distillation data (fixed
length, teacher top-k on every answer position) with the same loss, micro-batch, number
of optimizer steps and number of Ray Train workers (gloo on CPUs, NCCL on GPUs):

- ``ddp``: a plain loop written here: ``ray.train.torch.prepare_model`` (DDP),
  ``torch.optim.AdamW``, the same warm-up/cosine schedule and gradient clipping, the
  same ``collate`` and ``distillation_loss``; bf16 autocast on GPUs;
- ``deepspeed-zero2`` / ``deepspeed-zero3``: ``distill_jobs.training.loop.train_worker``
  itself, with a ``Plan`` and the DeepSpeed config Iterate would build.

The timed window is the same for every variant: optimizer steps ``warmup+1..steps``,
wall clock on rank 0. For DeepSpeed it runs from the progress report at step ``warmup``
to the one at the last step (``progress_every`` is set to the warm-up), so everything
train_worker does between them counts, its own reporting included (the time spent in
``ray.train.report``, a barrier of all workers, is measured apart as "in report"); the
tokens/s that train_worker writes to progress.json (its last interval alone) is kept in
the JSON beside it. Variants run interleaved, ``--repeats`` times; medians are reported.
Ray Train v2 holds one unread report per worker and its controller reads them once a
health check (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default), so a loop that
reports more often waits in ``report``: the JSON records that variable.

``python bench/train.py [--preset small] [--workers 2] [--steps 60] [--repeats 2]``
writes ``bench/results/train.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from distill_jobs.tiny import build_tiny_model
from distill_jobs.training.data import IGNORE, Example, collate, read_examples, write_examples
from distill_jobs.training.dsconfig import deepspeed_config
from distill_jobs.training.loop import Plan, micro_batches_per_epoch, train_worker

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("ddp", "deepspeed-zero2", "deepspeed-zero3")
ZERO_STAGES = {"deepspeed-zero2": 2, "deepspeed-zero3": 3}
ENV_SEEN = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "TORCH_EXTENSIONS_DIR", "OMP_NUM_THREADS")
TARGET_RATIO = 0.9  # issue #4: our path at least 90% of DDP's tokens/s


@dataclass(frozen=True)
class Measurement:
    """One variant's figures from one repeat (``error`` set when it failed)."""

    variant: str
    repeat: int
    tokens_per_second: float | None = None
    window_seconds: float | None = None
    timed_tokens: int | None = None
    peak_rss_mib: float | None = None
    import_rss_mib: float | None = None
    final_loss: float | None = None
    progress_tokens_per_second: float | None = None  # DeepSpeed: progress.json's figure
    report_seconds: float | None = None  # DeepSpeed: in ray.train.report, in the window
    interval_seconds: dict[str, float] | None = None  # the window's reporting intervals
    fit_seconds: float | None = None
    error: str | None = None


# --- data ----------------------------------------------------------------------------------


def synthetic_examples(
    *, count: int, seq_len: int, prompt_len: int, vocab: int, top_k: int, seed: int
) -> list[Example]:
    """Random token ids; teacher top-k (distinct ids, normalised logprobs) on the answer."""
    import numpy as np

    rng = np.random.default_rng(seed)
    answer_len = seq_len - prompt_len
    examples = []
    for _ in range(count):
        ids = rng.integers(0, vocab, seq_len)
        candidates = np.argpartition(rng.random((answer_len, vocab)), -top_k, axis=1)[:, -top_k:]
        scores = np.sort(rng.normal(size=(answer_len, top_k)), axis=1)[:, ::-1]
        logprobs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        examples.append(
            Example(
                input_ids=ids.tolist(),
                labels=[IGNORE] * prompt_len + ids[prompt_len:].tolist(),
                soft_start=prompt_len,
                topk_ids=candidates.tolist(),
                topk_logprobs=logprobs.tolist(),
            )
        )
    return examples


# --- the workers -----------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def ddp_worker(config: dict[str, Any]) -> None:
    """The plain DDP loop (Ray Train's ``train_loop_per_worker``)."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from distill_jobs.training.losses import distillation_loss

    import_rss = _peak_rss_mib()
    steps, warmup, on_gpu = config["steps"], config["warmup_steps"], config["on_gpu"]
    torch.manual_seed(config["seed"])
    device = ray.train.torch.get_device()
    model = AutoModelForCausalLM.from_pretrained(config["init_dir"], dtype=torch.float32)
    model = ray.train.torch.prepare_model(model)  # moves it to the device, wraps it in DDP
    optimizer, schedule = _optimizer(model, config)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config["bf16"])
    losses, started, marks = [], time.perf_counter(), {}
    for step, batch in enumerate(_loader(config), start=1):
        batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        with autocast:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            parts = distillation_loss(
                logits.logits[:, :-1],
                batch["labels"][:, 1:],
                batch["topk_ids"][:, 1:],
                batch["topk_logprobs"][:, 1:],
                **config["loss"],
            )
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["gradient_clipping"])
        optimizer.step()
        schedule.step()
        losses.append(parts.total.detach())  # no per-step host sync
        if step == warmup:
            started = _synchronised_clock(dist, on_gpu=on_gpu)
        if step % warmup == 0:
            marks[step] = time.perf_counter()  # per-interval split: diagnostic, unsynchronised
        if step == steps:
            break
    seconds = _synchronised_clock(dist, on_gpu=on_gpu) - started
    marks[steps] = started + seconds
    # The loss over the last reporting interval, as train_worker's progress.json has it.
    last_interval = losses[((steps - 1) // warmup) * warmup :]
    figures = torch.tensor(
        [float(torch.stack(last_interval).mean()), _peak_rss_mib()],
        dtype=torch.float64,
        device=device,
    )
    peak = figures[1:].clone()
    dist.all_reduce(figures)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    _write_figures(
        config["figures_path"],
        {
            "windowSeconds": seconds,
            "intervalSeconds": _intervals(marks, first=warmup),
            "finalLoss": float(figures[0]) / dist.get_world_size(),
            "peakRssMiB": float(peak[0]),
            "importRssMiB": import_rss,
        },
    )


def _optimizer(model: Any, config: dict[str, Any]) -> tuple[Any, Any]:
    """AdamW with DeepSpeed's WarmupCosineLR (linear warm-up, cosine to 0) as a LambdaLR."""
    import torch

    warmup = max(1, config["lr_warmup_steps"])
    decay = max(1, config["steps"] - warmup)

    def ratio(index: int) -> float:
        if index < warmup:
            return index / warmup
        return (1 + math.cos(math.pi * min(1.0, (index - warmup + 1) / decay))) / 2

    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config["learning_rate"],
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=config["weight_decay"],
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, ratio)


def _loader(config: dict[str, Any]) -> Any:
    """This rank's micro-batches, sampled as train_worker samples them."""
    import ray.train
    from torch.utils.data import DataLoader, DistributedSampler

    context = ray.train.get_context()
    examples = read_examples(config["examples_uri"])
    sampler = DistributedSampler(
        examples,  # type: ignore[arg-type]
        num_replicas=context.get_world_size(),
        rank=context.get_world_rank(),
        shuffle=True,
        seed=config["seed"],
    )
    sampler.set_epoch(0)
    return DataLoader(
        examples,  # type: ignore[arg-type]
        batch_size=config["micro_batch_size"],
        sampler=sampler,
        collate_fn=lambda rows: collate(rows, pad_id=config["pad_id"], top_k=config["top_k"]),
    )


def _synchronised_clock(dist: Any, *, on_gpu: bool) -> float:
    """The time once every rank (and its GPU queue) got here."""
    if on_gpu:
        import torch

        torch.cuda.synchronize()
    dist.barrier()
    return time.perf_counter()


def deepspeed_worker(config: dict[str, Any]) -> None:
    """``train_worker`` as Iterate runs it, timed between its own progress reports.

    A progress flush all-reduces across ranks, so the time it returns at step
    ``warmup`` and at the last step bound the same window on every rank; the time spent
    in ``ray.train.report`` (only the final numbers now) is measured apart.
    """
    plan_fields, warmup = config["plan"], config["warmup_steps"]
    if not plan_fields["on_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # noqa: F401  (imported before the RSS baseline, as train_worker does)
    import ray.train
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from distill_jobs.training import loop

    import_rss = _peak_rss_mib()
    flush, report = loop._Progress.flush, ray.train.report
    reported_at: dict[int, float] = {}
    in_report = 0.0

    def timed_flush(self: Any, *, step: int, **kwargs: Any) -> dict[str, float]:
        figures = flush(self, step=step, **kwargs)
        reported_at[step] = time.perf_counter()
        return figures

    def timed_report(metrics: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        nonlocal in_report
        called = time.perf_counter()
        report(metrics, *args, **kwargs)
        in_report += time.perf_counter() - called

    loop._Progress.flush = timed_flush  # type: ignore[method-assign]
    ray.train.report = timed_report
    try:
        train_worker(plan_fields)
    finally:
        loop._Progress.flush, ray.train.report = flush, report  # type: ignore[method-assign]
    last = plan_fields["total_steps"]
    window = reported_at[last] - reported_at[warmup]
    _write_figures(
        config["figures_path"],
        {
            "windowSeconds": window,
            "intervalSeconds": _intervals(reported_at, first=warmup),
            "importRssMiB": import_rss,
            "reportSeconds": in_report,
        },
    )


def _intervals(marks: dict[int, float], *, first: int) -> dict[str, float]:
    """Seconds between consecutive marks from step ``first`` on, keyed "from-to"."""
    steps = sorted(step for step in marks if step >= first)
    return {f"{a + 1}-{b}": round(marks[b] - marks[a], 4) for a, b in itertools.pairwise(steps)}


def _write_figures(path: str, figures: dict[str, Any]) -> None:
    """Rank 0's figures for the driver (Ray Train v2 keeps metrics only with checkpoints)."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        Path(path).write_text(json.dumps(figures))


# --- running the variants ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """What every variant shares."""

    model_dir: Path
    examples_uri: str
    examples: int
    work_dir: Path
    workers: int
    cpus_per_worker: float
    steps: int
    warmup_steps: int
    micro_batch: int
    seq_len: int
    top_k: int
    pad_id: int
    on_gpu: bool

    @property
    def timed_tokens(self) -> int:
        return (self.steps - self.warmup_steps) * self.micro_batch * self.seq_len * self.workers

    def training(self, *, zero_stage: int) -> Any:
        """The spec's Training, as a user would write it for this run."""
        from distill_operator.api.spec import Training

        return Training.model_validate(
            {
                "microBatchSize": self.micro_batch,
                "workers": self.workers,
                "cpusPerWorker": self.cpus_per_worker,
                "gpusPerWorker": 1 if self.on_gpu else 0,
                "maxSteps": self.steps,
                "checkpointEverySteps": self.steps + 1,  # no checkpoint I/O in the window
                "maxSequenceLength": self.seq_len,
                "deepspeed": {"zeroStage": zero_stage},
            }
        )


def run_variant(bench: Bench, *, variant: str, repeat: int) -> Measurement:
    """One TorchTrainer run of ``variant``; a failure is recorded, not raised."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    stage_dir = bench.work_dir / f"{variant}-{repeat}"
    stage_dir.mkdir()
    worker, config = (
        (ddp_worker, ddp_config(bench))
        if variant == "ddp"
        else (deepspeed_worker, deepspeed_config_for(bench, variant, stage_dir=stage_dir))
    )
    figures_path = stage_dir / "figures.json"
    config["figures_path"] = str(figures_path)
    resources = {"CPU": bench.cpus_per_worker} | ({"GPU": 1} if bench.on_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker=worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=bench.workers, use_gpu=bench.on_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if bench.on_gpu else "gloo"),
        run_config=RunConfig(
            name=f"{variant}-{repeat}",
            storage_path=str(bench.work_dir / "ray-train"),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    started = time.perf_counter()
    try:
        trainer.fit()
    except Exception as error:  # a failed variant is a finding; the others still run
        return Measurement(variant, repeat, error=_cause(error))
    fit_seconds = time.perf_counter() - started
    metrics = json.loads(figures_path.read_text())
    progress_path = stage_dir / "progress.json"  # train_worker's own (DeepSpeed only)
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
    shutil.rmtree(stage_dir, ignore_errors=True)
    return Measurement(
        variant=variant,
        repeat=repeat,
        tokens_per_second=bench.timed_tokens / metrics["windowSeconds"],
        window_seconds=metrics["windowSeconds"],
        timed_tokens=bench.timed_tokens,
        peak_rss_mib=progress.get("peakRssMiB", metrics.get("peakRssMiB")),
        import_rss_mib=metrics["importRssMiB"],
        final_loss=progress.get("loss", metrics.get("finalLoss")),
        progress_tokens_per_second=progress.get("tokensPerSecond"),
        report_seconds=metrics.get("reportSeconds"),
        interval_seconds=metrics.get("intervalSeconds"),
        fit_seconds=fit_seconds,
    )


def ddp_config(bench: Bench) -> dict[str, Any]:
    training = bench.training(zero_stage=0)
    return {
        "init_dir": str(bench.model_dir),
        "examples_uri": bench.examples_uri,
        "steps": bench.steps,
        "warmup_steps": bench.warmup_steps,
        "micro_batch_size": bench.micro_batch,
        "seed": training.seed,
        "pad_id": bench.pad_id,
        "top_k": bench.top_k,
        "on_gpu": bench.on_gpu,
        "bf16": bench.on_gpu and training.deepspeed.precision.value == "bf16",
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "lr_warmup_steps": training.warmup_steps,
        "gradient_clipping": training.deepspeed.gradient_clipping,
        "loss": {
            "alpha": training.alpha,
            "temperature": training.temperature,
            "divergence": training.divergence.value,
            "jsd_beta": training.jsd_beta,
        },
    }


def deepspeed_config_for(bench: Bench, variant: str, *, stage_dir: Path) -> dict[str, Any]:
    training = bench.training(zero_stage=ZERO_STAGES[variant])
    plan = Plan(
        init_dir=str(bench.model_dir),
        examples_uri=bench.examples_uri,
        stage_dir=str(stage_dir),
        ds_config=deepspeed_config(
            training, world_size=bench.workers, on_gpu=bench.on_gpu, total_steps=bench.steps
        ),
        total_steps=bench.steps,
        micro_batches_per_epoch=micro_batches_per_epoch(
            examples=bench.examples, world_size=bench.workers, micro_batch_size=bench.micro_batch
        ),
        micro_batch_size=bench.micro_batch,
        gradient_accumulation_steps=1,
        checkpoint_every=training.checkpoint_every_steps,
        seed=training.seed,
        pad_id=bench.pad_id,
        top_k=bench.top_k,
        alpha=training.alpha,
        temperature=training.temperature,
        divergence=training.divergence.value,
        jsd_beta=training.jsd_beta,
        on_gpu=bench.on_gpu,
        progress_every=bench.warmup_steps,  # a report exactly where the window starts
    )
    return {"plan": asdict(plan), "warmup_steps": bench.warmup_steps}


def _cause(error: Exception) -> str:
    """The innermost error line of a (Ray-wrapped) failure."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors or lines or [repr(error)])[-1][:500]


# --- results -----------------------------------------------------------------------------------


def medians(
    measurements: list[Measurement], *, parameters: int, bench: Bench, peak_tflops: float
) -> dict[str, dict[str, Any]]:
    """Per variant: the median of each figure over its successful repeats."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        done = [m for m in measurements if m.variant == variant and m.error is None]
        failed = [m.error for m in measurements if m.variant == variant and m.error]
        row: dict[str, Any] = {"repeats": len(done), "errors": failed}
        for name in ("tokens_per_second", "peak_rss_mib", "import_rss_mib", "final_loss",
                     "progress_tokens_per_second"):  # fmt: skip
            values = [getattr(m, name) for m in done if getattr(m, name) is not None]
            row[name] = statistics.median(values) if values else None
        speeds = [m.tokens_per_second for m in done if m.tokens_per_second]
        row["tokens_per_second_range"] = [min(speeds), max(speeds)] if speeds else None
        shares = [m.report_seconds / m.window_seconds for m in done if m.report_seconds]
        row["report_share"] = statistics.median(shares) if shares else None
        summary[variant] = row
    baseline = summary["ddp"]["tokens_per_second"]
    for row in summary.values():
        speed = row["tokens_per_second"]
        row["ratio_vs_ddp"] = speed / baseline if speed and baseline else None
        # 6·N FLOPs a token (forward + backward), against the peak of every worker's GPU.
        row["mfu"] = (
            6 * parameters * speed / (peak_tflops * 1e12 * bench.workers)
            if speed and bench.on_gpu
            else None
        )
    return summary


def print_table(summary: dict[str, dict[str, Any]], *, bench: Bench) -> None:
    def cell(value: float | None, spec: str, width: int) -> str:
        return f"{'n/a' if value is None else format(value, spec):>{width}}"

    print(
        f"{'variant':<18}{'tokens/s':>10}{'min-max':>14}{'vs ddp':>8}{'in report':>11}"
        f"{'peak RSS MiB':>14}{'over imports':>14}{'loss':>8}{'MFU':>8}"
    )
    for variant, row in summary.items():
        rss, imports = row["peak_rss_mib"], row["import_rss_mib"]
        print(
            f"{variant:<18}{cell(row['tokens_per_second'], '.0f', 10)}"
            f"{_range(row['tokens_per_second_range']):>14}"
            f"{cell(row['ratio_vs_ddp'], '.1%', 8)}{cell(row['report_share'], '.1%', 11)}"
            f"{cell(rss, '.0f', 14)}{cell(rss - imports if rss and imports else None, '.0f', 14)}"
            f"{cell(row['final_loss'], '.3f', 8)}{cell(row['mfu'], '.2%', 8)}"
            + (f"  FAILED: {row['errors'][0]}" if row["errors"] else "")
        )
    for line in (
        f"Medians (and range) of {max(row['repeats'] for row in summary.values())} interleaved "
        "repeats.",
        f"Timed window, the same for every variant: optimizer steps {bench.warmup_steps + 1}.."
        f"{bench.steps} ({bench.timed_tokens} tokens, {bench.workers} processes), wall clock",
        f"  on rank 0 from step {bench.warmup_steps} to step {bench.steps}; for DeepSpeed from "
        "train_worker's progress report at one to the other's,",
        "  so its reporting counts; 'in report': the share of the window spent in "
        "ray.train.report (waiting",
        "  for the slowest worker and for Ray Train's controller to take the previous report).",
        "Peak RSS: ru_maxrss, max over processes (DeepSpeed: progress.json's peakRssMiB); "
        "'over imports'",
        "  subtracts rank 0's RSS once torch and transformers (and deepspeed) were imported.",
        "Loss: mean of the last reporting interval. MFU: 6 x parameters x tokens/s / "
        "(peak FLOP/s x GPUs).",
    ):
        print(line)


def _range(values: list[float] | None) -> str:
    return f"{values[0]:.0f}-{values[1]:.0f}" if values else "n/a"


def machine(*, on_gpu: bool) -> dict[str, Any]:
    import torch

    versions = {name: metadata.version(name) for name in ("torch", "deepspeed", "ray",
                                                          "transformers")}  # fmt: skip
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **versions,
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
        "gpus": torch.cuda.device_count() if on_gpu else 0,
        # Shared machines: the load says how much of the CPU the run really had.
        "load_average_after": os.getloadavg(),
    }


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--workers", type=int, default=None, help="default: 2 on CPU, every GPU on a GPU machine"
    )
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="per GPU (H100 bf16)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train.json")
    args = parser.parse_args(argv)
    if not 1 <= args.warmup_steps < args.steps:
        parser.error("--warmup-steps must be at least 1 and below --steps")
    if not 1 <= args.prompt_len < args.seq_len:
        parser.error("--prompt-len must be at least 1 and below --seq-len")
    return args


def prepare(args: argparse.Namespace, *, work_dir: Path, on_gpu: bool) -> Bench:
    """The model and the data every variant trains on."""
    import torch
    from transformers import AutoTokenizer

    workers = args.workers or (torch.cuda.device_count() if on_gpu else 2)
    model_dir = build_tiny_model(directory=work_dir / "model", seed=0, preset=args.preset)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    count = args.steps * args.micro_batch * workers  # one epoch: no rank waits for padding
    examples_uri = str(work_dir / "data" / "train.parquet")
    write_examples(
        examples_uri,
        synthetic_examples(
            count=count,
            seq_len=args.seq_len,
            prompt_len=args.prompt_len,
            vocab=len(tokenizer),
            top_k=args.top_k,
            seed=0,
        ),
    )
    return Bench(
        model_dir=model_dir,
        examples_uri=examples_uri,
        examples=count,
        work_dir=work_dir,
        workers=workers,
        cpus_per_worker=args.cpus_per_worker,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        micro_batch=args.micro_batch,
        seq_len=args.seq_len,
        top_k=args.top_k,
        pad_id=int(tokenizer.pad_token_id),
        on_gpu=on_gpu,
    )


def count_parameters(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return sum(parameter.numel() for parameter in model.parameters())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    import torch

    from distill_jobs.raycluster import connect

    started = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    # Ray's socket paths must stay short: a private temp dir under /tmp.
    work_dir = Path(tempfile.mkdtemp(prefix="bench-train-", dir="/tmp"))
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_TMPDIR": str(work_dir),
    }.items():
        os.environ.setdefault(key, value)
    measurements: list[Measurement] = []
    try:
        bench = prepare(args, work_dir=work_dir, on_gpu=on_gpu)
        parameters = count_parameters(bench.model_dir)
        connect(num_cpus=max(os.cpu_count() or 1, math.ceil(bench.workers * bench.cpus_per_worker)))
        for repeat in range(args.repeats):
            # Interleaved, in a rotating order, so drift on a noisy machine hits every variant.
            order = VARIANTS[repeat % 3 :] + VARIANTS[: repeat % 3]
            for variant in order:
                measurements.append(run_variant(bench, variant=variant, repeat=repeat))
                print(f"[bench] {measurements[-1]}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work_dir, ignore_errors=True)

    summary = medians(
        measurements, parameters=parameters, bench=bench, peak_tflops=args.peak_tflops
    )
    zero2 = summary["deepspeed-zero2"]["ratio_vs_ddp"]
    print_table(summary, bench=bench)
    wall = time.perf_counter() - started
    print(
        f"parameters {parameters:,}; target (ZeRO-2 >= {TARGET_RATIO:.0%} of DDP) "
        f"{'met' if zero2 and zero2 >= TARGET_RATIO else 'NOT met'}; wall {wall:.0f} s"
    )
    results = {
        "machine": machine(on_gpu=on_gpu),
        "settings": {
            **vars(args),
            "out": str(args.out),
            "workers": bench.workers,
            "backend": "nccl" if on_gpu else "gloo",
            "examples": bench.examples,
            "timed_steps": [bench.warmup_steps + 1, bench.steps],
            "timed_tokens": bench.timed_tokens,
            "parameters": parameters,
            # Settings of the environment that change the figures.
            "env": {name: os.environ.get(name) for name in ENV_SEEN},
        },
        "repeats": [asdict(m) for m in measurements],
        "medians": summary,
        "target_ratio": TARGET_RATIO,
        "target_met": bool(zero2 and zero2 >= TARGET_RATIO),
        "wall_seconds": round(wall, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
