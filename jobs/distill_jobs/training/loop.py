"""The loop every Ray Train worker runs: DeepSpeed engine, distillation loss, checkpoints.

Ray Train starts the workers and their process group (gloo on CPUs, NCCL on GPUs);
``deepspeed.initialize`` finds the group and uses it. Checkpoints go to the artifact
store every ``checkpoint_every`` optimizer steps; a worker group that starts again —
after a worker died (Ray Train restarts it) or as a new job after the old one was
killed — loads the latest one and goes on from that step, not from zero.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from distill_jobs.contract import PROGRESS_FILE, read_progress
from distill_jobs.training.data import collate, read_examples
from distill_jobs.training.storage import is_local, local_copy, upload_dir

LATEST = "latest"  # DeepSpeed's marker file naming the newest checkpoint tag
KEEP_CHECKPOINTS = 2
HISTORY_POINTS = 50  # loss points kept in progress.json


@dataclass(frozen=True)
class Plan:
    """What one training run does; plain data, shipped to every worker.

    Attributes:
        init_dir: local directory (or URI) of the initial student and tokenizer.
        examples_uri: the tokenized training set (Parquet).
        stage_dir: the candidate's stage directory: checkpoints, progress, the student.
        ds_config: the DeepSpeed config.
        total_steps: optimizer steps of the whole run.
        micro_batches_per_epoch: per worker (the sampler pads ranks to equal length).
    """

    init_dir: str
    examples_uri: str
    stage_dir: str
    ds_config: dict[str, Any]
    total_steps: int
    micro_batches_per_epoch: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    checkpoint_every: int
    seed: int
    pad_id: int
    top_k: int
    alpha: float
    temperature: float
    divergence: str
    jsd_beta: float
    on_gpu: bool
    progress_every: int = 10

    @property
    def checkpoints_uri(self) -> str:
        return f"{self.stage_dir}/checkpoints"

    @property
    def student_uri(self) -> str:
        return f"{self.stage_dir}/student"

    @property
    def progress_uri(self) -> str:
        return f"{self.stage_dir}/{PROGRESS_FILE}"


def micro_batches_per_epoch(*, examples: int, world_size: int, micro_batch_size: int) -> int:
    """Micro-batches each worker sees per epoch (DistributedSampler pads every rank)."""
    return math.ceil(math.ceil(examples / world_size) / micro_batch_size)


def train_worker(plan_fields: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: train the student described by the plan."""
    plan = Plan(**plan_fields)
    if not plan.on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from distill_jobs.training.losses import distillation_loss

    if not plan.on_gpu:
        # Only used for intra-node shared-memory all-reduce; skip its C++ build.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(plan.seed)
    init_dir = local_copy(plan.init_dir)
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=plan.ds_config
    )
    step = _resume(engine, plan)
    progress = _Progress(plan=plan, rank=rank, first_step=step)
    for batch in _micro_batches(plan, rank=rank, world=world, first_step=step):
        batch = {name: tensor.to(engine.device) for name, tensor in batch.items()}
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Logits at position t predict the token at t+1.
        parts = distillation_loss(
            logits[:, :-1],
            batch["labels"][:, 1:],
            batch["topk_ids"][:, 1:] if "topk_ids" in batch else None,
            batch["topk_logprobs"][:, 1:] if "topk_logprobs" in batch else None,
            alpha=plan.alpha,
            temperature=plan.temperature,
            divergence=plan.divergence,
            jsd_beta=plan.jsd_beta,
        )
        engine.backward(parts.total)
        engine.step()
        progress.add(loss=float(parts.total.detach()), tokens=int(batch["attention_mask"].sum()))
        if not engine.is_gradient_accumulation_boundary():
            continue
        step = int(engine.global_steps)
        if step % plan.progress_every == 0 or step == plan.total_steps:
            report = progress.flush(step=step, dist=dist, device=engine.device)
            # Ray Train 2.60 takes one report per worker per health check (2 s): reporting
            # every interval stalls training, so progress goes to progress.json and Ray
            # hears only the final numbers.
            if step == plan.total_steps:
                ray.train.report(report)
        if step % plan.checkpoint_every == 0 and step < plan.total_steps:
            _save_checkpoint(engine, plan, step=step, rank=rank, dist=dist)
    _save_student(engine, plan, init_dir=init_dir, rank=rank, dist=dist)


def _micro_batches(plan: Plan, *, rank: int, world: int, first_step: int) -> Iterator[Any]:
    """This rank's micro-batches from optimizer step ``first_step`` on, epoch by epoch."""
    from torch.utils.data import DataLoader, DistributedSampler

    examples = read_examples(plan.examples_uri)
    sampler = DistributedSampler(
        examples, num_replicas=world, rank=rank, shuffle=True, seed=plan.seed
    )  # type: ignore[arg-type]
    loader = DataLoader(
        examples,  # type: ignore[arg-type]
        batch_size=plan.micro_batch_size,
        sampler=sampler,
        collate_fn=lambda rows: collate(rows, pad_id=plan.pad_id, top_k=plan.top_k),
    )
    total = plan.total_steps * plan.gradient_accumulation_steps
    done = first_step * plan.gradient_accumulation_steps
    while done < total:
        epoch, offset = divmod(done, plan.micro_batches_per_epoch)
        sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            if index < offset:
                continue  # already trained on before the checkpoint
            yield batch
            done += 1
            if done >= total:
                return


