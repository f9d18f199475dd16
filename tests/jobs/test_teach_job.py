"""The Teach workload on a small Source output, with the tiny hf teacher and real Ray.

A random tiny model's answers are noise, so the verifiers here decide by rules the test
controls (a python verifier on the prompt's reference, a regex no short answer can
match, a JSON schema noise cannot satisfy): the assertions are about accounting and
files, never about the teacher being right.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from distill_jobs.contract import Spend, StageInput, StageResult, read_result, write_result
from distill_jobs.records import PromptRecord, TeacherRecord, prompt_hash
from distill_jobs.teach import teacher_error, work
from distill_jobs.teachers import ModelNotAvailableError

from .conftest import unused_port, write_jsonl

TESTS = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 300
ARITHMETIC_REFERENCES = [str(number) for number in range(8)] + ["not a number"]
CHAT_OVERSAMPLED = 2  # copies of the first chat prompt, besides the original
SEEDED = 3  # chat prompts already answered by an "earlier attempt"
SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}


def keep_even_references(prompt: PromptRecord, output: str) -> bool:
    """The python verifier: keeps answers to even references, raises on non-numbers."""
    return int(prompt.reference or "") % 2 == 0


def record(text: str, *, slice_: str, reference: str | None = None, copy: int = 0) -> PromptRecord:
    return PromptRecord(
        id=prompt_hash(text),
        messages=[{"role": "user", "content": text}],
        prompt_text=text,
        slice=slice_,
        reference=reference,
        copy=copy,
    )


def training_prompts() -> list[PromptRecord]:
    arithmetic = [
        record(f"What is {index} plus zero?", slice_="arithmetic", reference=reference)
        for index, reference in enumerate(ARITHMETIC_REFERENCES)
    ]
    formatted = [record(f"Spell out order {n} digits", slice_="format") for n in range(4)]
    as_json = [record(f"Give order {n} as JSON", slice_="json") for n in range(3)]
    chat = [record(f"Say hello to customer {n}", slice_="chat") for n in range(8)]
    copies = [
        record(chat[0].prompt_text, slice_="chat", copy=copy)
        for copy in range(1, CHAT_OVERSAMPLED + 1)
    ]
    return arithmetic + formatted + as_json + chat + copies


HELD_OUT = [record(f"Held-out question {n}", slice_="chat") for n in range(2)]


def write_source(root: Path, *, train: list[PromptRecord]) -> str:
    """Source's files and result, as Source writes them; returns the result URI."""
    stage_dir = root / "source-out"
    write_jsonl(stage_dir / "train.jsonl", [row.model_dump() for row in train])
    write_jsonl(stage_dir / "held_out.jsonl", [row.model_dump() for row in HELD_OUT])
    (stage_dir / "held_out_hashes.json").write_text(json.dumps([row.id for row in HELD_OUT]))
    (stage_dir / "report.json").write_text("{}")
    names = {
        "train": "train.jsonl",
        "held_out": "held_out.jsonl",
        "held_out_hashes": "held_out_hashes.json",
        "report": "report.json",
    }
    result = StageResult(
        stage="Source",
        input_hash="0123456789abcdef",
        exit_condition_met=True,
        reason="DataSourced",
        message="written by the test",
        artifacts={key: (stage_dir / name).as_uri() for key, name in names.items()},
    )
    uri = (stage_dir / "result.json").as_uri()
    write_result(result, uri)
    return uri


def teach_input(
    root: Path,
    *,
    source_uri: str | None,
    teacher: dict[str, Any],
    teach: dict[str, Any] | None = None,
) -> StageInput:
    return StageInput(
        project="tests/teach",
        project_uid="uid-teach",
        stage="Teach",
        spec={"task": "answer", "teacher": teacher, "teach": teach or {}},
        upstream={"Source": source_uri} if source_uri else {},
        artifacts_uri=(root / "artifacts").as_uri(),
    )


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in local_path(uri).read_text().splitlines()]


def hf_teacher(model: Path) -> dict[str, Any]:
    return {"backend": "hf", "model": str(model), "topLogprobs": 3, "termsAcknowledged": True}


# --- refusals: the stage stops before any teacher is asked --------------------------------


@pytest.fixture
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTILL_TEACHER_API_KEY", raising=False)


