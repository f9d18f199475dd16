"""Iterate, one candidate: train a student on Teach's data with DeepSpeed, then measure it.

``python -m distill_jobs.train --input <stage_dir>/input.json``

The operator runs one of these jobs per student candidate, all on the same teacher
data. The job
1. reads Teach's training rows, refuses any held-out prompt (Source's hashes), and holds
   back a validation split of prompts the student never trains on;
2. builds the candidate (preset, config or pretrained), checks its tokenizer against
   the teacher's when soft labels are wanted, tokenizes (prompt tokens masked);
3. trains with Ray Train's ``TorchTrainer`` on ``workers`` workers, each running
   ``deepspeed.initialize`` (see :mod:`distill_jobs.training.loop`), checkpointing to the
   artifact store and resuming from the latest checkpoint when started again;
4. saves the student with ``save_pretrained`` (safetensors) and measures it on a worker
   like the training ones: the bar's metric on the validation split, p50/p95 latency at
   the bar's batch size, and cost per 1k requests from the measured throughput;
5. writes a StageResult that says whether the candidate clears quality, latency and cost,
   and by how much it misses each target it misses.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fsspec
from pydantic import ValidationError

from distill_jobs.bar import verdict
from distill_jobs.contract import StageInput, StageResult, read_progress
from distill_jobs.raycluster import connect
from distill_jobs.runner import stage_main
from distill_jobs.spending import SpendMeter
from distill_jobs.training import data
from distill_jobs.training.dsconfig import deepspeed_config
from distill_jobs.training.loop import Plan, micro_batches_per_epoch, train_worker
from distill_jobs.training.storage import is_local, local_copy, upload_dir
from distill_jobs.training.students import InitialStudent, build_initial_student
from distill_jobs.upstream import (
    StageFailure,
    first_line,
    read_held_out,
    refuse_leaks,
    upstream_artifacts,
)

INIT_FILE = "distill_init.json"  # beside the initial student: what it is, once built


@dataclass(frozen=True)
class CandidateSpec:
    """The spec excerpt of one candidate job, parsed with the API's own models."""

    bar: Any
    training: Any
    candidate: Any

    @classmethod
    def parse(cls, excerpt: dict[str, Any]) -> CandidateSpec:
        from distill_operator.api.spec import Bar, StudentCandidate, Training

        students = excerpt.get("students") or {}
        try:
            return cls(
                bar=Bar.model_validate(excerpt.get("bar")),
                training=Training.model_validate(students.get("training") or {}),
                candidate=StudentCandidate.model_validate(students.get("candidate")),
            )
        except ValidationError as error:
            raise StageFailure(
                "InvalidInput", f"the stage input's spec: {first_line(error, skip=0)}"
            ) from None


def work(stage_input: StageInput) -> StageResult:
    """Iterate (one candidate): train it with DeepSpeed under Ray Train, then measure it."""
    meter = SpendMeter()
    try:
        return train(stage_input, meter=meter)
    except StageFailure as failure:
        # A failed attempt spent too: what it held counts in the cost ledger.
        metrics = {**failure.metrics, **meter.spend().metrics()}
        return _result(
            stage_input, met=False, reason=failure.reason, message=str(failure), metrics=metrics
        )


