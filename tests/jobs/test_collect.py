"""Collection through Ray Data: one answer per prompt id, resumable, failures accounted.

Ray runs in this process (the ``local_ray`` fixture); the teachers are the tiny model in
Ray actors, or the local API server reached over loopback from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill_jobs.apiserver import FaultPlan
from distill_jobs.collect import FAILURES, OUTPUTS, CollectionError, answered_ids, collect

from .conftest import FAST_RETRY, SERVED_MODEL, prompt, unused_port

OVERSAMPLED = 2  # copies of the first prompt besides the original


def write_prompts(path: Path, count: int) -> list[str]:
    """``count`` distinct prompts, the first oversampled; returns the distinct ids."""
    questions = [prompt(f"What is {n} plus {3 * n}?") for n in range(count)]
    copies = [prompt(questions[0].prompt_text, copy=c) for c in range(1, OVERSAMPLED + 1)]
    path.write_text("".join(row.model_dump_json() + "\n" for row in questions + copies))
    return [question.id for question in questions]


def output_rows(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for part in sorted((out / OUTPUTS).glob("*.jsonl"))
        for line in part.read_text().splitlines()
    ]


def test_collect_writes_one_record_per_id_and_one_per_oversampled_copy(
    local_ray: None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", count=12)
    out = tmp_path / "teach"

    report = collect(
        prompts_uri=str(tmp_path / "prompts.jsonl"),
        out_uri=out.as_uri(),
        teacher={"backend": "hf", "model": str(tiny_model_dir), "topLogprobs": 2},
        teach={"maxOutputTokens": 6, "batchSize": 4},
        api_key=None,
    )

    assert (report.answered, report.failed, report.resumed) == (12, 0, 0)
    assert report.rows_written == 12 + OVERSAMPLED and report.output_tokens > 0
    rows = output_rows(out)
    assert sorted({row["id"] for row in rows}) == sorted(ids)
    assert [row["id"] for row in rows].count(ids[0]) == 1 + OVERSAMPLED
    assert all(len(row["top_logprobs"][0]) == 2 for row in rows if row["top_logprobs"])
    assert len(list((out / OUTPUTS).glob("*.jsonl"))) == 3  # a part per batch of 4


def test_an_api_teacher_behind_429s_and_500s_answers_everything_and_a_rerun_resumes(
    local_ray: None, api_server: Any, tmp_path: Path
) -> None:
    faults = FaultPlan(first_429=2, first_500=2, rate_500=0.2, retry_after_seconds=0)
    server = api_server(faults=faults)
    ids = write_prompts(tmp_path / "prompts.jsonl", count=12)
    out = tmp_path / "teach"
    arguments: dict[str, Any] = {
        "prompts_uri": str(tmp_path / "prompts.jsonl"),
        "out_uri": out.as_uri(),
        "teacher": {"backend": "openai", "model": SERVED_MODEL, "endpoint": server.url},
        # Concurrency 2: one actor with two requests in flight, batches of 8 prompts.
        "teach": {"maxOutputTokens": 6, "concurrency": 2, "maxRequestRetries": 20},
        "api_key": None,
        "retry": FAST_RETRY,
    }

    first = collect(**arguments)

    assert (first.answered, first.failed, first.resumed) == (12, 0, 0)
    assert first.retries >= 4
    assert {row["id"] for row in output_rows(out)} == set(ids)

    # A crash that lost a part: the next run asks only for the ids it held.
    parts = sorted((out / OUTPUTS).glob("*.jsonl"))
    lost = {json.loads(line)["id"] for line in parts[0].read_text().splitlines()}
    parts[0].unlink()
    assert answered_ids(out.as_uri()) == set(ids) - lost

    second = collect(**arguments)

    assert (second.answered, second.resumed, second.failed) == (len(lost), 12 - len(lost), 0)
    rows = output_rows(out)
    assert sorted({row["id"] for row in rows}) == sorted(ids)
    assert len(rows) == 12 + OVERSAMPLED  # nothing answered twice
    assert collect(**arguments).answered == 0  # all there: no Ray work at all


def test_the_prompt_and_output_tokens_an_api_teacher_bills_are_what_collection_reports(
    local_ray: None, api_server: Any, tiny_generator: Any, tmp_path: Path
) -> None:
    server = api_server()
    write_prompts(tmp_path / "prompts.jsonl", count=5)
    out = tmp_path / "teach"
    arguments: dict[str, Any] = {
        "prompts_uri": str(tmp_path / "prompts.jsonl"),
        "out_uri": out.as_uri(),
        "teacher": {"backend": "openai", "model": SERVED_MODEL, "endpoint": server.url},
        "teach": {"maxOutputTokens": 6, "concurrency": 2},
        "api_key": None,
    }

    report = collect(**arguments)

    # The server's usage (prompt_tokens, completion_tokens) is the bill; one per distinct id.
    rows = {row["id"]: row for row in output_rows(out)}
    conversations = [row["messages"] for row in rows.values()]
    billed_prompts = sum(tiny_generator.prompt_lengths(conversations=conversations))
    assert report.input_tokens == billed_prompts > 0
    assert report.output_tokens == sum(row["output_tokens"] for row in rows.values()) > 0
    spent = report.spend()
    assert (spent.teacher_input_tokens, spent.teacher_output_tokens) == (
        report.input_tokens,
        report.output_tokens,
    )
    assert spent.accelerator_seconds == 0.0, "an API teacher holds no accelerator of ours"
    resumed = collect(**arguments).spend()
    assert (resumed.teacher_input_tokens, resumed.teacher_output_tokens) == (0, 0)


def test_when_every_prompt_fails_collection_stops_with_each_reason_recorded(
    local_ray: None, tmp_path: Path
) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", count=3)
    endpoint = f"http://127.0.0.1:{unused_port()}/v1"

    with pytest.raises(CollectionError, match="connection_error") as raised:
        collect(
            prompts_uri=str(tmp_path / "prompts.jsonl"),
            out_uri=(tmp_path / "teach").as_uri(),
            teacher={"backend": "openai", "model": SERVED_MODEL, "endpoint": endpoint},
            teach={"maxRequestRetries": 1},
            api_key="any",
            retry=FAST_RETRY,
        )

    assert raised.value.report.failed_by_reason == {"connection_error": len(ids)}
    failures = [
        json.loads(line)
        for part in (tmp_path / "teach" / FAILURES).glob("*.jsonl")
        for line in part.read_text().splitlines()
    ]
    assert sorted(row["id"] for row in failures) == sorted(ids)
    assert all(row["attempts"] == 2 and row["run"] for row in failures)


def test_a_torn_last_line_counts_as_not_collected(tmp_path: Path) -> None:
    parts = tmp_path / OUTPUTS
    parts.mkdir()
    (parts / "part-a-00000.jsonl").write_text('{"id": "kept", "output": "x"}\n{"id": "to')
    assert answered_ids(tmp_path.as_uri()) == {"kept"}
