"""Corrupt inputs to Source and Teach: each bad row is dropped with its reason, counted,
and every good row is kept; nothing crashes (issue #8).

Source reads real traffic files with Ray Data; Teach asks a real HTTP teacher (a tiny
OpenAI-compatible server whose answers the test scripts, so that the answers are as
broken as the test needs) through the collector's Ray Data actors. One Ray for all.
"""

from __future__ import annotations

import json
import random
import string
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from distill_jobs import source, teach
from distill_jobs.contract import StageInput, StageResult
from distill_jobs.records import PromptRecord, prompt_hash
from distill_jobs.sourcing.prompts import MAX_PROMPT_CHARS

from .test_teach_job import SCHEMA, record, teach_input, write_source

GOOD_ROWS = 12
DEEP = 100_000  # brackets: far past the depth Python's JSON parser recurses to


@pytest.fixture(scope="module", autouse=True)
def ray_for_the_module(local_ray: None) -> None:
    """The session's in-process Ray (the workloads join it)."""


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    text = Path(uri.removeprefix("file://")).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def read_parts(directory: Path) -> list[dict[str, Any]]:
    """The rows of a collector directory's JSONL parts."""
    return [row for part in sorted(directory.glob("*.jsonl")) for row in read_jsonl(part.as_uri())]


def read_json(uri: str) -> Any:
    return json.loads(Path(uri.removeprefix("file://")).read_text(encoding="utf-8"))


# --- Source ----------------------------------------------------------------------------------


def chat_line(text: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}]}).encode()


def good_prompts(count: int) -> list[str]:
    rng = random.Random(8)
    return [
        " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(8))
        for _ in range(count)
    ]


