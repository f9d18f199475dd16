"""The drift monitor: its statistics, its traffic sample, and the workload end to end.

The workload tests share one real Source run (Ray Data on the session's in-process Ray):
the training set the live student was built from, with a rare critical slice tagged by a
rule and oversampled. Each test then writes the traffic as it is now and runs the
monitor on it as the operator would (one test as ``python -m distill_jobs.monitor``); the
monitor itself needs no Ray.
"""

from __future__ import annotations

import gzip
import json
import random
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill_jobs import drift, source
from distill_jobs.contract import StageInput, StageResult, read_result, write_result
from distill_jobs.monitor import work
from distill_jobs.records import PromptRecord
from distill_jobs.sourcing.files import list_traffic
from distill_jobs.sourcing.prompts import Drop
from distill_jobs.sourcing.sampling import sample_traffic

from .conftest import write_jsonl

SUBPROCESS_TIMEOUT_S = 120
SYSTEM = "You are the support assistant of an online shop."
TRAINED_MIX = {"billing": 70, "shipping": 50, "refund-fraud": 6}
SOURCE_SPEC: dict[str, Any] = {
    "sliceField": "slice",
    # refund-fraud rows carry no slice field: the rule tags them, on both sides.
    "sliceRules": [{"slice": "refund-fraud", "pattern": "(?i)fraud"}],
    "criticalSlices": [{"name": "refund-fraud", "minCount": 30}],
    "allowOversampling": True,
}


# --- traffic ------------------------------------------------------------------------------


def words(rng: random.Random, count: int) -> str:
    """Random words: no generated prompt is a near-duplicate of another."""
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(count))


def ticket(rng: random.Random, slice_name: str, *, length: int = 8) -> dict[str, Any]:
    """A support ticket of about ``length`` words (give or take 3)."""
    count = rng.randint(length - 3, length + 3)
    text = words(rng, count)
    fields: dict[str, Any] = {"slice": slice_name}
    if slice_name == "refund-fraud":
        text, fields = f"fraud {words(rng, count - 1)}", {}
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": "the production model's answer"},
    ]
    return {"messages": messages, **fields}


def traffic(mix: dict[str, int], *, seed: int, length: int = 8) -> list[dict[str, Any]]:
    """``mix[slice]`` distinct tickets of each slice, shuffled."""
    rng = random.Random(seed)
    rows = [ticket(rng, name, length=length) for name, count in mix.items() for _ in range(count)]
    rng.shuffle(rows)
    return rows


def read_json(uri: str) -> Any:
    return json.loads(Path(uri.removeprefix("file://")).read_text())


# --- the live student's Source result, once per module ------------------------------------