def refused(stage_input: StageInput) -> StageResult:
    result = work(stage_input)
    assert not result.exit_condition_met
    assert not (local_path(stage_input.stage_dir()) / "outputs.jsonl").exists()
    return result


def test_teach_does_not_start_unless_the_teachers_terms_are_acknowledged(
    tmp_path: Path, no_api_key: None
) -> None:
    teacher = {"backend": "hf", "model": "/nowhere", "termsAcknowledged": False}
    source = write_source(tmp_path, train=training_prompts())
    result = refused(teach_input(tmp_path, source_uri=source, teacher=teacher))
    assert result.reason == "TeacherTermsNotAcknowledged"
    assert "spec.teacher.termsAcknowledged" in result.message


def test_a_held_out_prompt_in_train_stops_the_stage_before_collection(
    tmp_path: Path, no_api_key: None
) -> None:
    leaked = [*training_prompts(), HELD_OUT[1]]
    source = write_source(tmp_path, train=leaked)
    teacher = {"backend": "hf", "model": "/nowhere", "termsAcknowledged": True}
    result = refused(teach_input(tmp_path, source_uri=source, teacher=teacher))
    assert result.reason == "HeldOutLeak"
    assert HELD_OUT[1].id in result.message


def test_an_api_teacher_without_its_key_is_refused_naming_the_secret_ref(
    tmp_path: Path, no_api_key: None
) -> None:
    teacher = {
        "backend": "openai",
        "model": "gpt-test",
        "endpoint": "http://127.0.0.1:9/v1",
        "apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
        "termsAcknowledged": True,
    }
    source = write_source(tmp_path, train=training_prompts())
    result = refused(teach_input(tmp_path, source_uri=source, teacher=teacher))
    assert result.reason == "ApiKeyMissing"
    assert "spec.teacher.apiKeySecretRef" in result.message


def test_a_verifier_that_cannot_be_imported_is_refused_naming_its_field(
    tmp_path: Path, no_api_key: None
) -> None:
    teacher = {"backend": "hf", "model": "/nowhere", "termsAcknowledged": True}
    teach = {"verifiers": [{"kind": "python", "function": "no_such_rules_module:keep"}]}
    source = write_source(tmp_path, train=training_prompts())
    result = refused(teach_input(tmp_path, source_uri=source, teacher=teacher, teach=teach))
    assert result.reason == "VerifierNotFound"
    assert "spec.teach.verifiers[0].function" in result.message


@pytest.mark.parametrize(
    ("upstream", "reason"),
    [
        (None, "SourceResultMissing"),
        ("missing", "SourceResultMissing"),
        ("bad", "SourceResultUnreadable"),
    ],
)
def test_a_missing_or_unreadable_source_result_is_a_clear_failure(
    tmp_path: Path, no_api_key: None, upstream: str | None, reason: str
) -> None:
    bad = tmp_path / "bad-result.json"
    bad.write_text("{not json")
    uris = {None: None, "missing": (tmp_path / "absent.json").as_uri(), "bad": bad.as_uri()}
    teacher = {"backend": "hf", "model": "/nowhere", "termsAcknowledged": True}
    result = refused(teach_input(tmp_path, source_uri=uris[upstream], teacher=teacher))
    assert result.reason == reason
    assert (uris[upstream] or "upstream.Source") in result.message


def test_a_missing_teacher_model_is_found_behind_rays_wrapping() -> None:
    class ActorDied(Exception):  # Ray: ActorDiedError(RayTaskError(cause=the error))
        pass

    class TaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("actor __init__ failed")
            self.cause = cause

    missing = ModelNotAvailableError("teacher model directory /nowhere does not exist")
    assert teacher_error(ActorDied(TaskError(missing))) is missing
    assert teacher_error(ActorDied(TaskError(ValueError("a bug")))) is None


# --- end to end: python -m distill_jobs.teach, the tiny teacher, Ray Data -----------------


def job_environment(ray_tmp: str) -> dict[str, str]:
    """Loopback-only Ray without token auth, offline HF, the tests' verifiers importable."""
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    path = [str(TESTS), environment.get("PYTHONPATH", "")]
    return environment | {
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_TMPDIR": ray_tmp,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
    }


