"""``kubectl distill``: what each command prints, built from real-shaped statuses (the
Argo CD health check's test data) and from Look's own report module."""

from __future__ import annotations

import copy
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from distill_jobs.evaluation.report import summary
from distill_jobs.evaluation.slices import SliceRow
from distill_operator import api
from distill_operator.cli import build_parser, main, status
from distill_operator.cli.errors import CliError, NotFoundError, UnreachableError
from distill_operator.cli.logs import (
    DEFAULT_RAY_ADDRESS,
    RayLogs,
    dashboard_address,
    ray_address,
    rayjob_address,
    stage_jobs,
)
from distill_operator.cli.report import (
    disagreement_groups,
    print_disagreements,
    print_slices,
    score_bar,
    slice_rows,
)
from distill_operator.cli.timeline import timeline_rows

TESTDATA = (
    Path(__file__).resolve().parents[2]
    / "gitops/argocd/resource_customizations/distill.dev/DistillationProject/testdata"
)
NOW = datetime(2026, 11, 23, 12, 3, 5, tzinfo=UTC)  # 3m05s after every stage started


def project(name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((TESTDATA / f"{name}.yaml").read_text())
    return found


def printed(draw: Any, *args: Any, **kwargs: Any) -> str:
    """What ``draw`` prints, as plain text."""
    out = Console(width=160, record=True, file=io.StringIO())
    draw(*args, out=out, **kwargs)
    return out.export_text()


# --- status ----------------------------------------------------------------------------
def test_timeline_lists_stages_in_the_order_they_ran_then_the_pending_ones() -> None:
    rows = timeline_rows(project("progressing_iterate_training"), now=NOW)
    assert [row["stage"] for row in rows] == [
        "Define", "Investigate", "Investigate/off-the-shelf", "Investigate/teacher-int8",
        "Investigate/terse-prompt", "Source", "Teach", "Iterate", "Iterate/tiny",
        "Iterate/small", "Look", "Launch",
    ]  # fmt: skip
    by_stage = {row["stage"]: row for row in rows}
    assert by_stage["Teach"]["took"] == "0s"
    assert by_stage["Iterate/tiny"]["took"] == "3m05s…"  # still running: elapsed so far
    assert by_stage["Look"]["took"] == "" and by_stage["Look"]["started"] == ""
    assert by_stage["Iterate/small"]["job"] == "dp-0a1b2c3d-iterate-small-a0-b998dc45"


def test_status_json_holds_each_stage_state_job_and_the_running_jobs_with_their_logs() -> None:
    found = project("progressing_iterate_training")
    shown = status.status_json(found, now=NOW)
    assert (shown["namespace"], shown["name"]) == ("ml", "intent-classifier")
    assert (shown["stage"], shown["phase"]) == ("Iterate", "Running")
    states = {(e["stage"], e["candidate"]): e["state"] for e in shown["timeline"]}
    for stage in found["status"]["stages"]:
        assert states[(stage["name"], None)] == stage["state"]
    iterate = next(e for e in shown["timeline"] if e["candidate"] == "tiny")
    assert iterate["durationSeconds"] == 185.0
    assert iterate["job"]["id"] == "dp-0a1b2c3d-iterate-tiny-a0-31d41430"
    assert iterate["job"]["dashboard"] is None  # every key present, null when unset
    assert [job["what"] for job in shown["currentJobs"]] == ["Iterate/tiny", "Iterate/small"]
    assert shown["currentJobs"][0]["logs"] == (
        "kubectl distill logs intent-classifier -n ml --stage iterate --candidate tiny"
    )
    assert shown["cost"] is None and shown["reportConfigMap"] is None
    json.dumps(shown)  # and it is JSON as is


def test_a_failed_project_shows_its_last_job_its_diagnosis_and_which_exit_condition_failed() -> (
    None
):
    found = project("degraded_source_failed")
    text = printed(status.print_timeline, found, now=NOW)
    assert "ml/intent-classifier: stage Source, phase Failed" in text
    assert "Last job: Source dp-0a1b2c3d-source-a0-339b912f (submit, Failed)" in text
    assert "logs: kubectl distill logs intent-classifier -n ml --stage source" in text
    assert "Diagnosis: Source (JobFailed)" in text
    assert "✗ DataSourced" in text and "✓ TaskDefined" in text
    assert "needs: student clears exact_match>=0.9" in text  # a pending stage's exit condition


def test_a_job_the_operator_cannot_ask_about_says_why() -> None:
    found = project("progressing_iterate_training")
    candidates = [c for s in found["status"]["stages"] for c in s.get("candidates") or []]
    tiny = next(c for c in candidates if c["name"] == "tiny")
    away = "Ray at http://127.0.0.1:8265 unreachable"
    tiny["job"].update(state="Unknown", message=away)
    text = printed(status.print_timeline, found, now=NOW)
    assert f"cannot be asked: {away}" in text
    assert status.status_json(found, now=NOW)["currentJobs"][0]["job"]["message"] == away


def test_a_live_project_names_the_router_its_rollout_and_drift() -> None:
    found = project("healthy_monitoring")
    found["status"]["serving"] = {
        "router": {"name": "router", "state": "Running", "job": {"mode": "deployment",
                   "id": "dp-0a1b2c3d-router-a0-1234abcd", "state": "Running"}},
        "endpoint": "http://10.0.0.7:8000", "service": "http://intent-classifier-router.ml.svc",
        "live": {"name": "tiny"}, "mode": "full", "revision": 3,
    }  # fmt: skip
    text = printed(status.print_timeline, found, now=NOW)
    assert "Current job: router dp-0a1b2c3d-router-a0-1234abcd (deployment, Running)" in text
    assert "--stage launch" in text
    assert "Serving: tiny at http://intent-classifier-router.ml.svc/v1/chat/completions" in text


@pytest.mark.parametrize(
    "cost",
    [
        {"stages": [{"stage": "Teach", "teacherInputTokens": 1200, "price": 0.5}],
         "total": {"price": 0.5}},
        {"stages": {"Teach": {"teacherInputTokens": 1200, "price": 0.5}}, "total": 0.5},
        {"perStage": [{"name": "Teach", "teacherInputTokens": 1200, "price": 0.5}],
         "total": {"price": 0.5, "currency": "USD"}},
    ],
    ids=["list", "map", "other-names"],
)  # fmt: skip
def test_cost_is_shown_per_stage_and_in_total_whatever_its_exact_shape(cost: Any) -> None:
    columns, rows = status.cost_rows(cost)
    assert columns[:3] == ["stage", "teacherInputTokens", "price"]
    assert rows[0][:3] == ["Teach", "1200", "0.5"]
    assert rows[-1][0] == "total" and rows[-1][2] == "0.5"
    found = project("healthy_monitoring")
    found["status"]["cost"] = cost
    assert "teacher input tokens" in printed(status.print_timeline, found, now=NOW)
    assert status.status_json(found, now=NOW)["cost"] == cost


def test_the_cost_ledger_shows_each_stage_spend_and_the_total() -> None:
    ledger = api.CostLedger.model_validate(
        {"stages": [{"name": "Teach", "attempts": 1, "acceleratorSeconds": 0,
                     "teacherInputTokens": 52000, "teacherOutputTokens": 4100},
                    {"name": "Iterate", "attempts": 2, "acceleratorSeconds": 1840.5,
                     "price": 1.2}],
         "total": {"acceleratorSeconds": 1840.5, "teacherInputTokens": 52000,
                   "teacherOutputTokens": 4100}}
    )  # fmt: skip
    found = project("healthy_monitoring")
    found["status"]["cost"] = ledger.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = printed(status.print_timeline, found, now=NOW)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "teacher input tokens" in line)
    header, cost_rows = lines[at], lines[at + 1 :]  # the cost table comes last
    headers = [cell.strip() for cell in header.split("┃")[1:-1]]
    assert headers == [
        "stage", "attempts", "accelerator seconds", "estimated accelerator seconds",
        "teacher input tokens", "teacher output tokens", "price",
    ]  # fmt: skip
    iterate = next(line for line in cost_rows if line.startswith("│ Iterate "))
    assert "1840" in iterate and "1.2" in iterate
    total = next(line for line in cost_rows if line.startswith("│ total "))
    assert "52000" in total and total.rstrip("│ ").endswith("-")  # no price: not a guess


