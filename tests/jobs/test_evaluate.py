"""The evaluate workload: Investigate (one alternative) and Look (student vs teacher).

Everything is real: tiny models built in code, an in-process Ray for the serving
workers, the local OpenAI-compatible server for an API teacher. Outcomes are made
deterministic by the references: a model's own greedy answers (generated here, in the
batches the evaluator uses) are references it says word for word; ``never said N`` is
one no tiny model says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from distill_jobs.contract import Spend, StageInput, StageResult, read_result, write_result
from distill_jobs.evaluate import work
from distill_jobs.evaluation.answering import generation_limit, system_prompted
from distill_jobs.evaluation.report import MAX_SUMMARY_BYTES, summary
from distill_jobs.evaluation.slices import SliceRow
from distill_jobs.records import PromptRecord, prompt_hash

from .conftest import SERVED_MODEL, SERVER_KEY

MAX_TOKENS = 6
EVAL_BATCH = 8  # the evaluator answers in batches of max(bar.batchSize, 8)
SLICES = ("billing", "refunds", "chat")
QUESTIONS = [(SLICES[n % 3], f"Question {n} about order {100 + n}?") for n in range(12)]
TEACH = {"maxOutputTokens": MAX_TOKENS, "batchSize": EVAL_BATCH}
SERVING = {"pricePerAcceleratorHour": 1.0, "cpusPerWorker": 1, "gpusPerWorker": 0}
LENIENT = {"metric": "exact_match", "threshold": 0.9, "costPer1kRequests": 1000.0,
           "latencyP95Ms": 60000.0, "batchSize": 1}  # fmt: skip
JOB_TIMEOUT_S = 300


def conversation(text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You answer customers."},
        {"role": "user", "content": text},
    ]


def greedy_answers(generator: Any, conversations: Sequence[list[dict[str, Any]]]) -> list[str]:
    """The model's greedy answers, batched as the evaluator batches them."""
    answers: list[str] = []
    for start in range(0, len(conversations), EVAL_BATCH):
        batch = conversations[start : start + EVAL_BATCH]
        generations = generator.generate(conversations=batch, max_new_tokens=MAX_TOKENS)
        answers.extend(generation.text for generation in generations)
    return answers


def held_out(references: Sequence[str | None]) -> list[PromptRecord]:
    return [
        PromptRecord(
            id=prompt_hash(text),
            messages=conversation(text),
            prompt_text=text,
            slice=slice_,
            reference=reference,
        )
        for (slice_, text), reference in zip(QUESTIONS, references, strict=True)
    ]


def never_said(count: int) -> list[str]:
    return [f"never said {n}" for n in range(count)]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model, other weights: it answers unlike the first."""
    from distill_jobs.tiny import build_tiny_model

    return build_tiny_model(directory=tmp_path_factory.mktemp("other") / "model", seed=1)


@pytest.fixture(scope="module")
def own_answers(tiny_generator: Any) -> list[str]:
    """The tiny model's greedy answers to the held-out questions: its references."""
    answers = greedy_answers(tiny_generator, [conversation(text) for _, text in QUESTIONS])
    # The evaluator generates as many tokens as the longest reference needs: all of them.
    limit = generation_limit(
        tokenizer=tiny_generator.tokenizer, references=answers, max_output_tokens=MAX_TOKENS
    )
    assert limit == MAX_TOKENS
    return answers


def write_stage(root: Path, stage: str, files: dict[str, tuple[str, str]], **result: Any) -> str:
    """An upstream stage's files (name: (file, content)) and passed result; returns the
    result's URI."""
    stage_dir = root / "upstream" / stage.lower()
    stage_dir.mkdir(parents=True, exist_ok=True)
    artifacts = dict(result.pop("artifacts", {}))
    for name, (file, content) in files.items():
        (stage_dir / file).write_text(content)
        artifacts[name] = (stage_dir / file).as_uri()
    uri = (stage_dir / "result.json").as_uri()
    write_result(
        StageResult(
            stage=stage,
            input_hash="upstream",
            exitConditionMet=True,
            reason="Passed",
            message="written by the test",
            artifacts=artifacts,
            **result,
        ),
        uri,
    )
    return uri


def write_source(root: Path, prompts: Sequence[PromptRecord]) -> str:
    rows = [prompt.model_dump() for prompt in prompts]
    copy = {**rows[0], "copy": 1}  # an oversampled copy: the same prompt, judged once
    return write_stage(
        root,
        "Source",
        {
            "held_out": ("held_out.jsonl", "".join(json.dumps(r) + "\n" for r in [*rows, copy])),
            "held_out_hashes": ("held_out_hashes.json", json.dumps([p.id for p in prompts])),
            "report": ("report.json", json.dumps({"slices": {}})),
        },
    )