# Each corrupt line, under the reason it is dropped for.
CORRUPT_LINES = {
    "not_json": b'{"messages": [{"role": "user", "content": "torn',
    "not_utf8": '{"messages": [{"role": "user", "content": "caf\xe9"}]}'.encode("latin-1"),
    "lone_surrogate": b'{"messages": [{"role": "user", "content": "half \\ud800 a pair"}]}',
    "too_deep": b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "not_object": b'["a", "list"]',
    "no_prompt": b'{"text": "no messages and no prompt field"}',
    # Several megabytes of prompt: a log pasted into a chat.
    "prompt_too_long": chat_line("log line " * (MAX_PROMPT_CHARS // 2)),
}


def source_input(root: Path, *lines: bytes, extra_files: Mapping[str, str] = {}) -> StageInput:
    traffic = root / "traffic"
    traffic.mkdir(parents=True, exist_ok=True)
    (traffic / "t.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for name, text in extra_files.items():
        (traffic / name).write_text(text)
    return StageInput(
        project="tests/corrupt",
        project_uid="uid-corrupt",
        stage="Source",
        spec={"task": "answer", "source": {"traffic": [f"{traffic.as_uri()}/*.jsonl"]}},
        artifacts_uri=(root / "artifacts").as_uri(),
    )


def test_source_drops_each_corrupt_row_with_its_reason_and_keeps_every_good_row(
    tmp_path: Path,
) -> None:
    texts = good_prompts(GOOD_ROWS)
    good = [chat_line(text) for text in texts]
    # Good rows before, between and after the corrupt ones: none is lost with them.
    lines = [*good[:4], *CORRUPT_LINES.values(), *good[4:8], b"", b"   ", *good[8:]]
    stage_input = source_input(
        tmp_path, *lines, extra_files={"empty.jsonl": "", "blank.jsonl": "\n \n\n"}
    )
    result = source.work(stage_input)
    assert result.exit_condition_met, result.message
    metrics = result.metrics
    assert metrics["dropped_by_reason"] == dict.fromkeys(sorted(CORRUPT_LINES), 1)
    assert (metrics["rows"], metrics["raw"]) == (GOOD_ROWS + len(CORRUPT_LINES), GOOD_ROWS)
    assert (metrics["malformed"], metrics["no_prompt"], metrics["too_long"]) == (5, 1, 1)
    written = [
        PromptRecord.model_validate(row)
        for name in ("train", "held_out")
        for row in read_jsonl(result.artifacts[name])
    ]
    assert sorted(row.prompt_text for row in written) == sorted(texts)

    report = read_json(result.artifacts["report"])
    dropped = report["rows"]["dropped"]
    assert set(dropped) == set(metrics["dropped_by_reason"])
    traffic_file = (tmp_path / "traffic" / "t.jsonl").as_uri()
    # Line numbers count every line of the file, blank ones included.
    assert dropped["lone_surrogate"]["examples"] == [f"{traffic_file}:7"]
    assert dropped["prompt_too_long"]["meaning"] == (
        f"the prompt is over {MAX_PROMPT_CHARS} characters"
    )
    assert report["rows"]["too_long"] == 1


@pytest.mark.parametrize(
    ("reasons", "failure", "named"),
    [
        (["prompt_too_long"], "NoPrompts", f"over {MAX_PROMPT_CHARS} characters"),
        (["lone_surrogate", "too_deep"], "UnreadableTraffic", "lone_surrogate"),
    ],
    ids=["only-too-long", "only-corrupt"],
)
def test_source_with_no_usable_row_fails_naming_why_instead_of_crashing(
    tmp_path: Path, reasons: list[str], failure: str, named: str
) -> None:
    result = source.work(source_input(tmp_path, *(CORRUPT_LINES[r] for r in reasons)))
    assert (result.exit_condition_met, result.reason) == (False, failure), result.message
    assert named in result.message
    assert result.metrics["dropped_by_reason"] == dict.fromkeys(sorted(reasons), 1)
    assert "train" not in result.artifacts


# --- Teach -----------------------------------------------------------------------------------

VALID = [f"order {n}" for n in range(6)]
# The teacher's answer to each prompt; the prompts' slice has a json_schema verifier.
ANSWERS = {
    **{text: json.dumps({"answer": text}) for text in VALID},
    "prose": "Sure! The answer is 42.",
    "fenced": '```json\n{"answer": "42"}\n```',
    "torn": '{"answer": "4',
    "deep": "[" * DEEP + "]" * DEEP,
    "wrong type": json.dumps({"answer": 42}),
    "half a surrogate pair": '{"answer": "\ud800"}',  # JSON on the wire escapes it
}
DROPPED = {
    "prose": "not_json",
    "fenced": "not_json",
    "torn": "not_json",
    "deep": "not_json",
    "wrong type": "schema_mismatch",
}


class ScriptedTeacher(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: the scripted answer to the last user message."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][-1]["content"]
        completion = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWERS[question]},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
        payload = json.dumps(completion).encode()  # ASCII: a lone surrogate as \ud800
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def scripted_teacher() -> Iterator[str]:
    """The scripted teacher's endpoint, served on loopback for the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedTeacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def test_teach_drops_answers_that_are_not_the_json_asked_for_and_keeps_the_good_ones(
    tmp_path: Path, scripted_teacher: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [record(text, slice_="json") for text in ANSWERS]
    stage_input = teach_input(
        tmp_path,
        source_uri=write_source(tmp_path, train=prompts),
        teacher={
            "backend": "openai",
            "model": "scripted",
            "endpoint": scripted_teacher,
            "apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
            "termsAcknowledged": True,
        },
        teach={
            "maxRequestRetries": 0,
            "minOutputChars": 0,
            "maxOutputChars": 4 * DEEP,
            "reviewSampleRate": 0,
            "verifiers": [{"kind": "json_schema", "schema": SCHEMA}],
        },
    )
    monkeypatch.setenv("DISTILL_TEACHER_API_KEY", "test-key")
    # Within Teach's tolerance of unanswered prompts: one in twelve.
    assert teach.MAX_FAILED_SHARE * len(prompts) >= 1
    result: StageResult = teach.work(stage_input)
    assert result.exit_condition_met, result.message
    metrics = result.metrics
    assert (metrics["collected"], metrics["kept"], metrics["dropped"]) == (11, 6, 5)
    assert (metrics["dropped_not_json"], metrics["dropped_schema_mismatch"]) == (4, 1)
    # The answer that is not text cannot be stored: that prompt is logged unanswered.
    assert metrics["failed_by_reason"] == {"bad_response": 1}
    stage_dir = Path(stage_input.stage_dir().removeprefix("file://"))
    # Every answer that is text stays collected under outputs/, kept or dropped.
    assert len(read_parts(stage_dir / "outputs")) == metrics["collected"]
    failures = read_parts(stage_dir / "failures")
    assert [row["id"] for row in failures] == [prompt_hash("half a surrogate pair")]
    assert "not valid text" in failures[0]["message"]

    kept = read_jsonl(result.artifacts["train"])
    assert sorted(row["messages"][-1]["content"] for row in kept) == sorted(
        ANSWERS[text] for text in VALID
    )
    dropped = {row["id"]: row["reason"] for row in read_jsonl(result.artifacts["dropped"])}
    assert dropped == {prompt_hash(text): reason for text, reason in DROPPED.items()}
