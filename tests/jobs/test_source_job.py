"""The Source workload end to end: real files, Ray Data on a private local Ray.

Each test writes a little traffic, runs the workload as the operator would (one test as
``python -m distill_jobs.source`` in a subprocess) and reads back what a user or the
Teach stage would read: the result, ``train.jsonl``, ``held_out.jsonl``, the held-out
hashes and the report.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from distill_jobs.contract import StageInput, StageResult, read_result
from distill_jobs.raycluster import connect
from distill_jobs.records import PromptRecord, prompt_hash
from distill_jobs.runner import stage_main
from distill_jobs.source import work

from .conftest import write_jsonl

SUBPROCESS_TIMEOUT_S = 240
SYSTEM = "You are the support assistant of an online shop."
NEAR_TICKET = (
    "my order number 4411 arrived yesterday but the blue kettle inside was cracked along "
    "the handle and the box was soaked so I would like a replacement sent to my home address"
)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> None:
    """One private in-process Ray for the module (the workload joins it)."""
    connect(num_cpus=2)


def words(rng: random.Random, count: int = 8) -> str:
    """A prompt no other generated prompt is a near-duplicate of."""
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(count))


def chat(text: str, **fields: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": "the production model's answer"},
    ]
    return {"messages": messages, **fields}


def traffic(counts: dict[str, int], *, seed: int = 0) -> list[dict[str, Any]]:
    """Distinct chat rows, ``counts[slice]`` of each slice, shuffled."""
    rng = random.Random(seed)
    rows = [chat(words(rng), slice=name) for name, count in counts.items() for _ in range(count)]
    rng.shuffle(rows)
    return rows


def source_input(root: Path, **source: Any) -> StageInput:
    source.setdefault("traffic", [f"{(root / 'traffic').as_uri()}/*.jsonl"])
    return StageInput(
        project="tests/source",
        project_uid="uid-source",
        stage="Source",
        spec={"task": "answer support tickets", "source": source},
        artifacts_uri=(root / "artifacts").as_uri(),
    )


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


def read_json(uri: str) -> Any:
    return json.loads(Path(uri.removeprefix("file://")).read_text())


def prompts(uri: str) -> list[PromptRecord]:
    return [PromptRecord.model_validate(row) for row in read_jsonl(uri)]


def succeeded(stage_input: StageInput) -> StageResult:
    result = work(stage_input)
    assert result.exit_condition_met, result.message
    assert result.reason == "DataSourced"
    return result


def failed(stage_input: StageInput, reason: str) -> StageResult:
    result = work(stage_input)
    assert not result.exit_condition_met
    assert result.reason == reason, result.message
    assert "train" not in result.artifacts
    return result


# --- the happy path ------------------------------------------------------------------------


def test_jsonl_globs_and_parquet_become_deduplicated_sliced_prompt_records(
    tmp_path: Path,
) -> None:
    rng = random.Random(1)
    part_0 = traffic({"billing": 20, "shipping": 12}, seed=2)
    part_1 = [
        chat(NEAR_TICKET, slice="shipping"),
        chat(NEAR_TICKET + " thanks", slice="shipping"),  # near-duplicate
        chat(part_0[0]["messages"][1]["content"].upper(), slice="billing"),  # exact
        chat(f"I want a refund for {words(rng)}"),  # no slice field: tagged by rule
        chat(f"please refund {words(rng)}"),
        chat(words(rng)),  # no field, no rule: unsliced
    ]
    write_jsonl(tmp_path / "traffic" / "part-0.jsonl", part_0)
    write_jsonl(tmp_path / "traffic" / "part-1.jsonl", part_1)
    chat_parquet = [chat(words(rng), slice="vip") for _ in range(6)]
    pq.write_table(pa.Table.from_pylist(chat_parquet), tmp_path / "chat.parquet")
    plain = [{"question": words(rng), "answer": str(n), "slice": "vip"} for n in range(4)]
    pq.write_table(pa.Table.from_pylist(plain), tmp_path / "plain.parquet")
    stage_input = source_input(
        tmp_path,
        traffic=[f"{(tmp_path / 'traffic').as_uri()}/*.jsonl", f"{tmp_path.as_uri()}/*.parquet"],
        sliceField="slice",
        sliceRules=[{"slice": "refunds", "pattern": "(?i)refund"}],
        promptField="question",
        referenceField="answer",
        criticalSlices=[{"name": "refunds", "minCount": 1}],
        heldOutFraction=0.2,
        nearDuplicateThreshold=0.8,
    )

    result = succeeded(stage_input)

    train, held_out = prompts(result.artifacts["train"]), prompts(result.artifacts["held_out"])
    rows = len(part_0) + len(part_1) + len(chat_parquet) + len(plain)
    assert result.metrics["raw"] == rows
    assert (result.metrics["exact_duplicates"], result.metrics["near_duplicates"]) == (1, 1)
    assert len(train) + len(held_out) == result.metrics["kept"] == rows - 2
    assert Counter(p.slice for p in train + held_out) == {
        "billing": 20,
        "shipping": 13,
        "vip": 10,
        "refunds": 2,
        "unsliced": 1,
    }
    by_text = {p.prompt_text: p for p in train + held_out}
    assert NEAR_TICKET + " thanks" not in {m["content"] for p in train for m in p.messages}
    first = by_text[f"{SYSTEM}\n{part_0[0]['messages'][1]['content']}"]
    assert first.id == prompt_hash(first.prompt_text)
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert {p.reference for p in train + held_out if p.slice == "vip"} - {None} == {
        "0",
        "1",
        "2",
        "3",
    }
    held_out_ids = set(read_json(result.artifacts["held_out_hashes"]))
    assert held_out_ids == {p.id for p in held_out}
    assert not held_out_ids & {p.id for p in train}
    assert {p.slice for p in held_out} == {"billing", "shipping", "vip", "refunds"}
    report = read_json(result.artifacts["report"])
    assert report["slices"]["billing"]["raw"] == 21
    assert report["slices"]["billing"]["kept"] == 20
    assert report["rows"]["slice_tagged_by"] == {"field": rows - 3, "rule": 2, "none": 1}
    assert result.metrics["slices"]["refunds"]["critical"] is True
    assert result.metrics["train_refunds"] == 1
    assert result.message.startswith(f"{len(train)} train / {len(held_out)} held out across 5")


def test_the_split_is_the_same_for_a_seed_and_differs_with_another(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "traffic" / "t.jsonl", traffic({"a": 40, "b": 20}))

    def held_out_with(seed: int) -> set[str]:
        result = succeeded(source_input(tmp_path, seed=seed, heldOutFraction=0.25))
        return set(read_json(result.artifacts["held_out_hashes"]))

    first = held_out_with(3)
    assert held_out_with(3) == first
    assert held_out_with(4) != first
    assert len(first) == 15


# --- critical slices ----------------------------------------------------------------------


def test_an_under_covered_critical_slice_fails_naming_it_with_its_count(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "traffic" / "t.jsonl", traffic({"common": 60, "refund-fraud": 6}))
    stage_input = source_input(
        tmp_path,
        sliceField="slice",
        criticalSlices=[{"name": "refund-fraud", "minCount": 20}, {"name": "vip", "minCount": 2}],
    )
    result = failed(stage_input, "CriticalSliceUnderCovered")
    assert "refund-fraud has 5 training example(s), minCount 20" in result.message
    assert "vip has 0 training example(s), minCount 2" in result.message
    assert result.metrics["train_refund-fraud"] == 5
    report = read_json(result.artifacts["report"])
    assert report["slices"]["refund-fraud"]["raw"] == 6
    assert "refund-fraud" in report["problem"]


def test_oversampling_fills_a_critical_slice_with_numbered_copies(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "traffic" / "t.jsonl", traffic({"common": 60, "refund-fraud": 6}))
    stage_input = source_input(
        tmp_path,
        sliceField="slice",
        criticalSlices=[{"name": "refund-fraud", "minCount": 20}],
        allowOversampling=True,
    )
    result = succeeded(stage_input)
    train = prompts(result.artifacts["train"])
    rare = [p for p in train if p.slice == "refund-fraud"]
    originals = {p.id for p in rare if p.copy_index == 0}
    assert len(rare) == 20 == result.metrics["train_refund-fraud"]
    assert len(originals) == 5
    assert {p.id for p in rare if p.copy_index > 0} == originals
    assert not any(p.copy_index for p in prompts(result.artifacts["held_out"]))
    assert read_json(result.artifacts["report"])["slices"]["refund-fraud"]["oversampled"] == 15
    assert "refund-fraud 20 train (15 oversampled), 1 held out" in result.message


# --- bad input -------------------------------------------------------------------------------


def test_malformed_rows_and_prompt_less_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = traffic({"a": 10})
    write_jsonl(
        tmp_path / "traffic" / "t.jsonl",
        [*rows[:5], "{not json", '"a string"', {"messages": [{"role": "assistant"}]}, *rows[5:]],
    )
    (tmp_path / "traffic" / "broken.parquet").write_bytes(b"PAR1 but not really")
    stage_input = source_input(tmp_path, traffic=[f"{(tmp_path / 'traffic').as_uri()}/*"])
    result = succeeded(stage_input)
    assert (result.metrics["malformed"], result.metrics["no_prompt"]) == (2, 1)
    assert result.metrics["raw"] == 10
    report = read_json(result.artifacts["report"])
    assert {reason: entry["count"] for reason, entry in report["rows"]["dropped"].items()} == {
        "not_json": 1,
        "not_object": 1,
        "no_user_turn": 1,
    }
    assert report["rows"]["dropped"]["not_json"]["examples"] == [
        f"{(tmp_path / 'traffic' / 't.jsonl').as_uri()}:6"
    ]
    assert [s["kind"] for s in report["files"]["skipped"]] == ["unreadable"]


@pytest.mark.parametrize(
    ("files", "settings", "reason", "named"),
    [
        ({}, {}, "NoTraffic", "/traffic/*.jsonl"),
        ({"t.jsonl": ""}, {}, "NoTraffic", "t.jsonl"),
        ({"t.jsonl": "\n  \n"}, {}, "NoTraffic", "hold no records"),
        ({"t.jsonl": "nope\n{bad\n"}, {}, "UnreadableTraffic", "t.jsonl:2"),
        ({"t.parquet": "not parquet"}, {"glob": "*.parquet"}, "UnreadableTraffic", "t.parquet"),
        ({"t.jsonl": '{"text": "hi"}\n'}, {}, "NoPrompts", "promptField"),
        ({"t.jsonl": json.dumps(chat("hi"))}, {"sliceField": "team"}, "SliceFieldMissing", "team"),
        (
            {"t.jsonl": "\n".join(json.dumps(r) for r in traffic({"a": 5, "rare": 1}))},
            {"sliceField": "slice", "criticalSlices": [{"name": "rare", "minCount": 1}]},
            "HeldOutEmptiesSlice",
            "rare",
        ),
        (
            {"t.jsonl": json.dumps(chat("hi"))},
            {"sliceRules": [{"slice": "x", "pattern": "(unclosed"}]},
            "InvalidSliceRule",
            "sliceRules[0]",
        ),
    ],
    ids=[
        "no-file",
        "empty-file",
        "blank-lines",
        "all-malformed",
        "unreadable-parquet",
        "no-prompts",
        "slice-field-missing",
        "held-out-empties-critical-slice",
        "invalid-rule",
    ],
)
def test_bad_input_is_a_failed_result_that_names_the_problem(
    tmp_path: Path, files: dict[str, str], settings: dict[str, Any], reason: str, named: str
) -> None:
    for name, text in files.items():
        (tmp_path / "traffic").mkdir(exist_ok=True)
        (tmp_path / "traffic" / name).write_text(text)
    glob = settings.pop("glob", "*.jsonl")
    stage_input = source_input(
        tmp_path, traffic=[f"{(tmp_path / 'traffic').as_uri()}/{glob}"], **settings
    )
    result = failed(stage_input, reason)
    assert named in result.message


def test_a_failed_result_is_written_and_the_process_still_exits_zero(tmp_path: Path) -> None:
    stage_input = source_input(tmp_path)
    input_path = tmp_path / "input.json"
    input_path.write_text(stage_input.model_dump_json())
    assert stage_main(work, ["--input", input_path.as_uri()]) == 0
    result = read_result(stage_input.result_uri())
    assert result is not None
    assert (result.exit_condition_met, result.reason) == (False, "NoTraffic")


# --- as the operator runs it -----------------------------------------------------------------


def test_python_m_source_writes_its_result_and_artifacts(tmp_path: Path) -> None:
    counts = {"billing": 150, "shipping": 120, "login": 60, "refund-fraud": 24}
    rows = traffic(counts, seed=11)
    write_jsonl(tmp_path / "traffic" / "day-1.jsonl", rows[: len(rows) // 2])
    write_jsonl(tmp_path / "traffic" / "day-2.jsonl", rows[len(rows) // 2 :] + rows[:10])
    stage_input = source_input(
        tmp_path, sliceField="slice", criticalSlices=[{"name": "refund-fraud", "minCount": 20}]
    )
    input_path = tmp_path / "input.json"
    input_path.write_text(stage_input.model_dump_json())
    # As under a Ray job: RAY_ADDRESS names the cluster (here the module's private one).
    env = os.environ | {
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }

    completed = subprocess.run(
        [sys.executable, "-m", "distill_jobs.source", "--input", input_path.as_uri()],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    result_json = json.loads(Path(stage_input.result_uri().removeprefix("file://")).read_text())
    assert result_json["exitConditionMet"] is True
    assert result_json["reason"] == "DataSourced"
    metrics = result_json["metrics"]
    assert (metrics["raw"], metrics["exact_duplicates"], metrics["kept"]) == (364, 10, 354)
    assert metrics["train_refund-fraud"] == 22  # 24 less 2 held out (10%, rounded)
    assert set(result_json["artifacts"]) == {"train", "held_out", "held_out_hashes", "report"}
    train = prompts(result_json["artifacts"]["train"])
    held_out = prompts(result_json["artifacts"]["held_out"])
    assert (len(train), len(held_out)) == (metrics["train"], metrics["held_out"]) == (319, 35)
    assert not {p.id for p in train} & set(read_json(result_json["artifacts"]["held_out_hashes"]))
    assert result_json["message"].startswith("319 train / 35 held out across 4 slices")