def investigate_input(
    root: Path,
    *,
    source: str | None,
    alternative: dict[str, Any],
    teacher: dict[str, Any],
    bar: dict[str, Any] | None = None,
) -> StageInput:
    return StageInput(
        project="tests/evaluate",
        project_uid="uid-evaluate",
        stage="Investigate",
        spec={
            "task": "answer customers",
            "bar": bar or LENIENT,
            "teacher": teacher,
            "teach": TEACH,
            "alternative": alternative,
            "serving": SERVING,
        },
        upstream={"Source": source} if source else {},
        artifacts_uri=(root / "artifacts").as_uri(),
    )


def hf(model: Path) -> dict[str, Any]:
    return {"backend": "hf", "model": str(model), "termsAcknowledged": True}


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in local_path(uri).read_text().splitlines()]


def parameters_of(model: Path) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())


# --- Investigate ------------------------------------------------------------------------


def test_an_off_the_shelf_model_that_says_the_references_clears_the_bar(
    tmp_path: Path, tiny_model_dir: Path, own_answers: list[str], local_ray: None
) -> None:
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, held_out(own_answers)),
        alternative={"name": "small", "kind": "off_the_shelf", "model": str(tiny_model_dir)},
        teacher=hf(tiny_model_dir),
    )
    result = work(stage_input)

    assert result.reason == "BarCleared", result.message
    assert result.exit_condition_met
    assert (
        result.message.startswith("small (") and "clears the bar: score 1 ≥ 0.9" in result.message
    )
    metrics = result.metrics
    assert metrics["score"] == 1.0 and metrics["held_out_prompts"] == len(QUESTIONS)
    assert metrics["parameters"] == parameters_of(tiny_model_dir)
    assert {f"score_{name}" for name in SLICES} <= set(metrics)
    assert 0 < metrics["latency_p50_ms"] <= metrics["latency_p95_ms"]
    assert metrics["requests_per_second"] > 0 and metrics["cost_per_1k_requests"] > 0
    assert result.artifacts["model"] == str(tiny_model_dir)
    answers = read_jsonl(result.artifacts["answers"])
    assert [row["answer"] for row in answers] == own_answers
    assert set(answers[0]) == {"id", "slice", "reference", "answer", "score"}


def test_an_off_the_shelf_model_that_never_says_the_references_misses_by_its_gap(
    tmp_path: Path, tiny_model_dir: Path, local_ray: None
) -> None:
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, held_out(never_said(len(QUESTIONS)))),
        alternative={"name": "small", "kind": "off_the_shelf", "model": str(tiny_model_dir)},
        teacher=hf(tiny_model_dir),
    )
    result = work(stage_input)

    assert result.reason == "BarMissed" and not result.exit_condition_met
    assert "score 0 < 0.9 (short by 0.9)" in result.message
    assert result.metrics["score"] == 0.0


def test_the_int8_quantized_teacher_still_generates_and_reports_its_score(
    tmp_path: Path, tiny_model_dir: Path, own_answers: list[str], local_ray: None
) -> None:
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, held_out(own_answers)),
        alternative={"name": "teacher-int8", "kind": "quantized_teacher", "quantization": "int8"},
        teacher=hf(tiny_model_dir),
    )
    result = work(stage_input)

    assert result.reason in ("BarCleared", "BarMissed"), result.message
    assert 0.0 <= result.metrics["score"] <= 1.0
    # Counted before quantizing: int8 weights are packed, not parameters, after it.
    assert result.metrics["parameters"] == parameters_of(tiny_model_dir)
    assert result.artifacts["model"] == str(tiny_model_dir)
    answers = read_jsonl(result.artifacts["answers"])
    assert len(answers) == len(QUESTIONS) and any(row["answer"] for row in answers)