@pytest.mark.parametrize("cost", [None, "n/a", {}, {"stages": "?"}])
def test_a_missing_or_odd_cost_prints_nothing(cost: Any) -> None:
    assert status.cost_rows(cost) == ([], [])


# --- Look's report ---------------------------------------------------------------------
def look_report() -> dict[str, str]:
    """A report as Look publishes it: a critical slice the student fails, one it passes."""
    rows = [
        SliceRow("refund-fraud", 12, 0.25, 0.3333, 0.75, 0.85, True, False, 40, 3, 40),
        SliceRow("billing", 40, 0.95, 0.975, 0.95, None, False, None, 300, 2),
        SliceRow("shipping", 30, 1.0, 1.0, 1.0, None, False, None, 200, 0),
    ]
    disagreements = [
        {"id": f"p{i}", "slice": "refund-fraud", "prompt": f"refund twice #{i}",
         "reference": "refund-fraud", "student": "refund", "teacher": "billing",
         "student_correct": False, "teacher_correct": False}
        for i in range(3)
    ] + [{"id": "b1", "slice": "billing", "prompt": "invoice", "reference": "billing",
          "student": "refund", "teacher": "billing", "student_correct": False,
          "teacher_correct": True}]  # fmt: skip
    return summary(
        rows=rows,
        disagreements=disagreements,
        overall="student tiny 0.8 vs teacher 0.85",
        diagnosis="Teach (TeacherWrongOnSlice): refund-fraud",
        table_uri="file:///a/slices.json",
    )


