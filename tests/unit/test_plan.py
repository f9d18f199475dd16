"""``distill plan``: the real machine, fed made-up results, says what a new spec re-runs."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill_jobs.contract import Endpoint
from distill_operator.api import ProjectSpec, ProjectStatus, Stage, StageState
from distill_operator.cli import build_parser
from distill_operator.cli.plan import cmd_plan
from distill_operator.plan import InvalidSpec, PlanRow, plan
from distill_operator.stages import launch
from manifests import example_manifest

from .test_machine import (
    T0,
    TO_ITERATE,
    _through,
    entry,
    look_result,
    passing,
    results_at,
    step,
)

STAGES = [s.value for s in Stage]


def new_spec(**overrides: Any) -> dict[str, Any]:
    manifest = example_manifest(**{f"spec.{key}": value for key, value in overrides.items()})
    spec: dict[str, Any] = manifest["spec"]
    return spec


def rolled_out(spec: ProjectSpec, status: ProjectStatus) -> ProjectStatus:
    """Launch's steps pass one by one: the router serves each revision, every compared
    request agrees, and each step's hold is over by the next pass."""
    now = T0
    while entry(status, Stage.LAUNCH).state == StageState.RUNNING:
        serving = status.serving
        assert serving is not None and serving.router is not None
        counts = launch.RevisionCounts(student=40, teacher=40, agree=40)
        seen = launch.RouterSeen(
            endpoint=Endpoint(url="http://127.0.0.1:8000", attempt=serving.router.attempt),
            revision=serving.revision,
            counts={serving.revision: counts},
        )
        now += timedelta(seconds=301)
        status = step(spec, status, now=now, router=seen).status
    return status


def live_project() -> dict[str, Any]:
    """The example project after a full run: tiny (the smaller) and small both clear the
    bar, tiny is chosen, passes Look and serves all traffic."""
    spec = ProjectSpec.model_validate(new_spec())
    status = _through(spec, TO_ITERATE)
    trained = [passing(status, "tiny", 147_776, 0.93), passing(status, "small", 787_584, 0.95)]
    status = step(spec, status, results=results_at(status, *trained)).status
    look = look_result(status)
    status = step(spec, status, result=look).status
    status = step(spec, status, result=look, reports={"demo-look": look.input_hash}).status
    status = rolled_out(spec, status)
    assert status.serving is not None and status.serving.live is not None
    assert status.serving.live.name == "tiny"
    return body(new_spec(), status)


def body(spec: dict[str, Any], status: ProjectStatus) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "demo", "uid": "0a1b2c3d-uid", "generation": 1},
        "spec": spec,
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    return live_project()


def plans(rows: list[PlanRow]) -> dict[str, str]:
    return {row.stage: row.plan for row in rows}


def row(rows: list[PlanRow], stage: str) -> PlanRow:
    return next(r for r in rows if r.stage == stage)


def test_an_identical_spec_re_uses_every_stage_and_rolls_out_nothing(live: dict[str, Any]) -> None:
    rows = plan(live, new_spec())
    by_stage = plans(rows)
    assert by_stage["Define"] == "checked"
    assert {by_stage[s] for s in STAGES if s != "Define"} == {"reuse"}
    parts = [r for r in rows if "/" in r.stage and r.stage != "Launch/router"]
    assert len(parts) == 5 and {r.plan for r in parts} == {"reuse"}
    assert row(rows, "Launch").why == "nothing to roll out (StudentUnchanged)"
    assert by_stage["Launch/router"] == "keeps running"
    assert "project" not in by_stage, "nothing runs, so nothing waits"
    assert all(r.input_hash == r.live_input_hash for r in rows if r.input_hash)


def test_a_new_learning_rate_retrains_every_candidate_and_rolls_out_the_new_student(
    live: dict[str, Any],
) -> None:
    rows = plan(live, new_spec(**{"students.training.learningRate": 0.001}))
    by_stage = plans(rows)
    assert [by_stage[s] for s in ("Source", "Investigate", "Teach")] == ["reuse"] * 3
    assert [by_stage[s] for s in ("Iterate", "Iterate/tiny", "Iterate/small")] == ["re-run"] * 3
    assert row(rows, "Iterate/tiny").why == ("its input changed: students.training.learningRate")
    assert row(rows, "Iterate").reads == ("bar", "students")
    assert row(rows, "Iterate").why == (
        "tiny and small re-run; chooses tiny (assuming re-run candidates clear the bar)"
    )
    assert by_stage["Look"] == "re-run" and row(rows, "Look").why == "a new Iterate result"
    launch_row = row(rows, "Launch")
    assert launch_row.plan == "re-run"
    assert launch_row.why == "rolls out tiny (shadow -> canary 25% -> full)"
    assert by_stage["Launch/router"] == "keeps running"