@pytest.mark.parametrize(("price", "reason"), [(None, "BarMissed"), (0.5, "BarCleared")])
def test_a_prompt_variant_of_an_api_teacher_is_judged_at_the_price_it_is_given(
    tmp_path: Path,
    api_server: Any,
    tiny_generator: Any,
    monkeypatch: pytest.MonkeyPatch,
    price: float | None,
    reason: str,
) -> None:
    server = api_server(api_key=SERVER_KEY)
    monkeypatch.setenv("DISTILL_TEACHER_API_KEY", SERVER_KEY)
    prompt = "You are a terse support agent."
    prompts = held_out(never_said(len(QUESTIONS)))
    alternative: dict[str, Any] = {"name": "terse", "kind": "prompt_variant", "prompt": prompt}
    if price is not None:
        alternative["costPer1kRequests"] = price
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, prompts),
        alternative=alternative,
        teacher={
            "backend": "openai",
            "model": SERVED_MODEL,
            "endpoint": server.url,
            "apiKeySecretRef": {"name": "teacher", "key": "api-key"},
        },
        bar={**LENIENT, "threshold": 0.0},
    )
    result = work(stage_input)

    assert result.reason == reason, result.message
    assert result.artifacts["model"] == f"openai:{SERVED_MODEL}"
    if price is None:
        assert "cost/1k unknown (target 1000)" in result.message
        assert "cost_per_1k_requests" not in result.metrics
    else:
        assert result.metrics["cost_per_1k_requests"] == price
    assert result.metrics["latency_p95_ms"] > 0
    # The server saw the variant's system prompt in place of the original one: one request
    # per call (batchSize 1), answered as the model answers that conversation alone.
    variants = [system_prompted(p.messages, prompt) for p in prompts]
    expected = [greedy_answers(tiny_generator, [variant])[0] for variant in variants]
    assert [row["answer"] for row in read_jsonl(result.artifacts["answers"])] == expected
    # What the API billed (its usage) is what the attempt reports for the cost ledger.
    spent = Spend.reported(result.metrics)
    assert spent is not None and spent.accelerator_seconds == 0.0
    assert spent.teacher_input_tokens == sum(tiny_generator.prompt_lengths(conversations=variants))
    assert spent.teacher_output_tokens >= len(prompts)


def test_a_prompt_variant_replaces_the_system_turn_or_adds_one() -> None:
    with_system = conversation("hi")
    assert system_prompted(with_system, "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert system_prompted([{"role": "user", "content": "hi"}], "Be brief.")[0] == {
        "role": "system",
        "content": "Be brief.",
    }
    assert with_system[0]["content"] == "You answer customers."  # the original is untouched


def test_a_missing_model_directory_is_model_unavailable_naming_the_field(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    absent = tmp_path / "no-such-model"
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, held_out(never_said(len(QUESTIONS)))),
        alternative={"name": "small", "kind": "off_the_shelf", "model": str(absent)},
        teacher=hf(tiny_model_dir),
    )
    result = work(stage_input)

    assert result.reason == "ModelUnavailable" and not result.exit_condition_met
    assert result.message.startswith("spec.investigate.alternatives[small].model:")
    assert str(absent) in result.message


def test_held_out_prompts_without_references_are_refused_naming_the_reference_field(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, held_out([None] * len(QUESTIONS))),
        alternative={"name": "small", "kind": "off_the_shelf", "model": str(tiny_model_dir)},
        teacher=hf(tiny_model_dir),
    )
    result = work(stage_input)

    assert result.reason == "NoReferences"
    assert "spec.source.referenceField" in result.message and "exact_match" in result.message