def train(stage_input: StageInput, *, meter: SpendMeter) -> StageResult:
    spec = CandidateSpec.parse(stage_input.spec)
    training, stage_dir = spec.training, stage_input.stage_dir()
    source = upstream_artifacts(stage_input, stage="Source", names=("held_out_hashes",))
    teach = upstream_artifacts(stage_input, stage="Teach", names=("train",))
    rows = data.read_rows(teach["train"])
    held_out = read_held_out(source["held_out_hashes"])
    refuse_leaks((str(row["id"]) for row in rows), held_out=held_out, where="Teach's train")
    train_rows, validation = data.split_validation(
        rows, fraction=training.validation_fraction, seed=training.seed
    )
    student = initial_student(spec, stage_dir=stage_dir)
    soft = training.alpha < 1.0
    check_tokenizer(spec, rows=train_rows, student=student, soft=soft)
    tokenizer = _load_tokenizer(student.uri)
    tokenized = data.tokenize(
        train_rows,
        tokenizer=tokenizer,
        tokenizer_id=student.tokenizer_id,
        max_length=training.max_sequence_length,
        soft=soft,
    )
    if not tokenized.examples:
        raise StageFailure(
            "NoTrainingData",
            f"none of Teach's {len(train_rows)} training rows could be tokenized "
            f"({dict(tokenized.counts)})",
        )
    examples_uri = f"{stage_dir}/data/train.parquet"
    data.write_examples(examples_uri, tokenized.examples)
    plan = make_plan(
        spec,
        stage_dir=stage_dir,
        student=student,
        tokenized=tokenized,
        pad_id=tokenizer.pad_token_id,
    )
    started = time.perf_counter()
    # Ray Train holds every worker's GPUs while it runs; the measurement one worker's.
    gpus = training.gpus_per_worker if plan.on_gpu else 0.0
    with meter.holding(training.workers * gpus):
        fit(plan, training=training, run_name=f"train-{stage_input.input_hash()}")
    train_seconds = time.perf_counter() - started
    with meter.holding(1.0 if plan.on_gpu else 0.0):
        measured = measure(spec, plan=plan, validation=validation, tokenizer=tokenizer)
    progress = read_progress(plan.progress_uri) or {}
    metrics = {
        "parameters": student.parameters,
        **measured,
        "steps": progress.get("step", plan.total_steps),
        "final_loss": progress.get("loss"),
        "first_loss": (progress.get("history") or [[0, None]])[0][1],
        "tokens_per_second": progress.get("tokensPerSecond"),
        "peak_rss_mib": progress.get("peakRssMiB"),
        "resumed_from_step": progress.get("resumedFrom", 0),
        "train_seconds": round(train_seconds, 2),
        "train_examples": len(tokenized.examples),
        "validation_prompts": len(validation),
        **{f"rows_{outcome}": count for outcome, count in sorted(tokenized.counts.items())},
        **meter.spend().metrics(),
    }
    met, message = verdict(spec.bar, name=spec.candidate.name, metrics=metrics)
    return _result(
        stage_input,
        met=met,
        reason="BarCleared" if met else "BarMissed",
        message=message,
        metrics={"student": spec.candidate.name, **metrics},
        artifacts={
            "student": plan.student_uri,
            "checkpoints": plan.checkpoints_uri,
            "progress": plan.progress_uri,
            "train_examples": examples_uri,
        },
    )


def initial_student(spec: CandidateSpec, *, stage_dir: str) -> InitialStudent:
    """The candidate's starting weights in the store, built once per stage directory."""
    uri = f"{stage_dir}/init"
    fs, root = fsspec.core.url_to_fs(uri)
    marker = f"{root}/{INIT_FILE}"
    if fs.exists(marker):
        with fs.open(marker, "r") as handle:
            return InitialStudent(uri=uri, **json.load(handle))
    with tempfile.TemporaryDirectory(prefix="distill-init-") as local:
        student = build_initial_student(
            spec.candidate,
            directory=Path(local),
            seed=spec.training.seed,
            max_length=spec.training.max_sequence_length,
        )
        upload_dir(local, uri)
    # Written last: a crash while uploading leaves no marker, so the next try rebuilds.
    built = {"parameters": student.parameters, "tokenizer_id": student.tokenizer_id}
    fs.pipe(marker, json.dumps(built).encode())
    return InitialStudent(uri=uri, **built)


def check_tokenizer(
    spec: CandidateSpec, *, rows: list[dict[str, Any]], student: InitialStudent, soft: bool
) -> None:
    """Soft labels are token ids of the teacher's vocabulary: the student must share it."""
    teacher_tokenizers = data.soft_label_tokenizers(rows)
    if not soft or not teacher_tokenizers or teacher_tokenizers == {student.tokenizer_id}:
        return
    raise StageFailure(
        "TokenizerMismatch",
        f"spec.students.candidates[{spec.candidate.name}]: the student's tokenizer "
        f"({student.tokenizer_id}) is not the teacher's ({', '.join(sorted(teacher_tokenizers))}),"
        " so the teacher's top-k logprobs cannot be used; give the candidate the teacher's "
        "tokenizer (candidates[].tokenizer), or set spec.students.training.alpha: 1 to train "
        "on hard labels only",
    )