def test_slices_are_the_rows_look_published() -> None:
    rows = {row["slice"]: row for row in slice_rows(look_report())}
    assert rows["refund-fraud"]["student_score"] == 0.25
    assert rows["refund-fraud"]["passes"] is False
    text = printed(print_slices, list(rows.values()), title="Slices", bar_threshold=0.96)
    cells = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    }
    fraud = cells["refund-fraud (critical)"]
    assert fraud[:3] == ["12", "0.25", "0.333"] and fraud[-2:] == ["0.85", "FAIL"]
    # The others have no bar of their own: shown against the overall one, never failed.
    assert cells["billing"][-2:] == ["0.96", "below bar"]
    assert cells["shipping"][-2:] == ["0.96", "-"]


def test_the_score_bar_fills_to_the_student_shades_to_the_teacher_and_marks_the_bar() -> None:
    assert score_bar(0.25, 0.5, 0.85, width=20).plain == "█████░░░░░       ┃  "
    assert score_bar(1.0, 1.0, None, width=4).plain == "████"
    assert score_bar(None, None, 0.85).plain == "no held-out prompts"


def test_disagreements_come_most_first_with_examples_up_to_the_limit() -> None:
    groups = disagreement_groups(look_report(), limit=2)
    assert [(g["slice"], g["count"], len(g["examples"])) for g in groups] == [
        ("refund-fraud", 3, 2), ("billing", 2, 1), ("shipping", 0, 0),
    ]  # fmt: skip
    assert groups[1]["examples"][0]["teacher"] == "billing"
    text = printed(print_disagreements, groups)
    assert "refund-fraud: 3 disagreement(s) with the teacher" in text
    assert "refund twice #1" in text and "refund twice #2" not in text
    assert "No disagreements on: shipping" in text


def test_a_report_without_slices_json_says_so() -> None:
    data = look_report()
    del data["slices.json"]
    with pytest.raises(CliError, match=r"no slices\.json"):
        slice_rows(data)


# --- logs ------------------------------------------------------------------------------
def test_logs_find_the_stage_job_each_candidate_or_the_one_asked_for() -> None:
    found = project("progressing_iterate_training")
    (teach,) = stage_jobs(found, stage="Teach")
    assert teach.record["id"] == "dp-0a1b2c3d-teach-a0-b58d914b"
    both = stage_jobs(found, stage="iterate")
    assert [job.what for job in both] == ["Iterate/tiny", "Iterate/small"]
    (small,) = stage_jobs(found, stage="iterate", candidate="small")
    assert small.record["id"] == "dp-0a1b2c3d-iterate-small-a0-b998dc45"