class _Progress:
    """Loss and tokens/s over each reporting interval; rank 0 writes progress.json."""

    def __init__(self, *, plan: Plan, rank: int, first_step: int) -> None:
        self.plan, self.rank = plan, rank
        self.losses: list[float] = []
        self.tokens = 0
        self.started = time.perf_counter()
        # Rank 0 carries on the loss history of earlier attempts of this run.
        earlier = (read_progress(plan.progress_uri) or {}) if rank == 0 else {}
        self.history: list[list[float]] = list(earlier.get("history", []))
        self.first_step = first_step

    def add(self, *, loss: float, tokens: int) -> None:
        self.losses.append(loss)
        self.tokens += tokens

    def flush(self, *, step: int, dist: Any, device: Any) -> dict[str, float]:
        import torch

        # Sum over ranks: every rank reaches this at the same step.
        totals = torch.tensor(
            [sum(self.losses), len(self.losses), self.tokens], dtype=torch.float64, device=device
        )
        dist.all_reduce(totals)
        # On the engine's device: an NCCL group reduces only CUDA tensors.
        peak = torch.tensor([_peak_rss_mib()], dtype=torch.float64, device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        seconds = max(time.perf_counter() - self.started, 1e-9)
        loss = float(totals[0] / max(totals[1], 1))
        report = {
            "step": step,
            "totalSteps": self.plan.total_steps,
            "loss": round(loss, 6),
            "tokensPerSecond": round(float(totals[2]) / seconds, 2),
            "peakRssMiB": round(float(peak[0]), 1),
            "resumedFrom": self.first_step,
        }
        if self.rank == 0:
            self.history = [*self.history, [step, report["loss"]]][-HISTORY_POINTS:]
            _write_json(self.plan.progress_uri, {**report, "history": self.history})
        self.losses, self.tokens, self.started = [], 0, time.perf_counter()
        return report


def _peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_json(uri: str, document: dict[str, Any]) -> None:
    with fsspec.open(uri, "w", auto_mkdir=True) as handle:
        json.dump(document, handle)


# --- checkpoints -------------------------------------------------------------------------


def _resume(engine: Any, plan: Plan) -> int:
    """Load the latest checkpoint, if any; return the optimizer step it was taken at."""
    fs, root = fsspec.core.url_to_fs(plan.checkpoints_uri)
    if not fs.exists(f"{root}/{LATEST}"):
        return 0
    local = local_copy(plan.checkpoints_uri)
    path, state = engine.load_checkpoint(local)
    if path is None:
        return 0
    return int(state.get("step", engine.global_steps))


def _save_checkpoint(engine: Any, plan: Plan, *, step: int, rank: int, dist: Any) -> None:
    """Every rank saves its shard; ``latest`` moves only once all shards are in the store.

    DeepSpeed's own ``latest`` is written by rank 0 without waiting for the other ranks'
    shards, so a kill at the wrong moment would point it at a partial checkpoint.
    """
    fs, root = fsspec.core.url_to_fs(plan.checkpoints_uri)
    local = is_local(fs)
    target = root if local else tempfile.mkdtemp(prefix="distill-ckpt-")
    tag = f"step-{step:08d}"
    engine.save_checkpoint(target, tag=tag, client_state={"step": step}, save_latest=False)
    if not local:
        upload_dir(f"{target}/{tag}", f"{plan.checkpoints_uri}/{tag}")
        shutil.rmtree(target, ignore_errors=True)
    dist.barrier()
    if rank == 0:
        fs.pipe(f"{root}/{LATEST}", tag.encode())
        _prune(fs, root, keep=KEEP_CHECKPOINTS)


def _prune(fs: Any, root: str, *, keep: int) -> None:
    tags = sorted(p for p in fs.ls(root, detail=False) if Path(p).name.startswith("step-"))
    for old in tags[:-keep]:
        fs.rm(old, recursive=True)


def _save_student(engine: Any, plan: Plan, *, init_dir: str, rank: int, dist: Any) -> None:
    """Consolidated weights (gathered from ZeRO-3 shards) as safetensors, with the tokenizer."""
    import deepspeed
    from transformers import AutoTokenizer

    parameters = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
        if rank == 0:
            fs, root = fsspec.core.url_to_fs(plan.student_uri)
            target = root if is_local(fs) else tempfile.mkdtemp(prefix="distill-student-")
            engine.module.save_pretrained(target, safe_serialization=True)
            AutoTokenizer.from_pretrained(init_dir).save_pretrained(target)
            if not is_local(fs):
                upload_dir(target, plan.student_uri)
                shutil.rmtree(target, ignore_errors=True)
    dist.barrier()