def test_an_added_candidate_trains_alone_and_the_others_re_use_their_results(
    live: dict[str, Any],
) -> None:
    smallest = {"name": "micro", "preset": "tiny", "parameters": 50_000}
    candidates = [*new_spec()["students"]["candidates"], smallest]
    rows = plan(live, new_spec(**{"students.candidates": candidates}))
    by_stage = plans(rows)
    assert [by_stage[s] for s in ("Source", "Investigate", "Teach")] == ["reuse"] * 3
    assert by_stage["Iterate/tiny"] == by_stage["Iterate/small"] == "reuse"
    assert by_stage["Iterate/micro"] == "re-run"
    assert row(rows, "Iterate/micro").why == "a new candidate"
    assert row(rows, "Iterate").why.startswith("micro re-runs; chooses micro")
    assert by_stage["Look"] == "re-run"
    assert row(rows, "Launch").why.startswith("rolls out micro")


def test_an_added_larger_candidate_leaves_the_chosen_student_and_look_as_they_are(
    live: dict[str, Any],
) -> None:
    larger = {"name": "base", "preset": "base", "parameters": 2_000_000}
    candidates = [*new_spec()["students"]["candidates"], larger]
    rows = plan(live, new_spec(**{"students.candidates": candidates}))
    by_stage = plans(rows)
    assert by_stage["Iterate"] == by_stage["Iterate/base"] == "re-run"
    assert row(rows, "Iterate").why == (
        "base re-runs; chooses tiny (assuming re-run candidates clear the bar)"
    )
    assert by_stage["Look"] == "reuse", "Iterate still chooses the student Look judged"
    assert row(rows, "Launch").why == "nothing to roll out (StudentUnchanged)"


def test_a_new_teacher_model_re_runs_every_stage_that_reads_it_and_restarts_the_router(
    live: dict[str, Any],
) -> None:
    rows = plan(live, new_spec(**{"teacher.model": "/tmp/distill-demo/teacher-v2"}))
    by_stage = plans(rows)
    assert by_stage["Source"] == "reuse", "Source does not read the teacher"
    for stage in ("Investigate", "Teach", "Iterate", "Look", "Launch"):
        assert by_stage[stage] == "re-run", stage
    assert row(rows, "Teach").why == "its input changed: teacher.model"
    assert row(rows, "Iterate/tiny").why == "a new Teach result"
    router = row(rows, "Launch/router")
    assert router.plan == "restarts" and router.why == "its input changed: teacher.model"
    assert router.input_hash != router.live_input_hash


def test_new_traffic_re_runs_source_and_everything_after_it(live: dict[str, Any]) -> None:
    traffic = ["file:///tmp/distill-demo/traffic-2026-12/*.jsonl"]
    rows = plan(live, new_spec(**{"source.traffic": traffic}))
    by_stage = plans(rows)
    assert by_stage["Define"] == "checked"
    assert {by_stage[s] for s in STAGES if s != "Define"} == {"re-run"}
    assert row(rows, "Source").why == "its input changed: source.traffic"
    assert row(rows, "Source").reads == ("task", "source")
    assert row(rows, "Investigate/off-the-shelf").why == "a new Source result"
    assert row(rows, "Teach").why == "a new Source result"
    assert row(rows, "Look").why == (
        "its input changed: source.traffic; a new Source, Teach and Iterate result"
    )
    assert by_stage["Launch/router"] == "keeps running"


def test_a_launch_only_change_touches_only_launch(live: dict[str, Any]) -> None:
    rows = plan(live, new_spec(**{"launch.confidenceThreshold": -0.5}))
    by_stage = plans(rows)
    assert [s for s in STAGES if by_stage[s] != "reuse"] == ["Define", "Launch"]
    assert row(rows, "Launch").why == (
        "nothing to roll out (StudentUnchanged); launch.confidenceThreshold changed: "
        "the router gets the new routing at once"
    )
    steps = plan(live, new_spec(**{"launch.steps": [{"mode": "full"}]}))
    assert row(steps, "Launch").why.endswith("launch.steps changed: for the next rollout")
    assert plans(steps)["Launch/router"] == "keeps running"


