"""The Iterate workload: real DeepSpeed (2 processes, gloo) under Ray Train on local Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill_jobs import train
from distill_jobs.contract import Spend
from distill_jobs.training import data
from training_inputs import (
    arithmetic_prompts,
    candidate_input,
    held_out_ids,
    teacher_rows,
)

HELD_OUT = arithmetic_prompts(4, start=500)
TRAINING = {
    "workers": 2,
    "cpusPerWorker": 0.5,
    "microBatchSize": 4,
    "epochs": 8,
    "learningRate": 0.003,
    "warmupSteps": 2,
    "checkpointEverySteps": 8,
}


@pytest.fixture(scope="module")
def rows(tiny_generator: Any) -> list[dict[str, Any]]:
    """Teach's rows: 24 prompts answered by the tiny teacher with top-4 logprobs."""
    return teacher_rows(tiny_generator, arithmetic_prompts(24))


def fingerprint(model: Any) -> float:
    return float(sum(p.detach().abs().sum() for p in model.parameters()))


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_deepspeed_trains_a_student_whose_loss_falls_and_that_loads_with_transformers(
    tmp_path: Path, rows: list[dict[str, Any]], local_ray: None, zero_stage: int
) -> None:
    from transformers import AutoModelForCausalLM

    stage_input = candidate_input(
        tmp_path,
        rows=rows,
        held_out=held_out_ids(HELD_OUT),
        candidate={"name": "tiny", "preset": "tiny"},
        training={**TRAINING, "deepspeed": {"zeroStage": zero_stage}},
    )
    result = train.work(stage_input)

    assert result.reason == "BarCleared", result.message
    metrics = result.metrics
    # 21 training prompts (3 held back to score) / (2 workers x 4) = 3 steps an epoch.
    assert metrics["steps"] == 24 and metrics["rows_soft"] == 21
    assert metrics["final_loss"] < 0.8 * metrics["first_loss"]
    assert metrics["tokens_per_second"] > 0 and metrics["latency_p95_ms"] > 0
    assert Spend.reported(metrics) == Spend(), "CPU workers: no GPU-seconds, no teacher asked"
    student_dir = result.artifacts["student"].removeprefix("file://")
    assert (Path(student_dir) / "model.safetensors").exists()
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    initial = AutoModelForCausalLM.from_pretrained(f"{stage_input.stage_dir()[7:]}/init")
    assert sum(p.numel() for p in student.parameters()) == metrics["parameters"]
    assert fingerprint(student) != pytest.approx(fingerprint(initial), rel=1e-6)


def test_a_held_out_prompt_in_teach_data_is_refused_before_training(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    leaked = rows[5]["id"]
    stage_input = candidate_input(
        tmp_path,
        rows=rows,
        held_out=[leaked, *held_out_ids(HELD_OUT)],
        candidate={"name": "tiny", "preset": "tiny"},
        training=TRAINING,
    )
    result = train.work(stage_input)

    assert (result.exit_condition_met, result.reason) == (False, "HeldOutLeak")
    assert leaked in result.message
    assert "student" not in result.artifacts
    # Refused before any worker started: it reports that it spent nothing, so the
    # operator's cost ledger need not estimate it.
    assert Spend.reported(result.metrics) == Spend()


def test_a_student_with_another_vocabulary_is_refused_when_soft_labels_are_wanted(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    from distill_jobs import tiny

    other = tmp_path / "other-tokenizer"
    tiny.build_tokenizer(seed=7, vocab_size=512).save_pretrained(other)
    candidate = {"name": "odd", "preset": "tiny", "tokenizer": str(other)}
    held_out = held_out_ids(HELD_OUT)

    soft = train.work(
        candidate_input(tmp_path / "soft", rows=rows, held_out=held_out, candidate=candidate)
    )
    assert (soft.exit_condition_met, soft.reason) == (False, "TokenizerMismatch")
    assert "spec.students.candidates[odd]" in soft.message and "alpha: 1" in soft.message

    hard_only = candidate_input(
        tmp_path / "hard", rows=rows, held_out=held_out, candidate=candidate,
        training={"alpha": 1.0},
    )  # fmt: skip
    spec = train.CandidateSpec.parse(hard_only.spec)
    student = train.initial_student(spec, stage_dir=hard_only.stage_dir())
    train.check_tokenizer(spec, rows=rows, student=student, soft=False)  # no refusal


def test_an_unknown_preset_is_a_clear_refusal(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    result = train.work(
        candidate_input(
            tmp_path, rows=rows, held_out=[], candidate={"name": "big", "preset": "huge"}
        )
    )
    assert (result.exit_condition_met, result.reason) == (False, "StudentInvalid")
    assert "unknown preset 'huge'" in result.message


def test_prompt_tokens_are_masked_and_soft_labels_line_up_with_the_teachers_tokens(
    rows: list[dict[str, Any]], tiny_generator: Any
) -> None:
    from distill_jobs.teachers.generation import tokenizer_identity

    tokenizer = tiny_generator.tokenizer
    tokenized = data.tokenize(
        rows,
        tokenizer=tokenizer,
        tokenizer_id=tokenizer_identity(tokenizer),
        max_length=512,
        soft=True,
    )
    assert tokenized.counts == {"soft": len(rows)} and tokenized.top_k == 4
    for row, example in zip(rows, tokenized.examples, strict=True):
        prompt = example.soft_start
        assert set(example.labels[:prompt]) == {data.IGNORE}
        answer = example.input_ids[prompt : prompt + len(example.topk_ids)]
        assert answer == row["output_token_ids"]
        # Greedy answers: each answer token is the teacher's top-1 candidate there.
        assert [ids[0] for ids in example.topk_ids] == answer
        assert example.labels[prompt:] == example.input_ids[prompt:]


def test_rows_without_logprobs_train_on_hard_labels(tiny_generator: Any) -> None:
    from distill_jobs.teachers.generation import tokenizer_identity

    api_rows = teacher_rows(tiny_generator, arithmetic_prompts(4), top_k=0)
    tokenized = data.tokenize(
        api_rows,
        tokenizer=tiny_generator.tokenizer,
        tokenizer_id=tokenizer_identity(tiny_generator.tokenizer),
        max_length=512,
        soft=True,
    )
    assert tokenized.counts == {"hard": 4} and tokenized.top_k == 0
    batch = data.collate(tokenized.examples, pad_id=0, top_k=tokenized.top_k)
    assert "topk_ids" not in batch


def test_the_validation_split_holds_back_whole_prompts_deterministically(
    rows: list[dict[str, Any]],
) -> None:
    copies = rows + [{**row, "copy": 1} for row in rows[:6]]
    train_rows, validation = data.split_validation(copies, fraction=0.1, seed=3)
    again = data.split_validation(copies, fraction=0.1, seed=3)[1]

    held_back = {example.id for example in validation}
    assert len(held_back) == 3 and validation == again  # ceil(0.1 * 24)
    assert not held_back & {row["id"] for row in train_rows}
    assert len(train_rows) + sum(1 for r in copies if r["id"] in held_back) == len(copies)
    assert all(example.reference.isdigit() for example in validation)  # ground truth kept


def test_too_few_prompts_to_hold_any_back_is_refused(rows: list[dict[str, Any]]) -> None:
    from distill_jobs.upstream import StageFailure

    with pytest.raises(StageFailure, match="at least 2"):
        data.split_validation(rows[:1], fraction=0.1, seed=0)