@pytest.mark.parametrize(
    ("stage", "candidate", "message"),
    [
        ("look", None, "Look has no job yet (Pending)"),
        ("define", None, "Define has no job yet (Succeeded)"),
        ("iterate", "huge", "Iterate has no candidate 'huge' (it has: tiny, small)"),
        ("launch", None, "the router has no job yet"),
        ("drift", None, "the drift check has no job yet"),
    ],
)
def test_a_stage_without_a_job_says_so(stage: str, candidate: str | None, message: str) -> None:
    with pytest.raises(NotFoundError, match=re.escape(message)):
        stage_jobs(project("progressing_iterate_training"), stage=stage, candidate=candidate)


def test_launch_logs_are_the_routers() -> None:
    found = project("healthy_monitoring")
    found["status"]["serving"] = {
        "router": {"name": "router", "attempt": 1, "job": {"mode": "submit", "id": "r-1"}}
    }
    (router,) = stage_jobs(found, stage="launch")
    assert (router.what, router.attempt, router.record["id"]) == ("router", 1, "r-1")


def test_ray_is_asked_where_the_operator_submitted_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = copy.deepcopy(project("degraded_source_failed"))
    (job,) = stage_jobs(found, stage="source")
    monkeypatch.delenv("DISTILL_RAY_ADDRESS", raising=False)
    assert ray_address(found, job, override=None) == DEFAULT_RAY_ADDRESS
    monkeypatch.setenv("DISTILL_RAY_ADDRESS", "http://ray.env:8265")
    assert ray_address(found, job, override=None) == "http://ray.env:8265"
    found["spec"]["ray"]["address"] = "http://ray.spec:8265"
    assert ray_address(found, job, override=None) == "http://ray.spec:8265"
    record = {**job.record, "dashboard": "http://ray.used:8265/#/jobs/" + job.record["id"]}
    used = type(job)(job.what, job.attempt, record)
    assert ray_address(found, used, override=None) == "http://ray.used:8265"
    assert ray_address(found, used, override="http://127.0.0.1:18265") == "http://127.0.0.1:18265"


def test_addresses_in_dashboard_links_and_rayjob_status() -> None:
    assert dashboard_address("http://h:8265/#/jobs/abc") == "http://h:8265"
    assert dashboard_address(None) is None
    rayjob = {"metadata": {"name": "rj"}, "spec": {"jobId": "rj"},
              "status": {"dashboardURL": "rj-head-svc.ns.svc:8265", "jobId": "rj"}}  # fmt: skip
    assert rayjob_address(rayjob) == ("http://rj-head-svc.ns.svc:8265", "rj")
    assert rayjob_address({"metadata": {"name": "rj"}, "status": {}}) == (None, "rj")


def test_an_unreachable_ray_is_one_clear_error() -> None:
    with pytest.raises(
        UnreachableError, match=r"Ray at http://127.0.0.1:1 unreachable .*--ray-address"
    ):
        list(RayLogs("http://127.0.0.1:1").lines("any", follow=False))


# --- the command line ------------------------------------------------------------------
def test_the_namespace_defaults_to_the_kubeconfig_contexts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "team",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "team", "context": {"cluster": "c", "user": "u",
                                                  "namespace": "team-a"}}],
    }  # fmt: skip
    (tmp_path / "config").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    for command in ("status", "slices", "disagreements", "plan", "logs"):
        extra = {"plan": ["-f", "x.yaml"], "logs": ["--stage", "teach"]}.get(command, [])
        assert build_parser().parse_args([command, "foo", *extra]).namespace == "team-a"
    assert build_parser().parse_args(["status", "foo", "-n", "b"]).namespace == "b"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert build_parser().parse_args(["status", "foo"]).namespace == "default"


def test_no_cluster_is_one_line_on_stderr_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["slices", "foo", "-n", "team-a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distill slices: no cluster to talk to (set KUBECONFIG)")
    assert len(err.strip().splitlines()) == 1


def test_logs_follow_is_text_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "foo", "--stage", "teach", "-f", "-o", "json"]) == 1
    assert "leave out -o json" in capsys.readouterr().err


def test_an_unknown_stage_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["logs", "foo", "--stage", "brew"])
    assert exited.value.code == 2
    assert "invalid choice: 'brew'" in capsys.readouterr().err