def test_a_project_mid_stage_picks_the_change_up_when_that_stage_ends() -> None:
    spec = ProjectSpec.model_validate(new_spec())
    status = step(spec, _through(spec, TO_ITERATE)).status  # both candidates training
    mid_iterate = body(new_spec(), status)
    rows = plan(mid_iterate, new_spec(**{"students.training.seed": 7}))
    assert rows[0] == PlanRow("project", "waits", "applied now, picked up when Iterate ends")
    by_stage = plans(rows)
    assert by_stage["Teach"] == "reuse" and by_stage["Iterate/tiny"] == "re-run"
    assert row(rows, "Launch").why == "rolls out tiny (shadow -> canary 25% -> full)"
    assert row(rows, "Launch/router").plan == "starts", "nothing served yet"
    same = row(plan(mid_iterate, new_spec()), "Iterate/tiny")
    assert same.plan == "reuse"
    assert same.why == ("unchanged input: re-uses the result of the job running now")


def test_a_redistillation_under_way_keeps_its_traffic_snapshot(live: dict[str, Any]) -> None:
    spec = ProjectSpec.model_validate(live["spec"])
    status = ProjectStatus.model_validate(live["status"])
    due = status.lifecycle.next_scheduled_at
    assert due is not None
    later = datetime.strptime(due, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    status = step(spec, status, now=later).status  # the schedule fires: back to Source
    status = step(spec, status, now=later).status
    assert status.lifecycle.redistillations == 1
    assert entry(status, Stage.SOURCE).state == StageState.RUNNING
    redistilling = body(live["spec"], status)
    rows = plan(redistilling, new_spec())
    assert rows[0].why == "applied now, picked up when Source ends"
    source = row(rows, "Source")
    assert source.plan == "reuse", "the same snapshot as the running Source job"
    assert source.input_hash == entry(status, Stage.SOURCE).input_hash
    assert row(rows, "Teach").why == "a new Source result"
    assert row(rows, "Launch").why.startswith("rolls out tiny"), "a newly trained tiny"
    first = body(live["spec"], ProjectStatus.model_validate(live["status"]))
    first["status"]["lifecycle"]["redistillations"] = 1
    assert row(plan(first, new_spec()), "Source").why == "its input changed (traffic snapshot 1)"


def test_a_spec_the_api_server_would_refuse_names_the_field(live: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.bar\.threshold"):
        plan(live, new_spec(**{"bar.threshold": 1.5}))


def test_a_new_spec_failing_define_reaches_no_other_stage(live: dict[str, Any]) -> None:
    rows = plan(live, new_spec(task="Route tickets. Then summarise them."))
    assert row(rows, "Define").plan == "fails"
    assert row(rows, "Source").plan == "not reached"
    assert row(rows, "Source").why == "the project stops at Define (Failed)"


# --- the command -----------------------------------------------------------------------
def run_plan(tmp_path: Path, project: dict[str, Any], spec: dict[str, Any], *options: str) -> int:
    """``distill plan demo -f new.yaml -n ns``, reading the project from a file."""
    manifest = example_manifest() | {"spec": spec}
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "project.json").write_text(json.dumps(project))
    args = build_parser().parse_args(
        ["plan", "demo", "-f", str(tmp_path / "new.yaml"), "-n", "ns", *options]
    )
    assert args.func is cmd_plan

    def read_project(namespace: str, name: str) -> dict[str, Any]:
        assert (namespace, name) == ("ns", "demo")
        found: dict[str, Any] = json.loads((tmp_path / "project.json").read_text())
        return found

    return cmd_plan(args, read_project=read_project)


def test_plan_json_output_parses(
    tmp_path: Path, live: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = new_spec(**{"students.training.learningRate": 0.001})
    assert run_plan(tmp_path, live, spec, "-o", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in rows][:3] == ["Define", "Source", "Investigate"]
    tiny = next(r for r in rows if r["stage"] == "Iterate/tiny")
    assert tiny["plan"] == "re-run" and tiny["reads"] == []
    iterate = next(r for r in rows if r["stage"] == "Iterate")
    assert iterate["reads"] == ["bar", "students"]
    assert tiny["inputHash"] != tiny["liveInputHash"]


def test_plan_prints_a_table_of_stages(
    tmp_path: Path, live: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = new_spec(**{"students.training.learningRate": 0.001})
    assert run_plan(tmp_path, live, spec) == 0
    out = capsys.readouterr().out
    assert "ns/demo: applying" in out
    assert "rolls out tiny" in out and "Iterate/small" in out


def test_plan_of_a_refused_spec_says_why_and_exits_2(
    tmp_path: Path, live: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_plan(tmp_path, live, new_spec(**{"bar.threshold": 1.5})) == 2
    assert "spec.bar.threshold" in capsys.readouterr().err


def test_argparse_namespace_is_what_the_command_reads() -> None:
    args = build_parser().parse_args(["plan", "demo", "-f", "new.yaml", "-n", "default"])
    assert args == argparse.Namespace(
        command="plan", name="demo", file="new.yaml", namespace="default", output="table",
        func=cmd_plan,
    )  # fmt: skip