def test_a_missing_source_result_fails_the_alternative_with_its_reason(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    stage_input = investigate_input(
        tmp_path,
        source=(tmp_path / "absent" / "result.json").as_uri(),
        alternative={"name": "small", "kind": "off_the_shelf", "model": str(tiny_model_dir)},
        teacher=hf(tiny_model_dir),
    )
    result = work(stage_input)
    assert result.reason == "SourceResultMissing" and "does not exist" in result.message


# --- the job as the operator runs it ----------------------------------------------------


def run_job(stage_input: StageInput, *, root: Path) -> StageResult:
    """``python -m distill_jobs.evaluate --input URI``, then the result it wrote."""
    input_path = root / "evaluate-input.json"
    input_path.write_text(stage_input.model_dump_json())
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as ray_tmp:
        completed = subprocess.run(
            [sys.executable, "-m", "distill_jobs.evaluate", "--input", input_path.as_uri()],
            env=environment
            | {
                "RAY_AUTH_MODE": "disabled",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_TMPDIR": ray_tmp,
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",  # as this process generated the references
            },
            cwd=root,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = read_result(stage_input.result_uri())
    assert result is not None, completed.stderr[-4000:]
    return result


def test_int4_on_cpu_workers_is_quantization_unavailable_saying_what_it_needs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    stage_input = investigate_input(
        tmp_path,
        source=write_source(tmp_path, held_out(never_said(len(QUESTIONS)))),
        alternative={"name": "teacher-int4", "kind": "quantized_teacher", "quantization": "int4"},
        teacher=hf(tiny_model_dir),
    )
    result = run_job(stage_input, root=tmp_path)

    assert result.reason == "QuantizationUnavailable" and not result.exit_condition_met
    message = result.message
    assert message.startswith("spec.investigate.alternatives[teacher-int4].quantization:")
    assert "CUDA GPU" in message and "bitsandbytes" in message and "use int8" in message


# --- Look -------------------------------------------------------------------------------


def look_input(
    root: Path,
    *,
    prompts: Sequence[PromptRecord],
    student: Path,
    teacher: Path,
    critical: list[dict[str, Any]],
    bar: dict[str, Any],
    max_disagreements: int = 200,
) -> StageInput:
    train = [
        {"id": f"train-{slice_}-{n}", "slice": slice_, "messages": conversation(f"{slice_} {n}")}
        for slice_, count in (("billing", 60), ("refunds", 60), ("chat", 5))
        for n in range(count)
    ]
    upstream = {
        "Source": write_source(root, prompts),
        "Teach": write_stage(
            root, "Teach", {"train": ("train.jsonl", "".join(json.dumps(r) + "\n" for r in train))}
        ),
        "Iterate": write_stage(
            root,
            "Iterate",
            {},
            artifacts={"student": student.as_uri()},
            metrics={"student": "tiny", "score": 1.0},
        ),
    }
    return StageInput(
        project="tests/evaluate",
        project_uid="uid-evaluate",
        stage="Look",
        spec={
            "bar": bar,
            "look": {"maxDisagreements": max_disagreements},
            "source": {"traffic": ["file:///traffic/*.jsonl"], "criticalSlices": critical},
            "teacher": hf(teacher),
            "teach": {**TEACH, "temperature": 0.7},  # Look answers greedily whatever Teach did
        },
        upstream=upstream,
        artifacts_uri=(root / "artifacts").as_uri(),
    )


def test_look_passes_a_student_that_clears_the_bar_and_every_critical_slice(
    tmp_path: Path, tiny_model_dir: Path, own_answers: list[str]
) -> None:
    stage_input = look_input(
        tmp_path,
        prompts=held_out(own_answers),
        student=tiny_model_dir,
        teacher=tiny_model_dir,  # the student is its teacher: they agree everywhere
        critical=[{"name": "refunds", "threshold": 0.8, "minCount": 50}, {"name": "billing"}],
        bar={**LENIENT, "threshold": 0.9},
    )
    result = run_job(stage_input, root=tmp_path)

    assert result.reason == "SlicesPass", result.message
    assert result.exit_condition_met and result.diagnosis is None
    assert "critical slices: billing 1 ≥ 0.9, refunds 1 ≥ 0.8" in result.message
    metrics = result.metrics
    assert metrics["score"] == 1.0 and metrics["teacher_score"] == 1.0
    assert metrics["agreement"] == 1.0 and metrics["disagreements"] == 0
    assert metrics["quality_ratio"] == 1.0 and metrics["failing_slices"] == 0
    assert (metrics["score_billing"], metrics["score_refunds"]) == (1.0, 1.0)
    assert "score_chat" not in metrics  # not critical
    table = json.loads(local_path(result.artifacts["slices"]).read_text())
    assert [row["slice"] for row in table] == ["billing", "refunds", "chat"]
    assert table[0]["threshold"] == 0.9 and table[1]["training_rows"] == 60
    assert table[2]["threshold"] is None and table[2]["passes"] is None
    assert result.artifacts["student"] == tiny_model_dir.as_uri()
    # The local teacher's tokens are counted; on CPUs it held no accelerator.
    spent = Spend.reported(metrics)
    assert spent is not None and spent.accelerator_seconds == 0.0
    assert spent.teacher_input_tokens > 0 and spent.teacher_output_tokens >= len(QUESTIONS)


def test_look_fails_naming_the_critical_slice_the_teacher_gets_wrong_and_its_gap(
    tmp_path: Path,
    tiny_model_dir: Path,
    teacher_dir: Path,
    own_answers: list[str],
    single_torch_thread: None,
) -> None:
    # The student says the references except on refunds, where nobody does.
    references = [
        reference if slice_ != "refunds" else f"never said {n}"
        for n, ((slice_, _), reference) in enumerate(zip(QUESTIONS, own_answers, strict=True))
    ]
    stage_input = look_input(
        tmp_path,
        prompts=held_out(references),
        student=tiny_model_dir,
        teacher=teacher_dir,
        critical=[{"name": "refunds", "threshold": 0.8}, {"name": "billing", "threshold": 0.5}],
        bar={**LENIENT, "threshold": 0.6},
        max_disagreements=2,
    )
    result = work(stage_input)

    assert result.reason == "SlicesBelowBar" and not result.exit_condition_met
    assert (
        result.message == "tiny is below the bar on held-out data: refunds 0 < 0.8 (short by 0.8)"
    )
    diagnosis = result.diagnosis
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Teach", "TeacherWrongOnSlice")
    assert diagnosis.message.startswith("refunds: the teacher itself scores 0 < 0.8")
    metrics = result.metrics
    assert metrics["score"] == pytest.approx(8 / 12, abs=1e-6)
    assert metrics["failing_slices"] == 1 and metrics["score_refunds"] == 0.0

    # Disagreements: counted in full, kept up to maxDisagreements per slice.
    table = {
        row["slice"]: row for row in json.loads(local_path(result.artifacts["slices"]).read_text())
    }
    kept = read_jsonl(result.artifacts["disagreements"])
    per_slice = Counter(row["slice"] for row in kept)
    assert metrics["disagreements"] == sum(row["disagreements"] for row in table.values()) > 0
    for name, row in table.items():
        assert per_slice[name] == min(2, row["disagreements"])
    assert set(kept[0]) == {
        "id", "slice", "prompt", "reference", "student", "teacher",
        "student_correct", "teacher_correct",
    }  # fmt: skip
    assert all(not row["student_correct"] for row in kept if row["slice"] == "refunds")

    # The ConfigMap summary: strings only, bounded, the table and the diagnosis in it.
    data = json.loads(local_path(result.artifacts["summary"]).read_text())
    assert set(data) == {"overall", "slices.txt", "slices.json", "disagreements.json", "diagnosis"}
    assert all(isinstance(value, str) for value in data.values())
    assert len(json.dumps(data).encode()) < MAX_SUMMARY_BYTES
    header, *lines = data["slices.txt"].splitlines()
    assert header.split() == [
        "SLICE", "HELD-OUT", "STUDENT", "TEACHER", "AGREEMENT", "THRESHOLD", "CRITICAL",
        "PASSES", "TRAINING-ROWS", "DISAGREEMENTS",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines] == ["billing", "refunds", "chat"]
    assert lines[1].split()[6:8] == ["true", "false"]  # refunds: critical, does not pass
    assert data["diagnosis"].startswith("Teach: TeacherWrongOnSlice: refunds")
    assert data["overall"].startswith("student tiny 0.6667 vs teacher")
    shown = json.loads(data["disagreements.json"])
    assert shown["refunds"]["count"] == table["refunds"]["disagreements"]
    assert len(shown["refunds"]["examples"]) <= 2


def test_the_summary_stays_under_its_limit_showing_critical_slices_first() -> None:
    rows = [
        SliceRow(
            slice=f"slice-{n:05d}",
            held_out=20,
            student_score=0.5,
            teacher_score=0.9,
            agreement=0.4,
            threshold=0.8 if n < 3 else None,
            critical=n < 3,
            passes=False if n < 3 else None,
            training_rows=100,
            disagreements=12,
        )
        for n in range(5000)
    ]
    long = "word " * 2000
    disagreements = [
        {"id": f"{n}", "slice": row.slice, "prompt": long, "reference": long, "student": long,
         "teacher": long, "student_correct": False, "teacher_correct": True}
        for row in rows[:50]
        for n in range(5)
    ]  # fmt: skip
    data = summary(
        rows=rows,
        disagreements=disagreements,
        overall="student 0.5 vs teacher 0.9",
        diagnosis="Iterate: StudentTooWeakOnSlice: " + long,
        table_uri="file:///store/look/slices.json",
    )

    assert sum(len(k) + len(v.encode()) for k, v in data.items()) <= MAX_SUMMARY_BYTES
    assert "file:///store/look/slices.json" in data["truncated"]
    table = json.loads(data["slices.json"])
    assert [row["slice"] for row in table[:3]] == ["slice-00000", "slice-00001", "slice-00002"]
    examples = json.loads(data["disagreements.json"])["slice-00000"]
    assert examples["count"] == 12 and len(examples["examples"]) == 3
    assert all(len(example["prompt"]) <= 200 for example in examples["examples"])
    assert "\n" not in data["diagnosis"] and len(data["diagnosis"]) <= 2000