def make_plan(
    spec: CandidateSpec,
    *,
    stage_dir: str,
    student: InitialStudent,
    tokenized: data.Tokenized,
    pad_id: int,
) -> Plan:
    training = spec.training
    accumulation = training.deepspeed.gradient_accumulation_steps
    per_epoch = micro_batches_per_epoch(
        examples=len(tokenized.examples),
        world_size=training.workers,
        micro_batch_size=training.micro_batch_size,
    )
    total_steps = max(1, training.epochs * per_epoch // accumulation)
    if training.max_steps is not None:
        total_steps = min(total_steps, training.max_steps)
    on_gpu = training.gpus_per_worker > 0
    return Plan(
        init_dir=student.uri,
        examples_uri=f"{stage_dir}/data/train.parquet",
        stage_dir=stage_dir,
        ds_config=deepspeed_config(
            training, world_size=training.workers, on_gpu=on_gpu, total_steps=total_steps
        ),
        total_steps=total_steps,
        micro_batches_per_epoch=per_epoch,
        micro_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=accumulation,
        checkpoint_every=training.checkpoint_every_steps,
        seed=training.seed,
        pad_id=int(pad_id),
        top_k=tokenized.top_k,
        alpha=training.alpha,
        temperature=training.temperature,
        divergence=training.divergence.value,
        jsd_beta=training.jsd_beta,
        on_gpu=on_gpu,
    )


def fit(plan: Plan, *, training: Any, run_name: str) -> None:
    """Run the workers; a failure past Ray Train's restarts fails the job (and the
    operator's retry resumes from the last checkpoint)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    connect()
    on_gpu = plan.on_gpu
    resources = {"CPU": training.cpus_per_worker}
    if on_gpu:
        resources["GPU"] = training.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=train_worker,
        train_loop_config=asdict(plan),
        scaling_config=ScalingConfig(
            num_workers=training.workers, use_gpu=on_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=_ray_storage(plan.stage_dir),
            failure_config=FailureConfig(max_failures=2),
        ),
    )
    trainer.fit()


def _ray_storage(stage_dir: str) -> str:
    fs, path = fsspec.core.url_to_fs(stage_dir)
    return f"{path}/ray-train" if is_local(fs) else f"{stage_dir}/ray-train"


def measure(
    spec: CandidateSpec, *, plan: Plan, validation: list[data.ValidationExample], tokenizer: Any
) -> dict[str, float]:
    """Quality, latency and cost, measured on a worker like the training ones."""
    import ray

    training = spec.training
    # As many tokens as the teacher's longest answer: a student that says what the teacher
    # said, cut where the teacher was cut, scores as the same answer.
    longest = max(
        v.answer_tokens or len(tokenizer(v.reference)["input_ids"]) + 1 for v in validation
    )
    task = ray.remote(
        num_cpus=training.cpus_per_worker,
        num_gpus=1 if training.gpus_per_worker > 0 else 0,
    )(_measure_student)
    measured: dict[str, float] = ray.get(
        task.remote(
            student_uri=plan.student_uri,
            bar=spec.bar.model_dump(mode="json"),
            conversations=[v.conversation for v in validation],
            references=[v.reference for v in validation],
            max_new_tokens=min(longest, training.max_sequence_length),
            price=training.price_per_accelerator_hour,
        )
    )
    return measured


def _measure_student(
    *,
    student_uri: str,
    bar: dict[str, Any],
    conversations: list[list[dict[str, Any]]],
    references: list[str],
    max_new_tokens: int,
    price: float,
) -> dict[str, float]:
    from distill_jobs.teachers.generation import LocalGenerator
    from distill_jobs.training.measure import measure_against_bar

    generator = LocalGenerator.load(model=local_copy(student_uri))
    measured = measure_against_bar(
        generator=generator,
        bar=bar,
        conversations=conversations,
        references=references,
        max_new_tokens=max_new_tokens,
        price_per_accelerator_hour=price,
    )
    return measured.metrics()


def _load_tokenizer(uri: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(local_copy(uri))


def _result(
    stage_input: StageInput,
    *,
    met: bool,
    reason: str,
    message: str,
    metrics: dict[str, Any] | None = None,
    artifacts: dict[str, str] | None = None,
) -> StageResult:
    return StageResult(
        stage=stage_input.stage,
        input_hash=stage_input.input_hash(),
        exitConditionMet=met,
        reason=reason,
        message=message,
        metrics={k: v for k, v in (metrics or {}).items() if v is not None},
        artifacts=dict(artifacts or {}),
    )


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