@dataclass(frozen=True)
class Sourced:
    """The Source run the live student was trained on."""

    traffic_uri: str
    result_uri: str
    rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def sourced(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Sourced:
    root = tmp_path_factory.mktemp("sourced")
    rows = traffic(TRAINED_MIX, seed=1)
    write_jsonl(root / "traffic" / "day-1.jsonl", rows)
    traffic_uri = f"{(root / 'traffic').as_uri()}/*.jsonl"
    stage_input = StageInput(
        project="tests/monitor",
        project_uid="uid-monitor",
        stage="Source",
        spec={"source": {**SOURCE_SPEC, "traffic": [traffic_uri]}},
        artifacts_uri=(root / "artifacts").as_uri(),
    )
    result = source.work(stage_input)
    assert result.exit_condition_met, result.message
    write_result(result, stage_input.result_uri())
    return Sourced(traffic_uri=traffic_uri, result_uri=stage_input.result_uri(), rows=rows)


def monitor_input(
    sourced: Sourced,
    tmp_path: Path,
    *,
    traffic_uri: str | None = None,
    lifecycle: dict[str, Any] | None = None,
    check: int = 1,
    **source_changes: Any,
) -> StageInput:
    """The input the operator builds: the project's Source spec now, the bounds, a counter."""
    source_spec = {**SOURCE_SPEC, "traffic": [traffic_uri or sourced.traffic_uri]}
    return StageInput(
        project="tests/monitor",
        project_uid="uid-monitor",
        stage="Launch",
        spec={"source": source_spec | source_changes, "lifecycle": lifecycle or {}, "check": check},
        upstream={"Source": sourced.result_uri},
        artifacts_uri=(tmp_path / "artifacts").as_uri(),
    )


def live_traffic(tmp_path: Path, rows: list[Any], *, name: str = "day-2.jsonl") -> str:
    """The project's traffic files as they are now (rewritten since Source read them)."""
    write_jsonl(tmp_path / "traffic" / name, rows)
    return f"{(tmp_path / 'traffic').as_uri()}/*"


def checked(stage_input: StageInput, reason: str) -> StageResult:
    result = work(stage_input)
    assert result.reason == reason, result.message
    assert result.exit_condition_met is (reason == "NoDrift")
    assert result.stage == "Launch"
    return result


# --- drift.py: the statistics ---------------------------------------------------------------


def test_identical_mixes_do_not_shift_whatever_their_size() -> None:
    assert drift.total_variation({"a": 3, "b": 1}, {"a": 300, "b": 100}) == 0.0
    assert drift.ks_statistic([5, 10, 20], [20, 5, 10, 10, 5, 20]) == 0.0


def test_disjoint_mixes_shift_by_one() -> None:
    assert drift.total_variation({"a": 5}, {"b": 7}) == 1.0
    assert drift.total_variation({"a": 5, "b": 0}, {"b": 7, "c": 1}) == 1.0


def test_total_variation_is_half_the_summed_share_differences() -> None:
    # shares 0.5/0.5 against 0.75/0.25
    assert drift.total_variation({"a": 1, "b": 1}, {"a": 3, "b": 1}) == pytest.approx(0.25)


def test_ks_is_the_share_of_lengths_that_moved_past_the_other_side() -> None:
    assert drift.ks_statistic(list(range(100)), list(range(50, 150))) == pytest.approx(0.5)
    assert drift.ks_statistic(list(range(100)), list(range(1000, 1100))) == 1.0


def test_a_side_without_prompts_is_refused() -> None:
    with pytest.raises(ValueError, match="both sides"):
        drift.total_variation({}, {"a": 1})
    with pytest.raises(ValueError, match="both sides"):
        drift.ks_statistic([], [1])


def test_compare_orders_slices_by_change_and_describes_the_ones_that_moved() -> None:
    training = drift.PromptMix(
        slices={"billing": 35, "refund-fraud": 3, "other": 62}, lengths=[50] * 100
    )
    live = drift.PromptMix(
        slices={"billing": 10, "refund-fraud": 40, "other": 50}, lengths=[50] * 100
    )

    found = drift.compare(live=live, training=training, bounds=drift.Bounds(0.2, 0.3))

    assert found.slice_shift == pytest.approx(0.37)
    assert (found.drifted, found.slices_drifted, found.lengths_drifted) == (True, True, False)
    assert [c.slice for c in found.slices] == ["refund-fraud", "billing", "other"]
    assert found.largest_change.change == pytest.approx(0.37)
    assert drift.describe(found) == (
        "slice mix moved 0.37 > 0.2 (refund-fraud 3% -> 40%, billing 35% -> 10%); "
        "prompt length KS 0.00 <= 0.3 (median 50 -> 50 characters)"
    )
    assert drift.table(found)["billing"] == {
        "live": 10,
        "training": 35,
        "live_share": 0.1,
        "training_share": 0.35,
        "change": -0.25,
    }


def test_a_shift_equal_to_its_bound_is_within_it_and_the_message_shows_the_difference() -> None:
    even = drift.PromptMix(slices={"a": 1, "b": 1}, lengths=[1, 2])
    leaning = drift.PromptMix(slices={"a": 3, "b": 1}, lengths=[1, 2])
    at_bound = drift.compare(live=leaning, training=even, bounds=drift.Bounds(0.25, 0.3))
    just_under = drift.compare(live=leaning, training=even, bounds=drift.Bounds(0.249, 0.3))

    assert not at_bound.drifted
    assert "slice mix moved 0.25 <= 0.25" in drift.describe(at_bound)
    assert "slice mix moved 0.250 > 0.249" in drift.describe(just_under)


def test_a_rare_share_is_shown_with_a_decimal() -> None:
    assert (drift.percent(0.004), drift.percent(0.0), drift.percent(0.4)) == ("0.4%", "0%", "40%")


# --- the traffic sample ---------------------------------------------------------------------


def test_the_sample_is_seeded_in_traffic_order_and_bounded(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {n}"} for n in range(1000)]
    write_jsonl(tmp_path / "a.jsonl", rows[:600])
    write_jsonl(tmp_path / "b.jsonl", rows[600:])
    files = list_traffic([f"{tmp_path.as_uri()}/*.jsonl"]).files

    def sample(seed: int, size: int = 100) -> list[int]:
        taken = sample_traffic(files, size=size, seed=seed, columns=["prompt"])
        assert taken.seen == 1000
        return [row.position for row in taken.rows]

    first = sample(0)
    assert len(first) == 100 and first == sorted(first)
    assert sample(0) == first
    assert sample(1) != first
    assert 25 <= sum(position >= 600 for position in first) <= 55  # b.jsonl: 40% of rows
    assert sample(0, size=5000) == list(range(1000))


def test_the_sample_reads_gzip_json_arrays_and_parquet_as_source_does(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {n}"} for n in range(10)]
    (tmp_path / "a.jsonl.gz").write_bytes(
        gzip.compress(b"\xef\xbb\xbf" + b"\n".join(json.dumps(r).encode() for r in rows))
    )
    (tmp_path / "b.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist([{"prompt": "q", "other": 1}] * 10), tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_bytes(b"PAR1 but not really")
    (tmp_path / "e.jsonl").write_bytes(b'{"prompt": "x"}\n\xff\xfe\n[1]\n\n')
    files = list_traffic([f"{tmp_path.as_uri()}/*"]).files

    taken = sample_traffic(files, size=100, seed=0, columns=["prompt", "messages"])

    assert taken.seen == 33
    assert [row.record for row in taken.rows][:2] == [rows[0], rows[1]]
    assert taken.rows[20].record == {"prompt": "q"}  # projected to the columns asked for
    assert [row.record for row in taken.rows[-3:]] == [
        {"prompt": "x"},
        Drop.NOT_UTF8,
        Drop.NOT_OBJECT,
    ]
    assert taken.rows[-2].location.endswith("e.jsonl:2")
    assert [item.uri.rsplit("/", 1)[-1] for item in taken.unreadable] == ["d.parquet"]


# --- the workload ---------------------------------------------------------------------------


def test_the_traffic_the_student_was_trained_on_has_not_drifted(
    sourced: Sourced, tmp_path: Path
) -> None:
    result = checked(monitor_input(sourced, tmp_path), "NoDrift")

    metrics = result.metrics
    # Distinct prompts: 63 + 45 + 5 (the rest held out); refund-fraud's 25 copies not counted.
    assert (metrics["trainingRows"], metrics["trainingFileRows"]) == (113, 138)
    assert (metrics["liveRows"], metrics["trafficRows"], metrics["sampledRows"]) == (126, 126, 126)
    assert metrics["sliceShift"] < 0.01
    assert metrics["lengthShift"] < 0.1
    # The rare slice's share differs a little: one of its 6 prompts is held out.
    assert result.message.startswith(
        "slice mix moved 0.00 <= 0.2 (refund-fraud 4% -> 5%); prompt length KS 0.0"
    )
    assert "126 live prompts (126 sampled of 126 rows read) against 113 training prompts" in (
        result.message
    )
    document = read_json(result.artifacts["drift"])
    assert result.artifacts["drift"] == result_dir(result, tmp_path) + "/drift.json"
    assert set(document["slices"]) == {"billing", "shipping", "refund-fraud"}
    assert document["slices"]["refund-fraud"]["training"] == 5
    assert document["slices"]["refund-fraud"]["live"] == 6
    lengths = document["lengths"]
    assert abs(lengths["training"]["p50"] - lengths["live"]["p50"]) <= 6  # about a word
    assert lengths["live"]["p10"] < lengths["live"]["p50"] < lengths["live"]["p90"]
    assert document["training"]["tagging_changed"] is False


def result_dir(result: StageResult, tmp_path: Path) -> str:
    return f"{(tmp_path / 'artifacts').as_uri()}/tests/monitor/launch/{result.input_hash}"


def test_a_new_slice_mix_is_drifted_and_names_the_slices_that_moved(
    sourced: Sourced, tmp_path: Path
) -> None:
    now = live_traffic(
        tmp_path, traffic({"billing": 20, "shipping": 50, "refund-fraud": 80}, seed=2)
    )

    result = checked(monitor_input(sourced, tmp_path, traffic_uri=now), "Drifted")

    assert result.metrics["sliceShift"] > 0.4
    assert result.metrics["lengthShift"] <= 0.3
    assert result.metrics["largestSliceChangeSlice"] == "refund-fraud"
    assert result.metrics["largestSliceChange"] == pytest.approx(80 / 150 - 5 / 113, abs=1e-4)
    assert result.message.startswith(
        f"slice mix moved {result.metrics['sliceShift']:.2f} > 0.2 "
        "(refund-fraud 4% -> 53%, billing 56% -> 13%); prompt length KS"
    )


def test_longer_prompts_drift_on_length_alone(sourced: Sourced, tmp_path: Path) -> None:
    now = live_traffic(tmp_path, traffic(TRAINED_MIX, seed=3, length=40))

    result = checked(monitor_input(sourced, tmp_path, traffic_uri=now), "Drifted")

    assert result.metrics["sliceShift"] < 0.01
    assert result.metrics["lengthShift"] == 1.0
    lengths = read_json(result.artifacts["drift"])["lengths"]
    assert lengths["training"]["max"] < lengths["live"]["p10"]
    medians = f"median {lengths['training']['p50']:g} -> {lengths['live']['p50']:g} characters"
    assert f"prompt length KS 1.00 > 0.3 ({medians})" in result.message


def test_bounds_come_from_the_lifecycle_spec(sourced: Sourced, tmp_path: Path) -> None:
    now = live_traffic(
        tmp_path, traffic({"billing": 60, "shipping": 60, "refund-fraud": 6}, seed=4)
    )
    loose = monitor_input(sourced, tmp_path, traffic_uri=now, lifecycle={"maxSliceShift": 0.5})
    strict = monitor_input(sourced, tmp_path, traffic_uri=now, lifecycle={"maxSliceShift": 0.01})

    assert checked(loose, "NoDrift").metrics["maxSliceShift"] == 0.5
    assert "billing 56% -> 48%" in checked(strict, "Drifted").message


def test_repeats_that_source_folded_into_one_prompt_do_not_read_as_drift(
    sourced: Sourced, tmp_path: Path
) -> None:
    billing = [row for row in sourced.rows if row.get("slice") == "billing"]
    now = live_traffic(tmp_path, sourced.rows + billing * 4)

    result = checked(monitor_input(sourced, tmp_path, traffic_uri=now), "NoDrift")

    assert (result.metrics["liveRows"], result.metrics["duplicateRows"]) == (126, 280)


def test_a_sample_of_sample_rows_is_the_same_at_every_check(
    sourced: Sourced, tmp_path: Path
) -> None:
    def metrics(check: int) -> dict[str, Any]:
        stage_input = monitor_input(sourced, tmp_path, lifecycle={"sampleRows": 40}, check=check)
        return checked(stage_input, "NoDrift").metrics

    first = metrics(1)
    assert (first["sampledRows"], first["liveRows"], first["trafficRows"]) == (40, 40, 126)
    assert metrics(2) == first


def test_malformed_rows_are_counted_and_skipped(sourced: Sourced, tmp_path: Path) -> None:
    broken = ["{not json", '"a string"', "[1, 2]", {"messages": [{"role": "assistant"}]}]
    now = live_traffic(tmp_path, [*sourced.rows[:60], *broken, *sourced.rows[60:]])

    result = checked(monitor_input(sourced, tmp_path, traffic_uri=now), "NoDrift")

    assert (result.metrics["malformedRows"], result.metrics["noPromptRows"]) == (3, 1)
    assert result.metrics["liveRows"] == 126
    assert "(130 sampled of 130 rows read, 3 malformed and 1 without a prompt skipped)" in (
        result.message
    )
    dropped = read_json(result.artifacts["drift"])["live"]["dropped"]
    assert {reason: entry["count"] for reason, entry in dropped.items()} == {
        "not_json": 1,
        "not_object": 2,
        "no_user_turn": 1,
    }
    assert dropped["not_json"]["examples"] == [f"{now.removesuffix('*')}day-2.jsonl:61"]


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({}, "matches no file"),
        ({"day-2.jsonl": ""}, "day-2.jsonl (empty file)"),
        ({"day-2.jsonl": "\n \n"}, "hold no records"),
        ({"day-2.jsonl": "nope\n{bad\n"}, "2 not_json (line is not JSON; e.g. "),
        ({"day-2.parquet": "not parquet"}, "day-2.parquet (ArrowInvalid"),
    ],
    ids=["missing", "empty-file", "blank-lines", "all-malformed", "unreadable-parquet"],
)
def test_traffic_without_a_readable_prompt_is_no_traffic(
    sourced: Sourced, tmp_path: Path, files: dict[str, str], named: str
) -> None:
    (tmp_path / "traffic").mkdir()
    for name, text in files.items():
        (tmp_path / "traffic" / name).write_text(text)
    now = f"{(tmp_path / 'traffic').as_uri()}/*"

    result = checked(monitor_input(sourced, tmp_path, traffic_uri=now), "NoTraffic")

    assert named in result.message
    assert "spec.source.traffic" in result.message
    assert result.artifacts == {}


def test_a_changed_slice_tagging_is_pointed_out(sourced: Sourced, tmp_path: Path) -> None:
    rules = [{"slice": "refund-fraud", "pattern": "(?i)fraud|dispute"}]

    result = checked(monitor_input(sourced, tmp_path, sliceRules=rules), "NoDrift")

    assert "sliceRules changed since the student's data was sourced" in result.message


@pytest.mark.parametrize(
    ("change", "reason", "named"),
    [
        (
            {"lifecycle": {"maxSliceShift": 2}},
            "InvalidLifecycleSpec",
            "spec.lifecycle.maxSliceShift",
        ),
        ({"upstream": {}}, "SourceResultMissing", "upstream.Source"),
        ({"upstream": {"Source": "file:///nowhere/result.json"}}, "SourceResultMissing", "nowhere"),
        (
            {"source": {"traffic": ["x"], "sliceRules": [{"slice": "s", "pattern": "("}]}},
            "InvalidSliceRule",
            "sliceRules[0]",
        ),
    ],
    ids=["bound-out-of-range", "no-upstream", "missing-source-result", "invalid-rule"],
)
def test_a_bad_input_is_a_failed_result_naming_the_field(
    sourced: Sourced, tmp_path: Path, change: dict[str, Any], reason: str, named: str
) -> None:
    stage_input = monitor_input(sourced, tmp_path)
    for key, value in change.items():
        if key == "upstream":
            stage_input = stage_input.model_copy(update={"upstream": value})
        else:
            stage_input = stage_input.model_copy(update={"spec": stage_input.spec | {key: value}})

    result = checked(stage_input, reason)

    assert named in result.message


# --- as the operator runs it ----------------------------------------------------------------


def test_python_m_monitor_writes_its_result_and_drift_json(
    sourced: Sourced, tmp_path: Path
) -> None:
    now = live_traffic(
        tmp_path, traffic({"billing": 10, "shipping": 10, "refund-fraud": 30}, seed=5)
    )
    stage_input = monitor_input(sourced, tmp_path, traffic_uri=now)
    input_path = tmp_path / "input.json"
    input_path.write_text(stage_input.model_dump_json())

    completed = subprocess.run(
        [sys.executable, "-m", "distill_jobs.monitor", "--input", input_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    result = read_result(stage_input.result_uri())
    assert result is not None
    assert (result.exit_condition_met, result.reason) == (False, "Drifted")
    assert "Launch: Drifted: slice mix moved" in completed.stderr
    assert set(result.metrics) >= {"sliceShift", "lengthShift", "liveRows", "trainingRows"}
    assert read_json(result.artifacts["drift"])["slices"]["refund-fraud"]["live_share"] == 0.6
    # The training set it compared with is the one Source wrote.
    train = read_result(sourced.result_uri)
    assert train is not None
    lines = Path(train.artifacts["train"].removeprefix("file://")).read_text().splitlines()
    ids = {PromptRecord.model_validate_json(line).id for line in lines}
    assert result.metrics["trainingRows"] == len(ids)