def run_teach_job(stage_input: StageInput, *, root: Path) -> StageResult:
    """``python -m distill_jobs.teach --input URI``, then the result it wrote."""
    input_path = root / "teach-input.json"
    input_path.write_text(stage_input.model_dump_json())
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as ray_tmp:
        completed = subprocess.run(
            [sys.executable, "-m", "distill_jobs.teach", "--input", input_path.as_uri()],
            env=job_environment(ray_tmp),
            cwd=root,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = read_result(stage_input.result_uri())
    assert result is not None, completed.stderr[-4000:]
    return result


def seed_earlier_attempt(stage_input: StageInput, prompts: list[PromptRecord]) -> list[str]:
    """Outputs an earlier attempt collected before it died; returns their ids."""
    chat = [prompt for prompt in prompts if prompt.slice == "chat" and prompt.copy_index == 0]
    seeded = [
        TeacherRecord(
            id=prompt.id,
            messages=prompt.messages,
            slice=prompt.slice,
            output=f"earlier attempt's answer {index}",
            teacher="hf:earlier",
        )
        for index, prompt in enumerate(chat[-SEEDED:])
    ]
    part = local_path(stage_input.stage_dir()) / "outputs" / "part-earlier-00000.jsonl"
    write_jsonl(part, [row.model_dump(mode="json") for row in seeded])
    return [row.id for row in seeded]


def read_parts(uri: str) -> list[dict[str, Any]]:
    return [
        row for part in sorted(local_path(uri).glob("*.jsonl")) for row in read_jsonl(part.as_uri())
    ]


@pytest.fixture(scope="module")
def teach_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[StageInput, StageResult, list[str]]]:
    root = tmp_path_factory.mktemp("teach-run")
    prompts = training_prompts()
    teach = {
        "maxOutputTokens": 6,
        "batchSize": 8,
        "minOutputChars": 0,
        "reviewSampleRate": 0.25,
        "verifiers": [
            {
                "kind": "python",
                "function": f"{__name__}:keep_even_references",
                "slices": ["arithmetic"],
            },
            {"kind": "regex", "pattern": r"\d{40}", "slices": ["format"]},
            {"kind": "json_schema", "schema": SCHEMA, "slices": ["json"]},
        ],
    }
    stage_input = teach_input(
        root,
        source_uri=write_source(root, train=prompts),
        teacher=hf_teacher(tiny_model_dir),
        teach=teach,
    )
    seeded = seed_earlier_attempt(stage_input, prompts)
    yield stage_input, run_teach_job(stage_input, root=root), seeded


def test_teach_job_keeps_verified_and_open_ended_outputs_and_accounts_for_the_rest(
    teach_run: tuple[StageInput, StageResult, list[str]],
) -> None:
    _, result, _ = teach_run
    assert result.exit_condition_met, result.message
    assert result.reason == "TeacherOutputsFiltered"
    metrics = result.metrics
    distinct = len({prompt.id for prompt in training_prompts()})
    assert metrics["collected"] == distinct
    assert metrics["kept"] == 4 + 8  # even references, and every chat answer
    assert metrics["dropped_rejected"] == 4
    assert metrics["dropped_verifier_error"] == 1
    assert metrics["dropped_regex_mismatch"] == 4
    assert metrics["dropped_not_json"] + metrics["dropped_schema_mismatch"] == 3
    assert metrics["kept"] + metrics["dropped"] == metrics["collected"]
    assert metrics["review_queued"] == 2  # ceil(0.25 * 8 open-ended)
    assert metrics["train_rows"] == metrics["kept"] + CHAT_OVERSAMPLED
    assert f"kept 12 of {distinct}" in result.message
    assert "2 queued for review" in result.message
    numbers = [value for value in metrics.values() if isinstance(value, int | float)]
    assert len(numbers) <= 33


def test_teach_job_reports_what_this_attempt_spent_for_the_cost_ledger(
    teach_run: tuple[StageInput, StageResult, list[str]],
) -> None:
    _, result, seeded = teach_run
    spent = Spend.reported(result.metrics)
    assert spent is not None
    rows = read_parts(result.artifacts["outputs"])
    # Each prompt was asked once (oversampled copies share its answer). The earlier
    # attempt's answers (seeded, without usage) came from an attempt that wrote no
    # result, so this one reports them: here they add no tokens.
    distinct = {row["id"]: row for row in rows}.values()
    assert spent.teacher_input_tokens == sum(row.get("input_tokens") or 0 for row in distinct)
    assert spent.teacher_input_tokens > 0
    assert spent.teacher_output_tokens == result.metrics["output_tokens"] > 0
    assert all(row.get("input_tokens") is None for row in distinct if row["id"] in seeded)
    assert spent.accelerator_seconds == 0.0, "the tiny teacher ran on CPUs: no GPU-seconds"


def test_teach_job_resumes_and_asks_only_for_prompts_not_yet_answered(
    teach_run: tuple[StageInput, StageResult, list[str]],
) -> None:
    _, result, seeded = teach_run
    outputs = read_parts(result.artifacts["outputs"])
    source_rows = Counter(prompt.id for prompt in training_prompts())
    assert Counter(row["id"] for row in outputs) == source_rows  # a row per copy, no repeats
    assert result.metrics["resumed"] == SEEDED
    assert result.metrics["answered"] == result.metrics["collected"] - SEEDED
    for row in outputs:
        assert (row["teacher"] == "hf:earlier") == (row["id"] in seeded)


def test_teach_job_writes_chat_rows_drops_review_queue_and_report(
    teach_run: tuple[StageInput, StageResult, list[str]],
) -> None:
    stage_input, result, seeded = teach_run
    artifacts = result.artifacts
    assert set(artifacts) >= {"train", "train_parquet", "review", "dropped", "report", "outputs"}
    assert all(uri.startswith(stage_input.stage_dir()) for uri in artifacts.values())

    train = read_jsonl(artifacts["train"])
    assert len(train) == result.metrics["train_rows"]
    assert all(row["messages"][-1]["role"] == "assistant" for row in train)
    assert all("top_logprobs" in row for row in train if row["id"] not in seeded)
    copies = Counter(row["id"] for row in train)
    assert max(copies.values()) == 1 + CHAT_OVERSAMPLED
    parquet = pq.read_table(local_path(artifacts["train_parquet"]))
    assert parquet.num_rows == len(train)
    assert parquet.column("messages").to_pylist()[0][-1]["role"] == "assistant"

    dropped = read_jsonl(artifacts["dropped"])
    assert len(dropped) == result.metrics["dropped"]
    assert {row["reason"] for row in dropped if row["slice"] == "format"} == {"regex_mismatch"}
    errors = [row for row in dropped if row["reason"] == "verifier_error"]
    assert len(errors) == 1 and errors[0]["error"].startswith("ValueError")

    review = read_jsonl(artifacts["review"])
    assert len(review) == result.metrics["review_queued"]
    assert {row["slice"] for row in review} == {"chat"}
    with local_path(artifacts["review_csv"]).open(newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == [row["id"] for row in review]

    report = json.loads(local_path(artifacts["report"]).read_text())
    for counts in report["slices"].values():
        assert counts["collected"] == counts["kept"] + sum(counts["dropped_by_reason"].values())
    assert report["slices"]["arithmetic"]["dropped_by_reason"] == {
        "rejected": 4,
        "verifier_error": 1,
    }
    assert report["slices"]["chat"]["review_queued"] == 2
    assert result.metrics["slices"] == report["slices"]


def test_a_teacher_endpoint_that_is_down_fails_the_stage_and_keeps_what_was_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_ray: None
) -> None:
    endpoint = f"http://127.0.0.1:{unused_port()}/v1"
    teacher = {
        "backend": "openai",
        "model": "teacher-model",
        "endpoint": endpoint,
        "apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
        "termsAcknowledged": True,
    }
    prompts = training_prompts()
    stage_input = teach_input(
        tmp_path,
        source_uri=write_source(tmp_path, train=prompts),
        teacher=teacher,
        teach={"maxRequestRetries": 0, "requestTimeoutSeconds": 10},
    )
    seeded = seed_earlier_attempt(stage_input, prompts)
    monkeypatch.setenv("DISTILL_TEACHER_API_KEY", "test-key")
    result = work(stage_input)
    assert not result.exit_condition_met
    assert result.reason == "TeacherUnavailable"
    assert endpoint in result.message
    assert "connection_error" in result.message
    distinct = len({prompt.id for prompt in prompts})
    assert result.metrics["failed"] == distinct - SEEDED
    outputs = local_path(stage_input.stage_dir()) / "outputs"
    assert [row["id"] for row in read_parts(outputs.as_uri())] == seeded
