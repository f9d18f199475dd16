"""The operator's metrics and log lines, without a cluster: what one pass changed, what a
scrape shows, and what a log line carries."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from distill_operator.api import (
    CandidateStatus,
    JobRecord,
    Phase,
    ProjectSpec,
    ProjectStatus,
    ServiceJobStatus,
    Serving,
    Stage,
    StageState,
    StageStatus,
)
from distill_operator.machine import Observations, Settings, reconcile
from distill_operator.telemetry import (
    AttemptFailed,
    Finished,
    OperatorMetrics,
    ProjectBook,
    about_project,
    changes,
    configure_logging,
)
from distill_operator.telemetry.transitions import UnitKind
from manifests import example_manifest

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
JOB = JobRecord(mode="submit", id="dp-1-teach-0")


def stage(name: Stage, state: StageState, **fields: Any) -> StageStatus:
    return StageStatus(name=name, state=state, **fields)


def project(*stages: StageStatus, **fields: Any) -> ProjectStatus:
    return ProjectStatus(stages=list(stages), **fields)


RUNNING_TEACH = stage(
    Stage.TEACH, StageState.RUNNING, started_at="2026-11-23T12:00:00Z", job=JOB, attempt=0
)


def finished_teach(state: StageState, reason: str) -> StageStatus:
    return RUNNING_TEACH.model_copy(
        update={"state": state, "reason": reason, "finished_at": "2026-11-23T12:30:00Z"}
    )


# --- what one pass changed ----------------------------------------------------------------


def test_a_stage_that_finishes_in_a_pass_is_timed_from_start_to_finish() -> None:
    after = project(finished_teach(StageState.SUCCEEDED, "Filtered"))
    assert changes(project(RUNNING_TEACH), after).finished == (
        Finished(UnitKind.STAGE, "Teach", "Succeeded", 1800.0),
    )


def test_a_restarted_operator_reading_a_finished_stage_counts_nothing_again() -> None:
    done = project(finished_teach(StageState.FAILED, "JobFailed"))
    assert changes(done, done.model_copy(deep=True)) == changes(project(), project())
    assert not changes(done, done).finished and not changes(done, done).failed_attempts


def test_a_stage_skipped_without_running_has_no_duration() -> None:
    skipped = stage(Stage.LAUNCH, StageState.SKIPPED, reason="Skipped")
    assert changes(project(stage(Stage.LAUNCH, StageState.PENDING)), project(skipped)) == (
        changes(project(), project())
    )


def test_a_retried_job_is_one_failed_attempt_with_the_machines_reason() -> None:
    retry = RUNNING_TEACH.model_copy(
        update={
            "attempt": 1,
            "reason": "DeadlineExceeded",
            "job": JOB.model_copy(update={"id": "x"}),
        }
    )
    seen = changes(project(RUNNING_TEACH), project(retry))
    assert seen.failed_attempts == (AttemptFailed("Teach", "DeadlineExceeded"),)
    assert seen.finished == ()


def test_a_unit_that_gives_up_is_a_failed_attempt_and_a_failed_stage() -> None:
    seen = changes(project(RUNNING_TEACH), project(finished_teach(StageState.FAILED, "JobFailed")))
    assert seen.failed_attempts == (AttemptFailed("Teach", "JobFailed"),)
    assert seen.finished == (Finished(UnitKind.STAGE, "Teach", "Failed", 1800.0),)


def test_a_stage_without_a_job_of_its_own_fails_without_a_failed_attempt() -> None:
    """Iterate's candidates run the jobs; the stage failing is not one more job failure."""
    started = {"started_at": "2026-11-23T12:00:00Z"}
    candidate = CandidateStatus(name="tiny", state=StageState.RUNNING, job=JOB, **started)
    lost = candidate.model_copy(
        update={
            "state": StageState.FAILED,
            "reason": "JobFailed",
            "finished_at": "2026-11-23T12:00:09Z",
        }
    )
    before = project(stage(Stage.ITERATE, StageState.RUNNING, candidates=[candidate], **started))
    after = project(
        stage(
            Stage.ITERATE, StageState.FAILED, reason="NoCandidatePasses", candidates=[lost],
            finished_at="2026-11-23T12:01:00Z", **started,
        )
    )  # fmt: skip
    seen = changes(before, after)
    assert seen.failed_attempts == (AttemptFailed("Iterate", "JobFailed"),)
    assert set(seen.finished) == {
        Finished(UnitKind.STAGE, "Iterate", "Failed", 60.0),
        Finished(UnitKind.CANDIDATE, "Iterate", "Failed", 9.0),
    }


def test_a_crashed_router_that_restarts_counts_under_launch_and_never_finishes() -> None:
    router = ServiceJobStatus(name="router", state=StageState.RUNNING, job=JOB)
    restarted = router.model_copy(update={"attempt": 1, "reason": "JobFailed"})
    seen = changes(
        project(serving=Serving(router=router)), project(serving=Serving(router=restarted))
    )
    assert seen.failed_attempts == (AttemptFailed("Launch", "JobFailed"),)
    assert seen.finished == ()


def test_a_hand_edited_timestamp_gives_no_duration_instead_of_a_failed_pass() -> None:
    odd = finished_teach(StageState.SUCCEEDED, "Filtered").model_copy(
        update={"finished_at": "yesterday"}
    )
    assert changes(project(RUNNING_TEACH), project(odd)).finished == ()


def test_the_real_machine_first_pass_finishes_define_and_a_refused_launch_fails_the_next() -> None:
    spec = ProjectSpec.model_validate(example_manifest(**{"spec.policy.maxRetries": 0})["spec"])

    def one_pass(status: ProjectStatus, **observed: Any) -> ProjectStatus:
        obs = Observations(now=T0, generation=1, project="ns/p", project_uid="0a1b2c3d", **observed)
        return reconcile(spec, status, obs, Settings()).status

    first = one_pass(ProjectStatus())
    seen = changes(ProjectStatus(), first)
    assert Finished(UnitKind.STAGE, "Define", "Succeeded", 0.0) in seen.finished
    running = [s for s in first.stages if s.state == StageState.RUNNING]
    jobs = [u.job.id for s in running for u in (s, *s.candidates) if u.job is not None]
    assert jobs, "Define passed and the next stage chose its jobs"

    refused = one_pass(first, launch_errors=dict.fromkeys(jobs, "403: forbidden"))
    failed = changes(first, refused).failed_attempts
    assert failed and {a.reason for a in failed} == {"LaunchRefused"}


# --- what a scrape shows -------------------------------------------------------------------


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


def scrape(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample ``/metrics`` would show, served for real on a loopback port."""
    server = metrics.serve(host="127.0.0.1", port=0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_projects_are_counted_by_phase_and_stage_and_leave_when_forgotten(
    metrics: OperatorMetrics,
) -> None:
    teaching = ProjectStatus(phase=Phase.RUNNING, stage=Stage.TEACH)
    with metrics.tracking("a/one"):
        metrics.saw("a/one", uid="u-1", status=teaching)
        metrics.saw("b/two", uid="u-2", status=teaching)
        metrics.saw("b/three", uid="u-3", status=ProjectStatus())
        samples = scrape(metrics)
        assert samples[("distill_projects", (("phase", "Running"), ("stage", "Teach")))] == 2
        assert samples[("distill_projects", (("phase", "Pending"), ("stage", "")))] == 1
    samples = scrape(metrics)
    assert samples[("distill_projects", (("phase", "Running"), ("stage", "Teach")))] == 1


def test_a_pass_observes_durations_and_failures_and_moves_the_project(
    metrics: OperatorMetrics,
) -> None:
    before = project(RUNNING_TEACH, phase=Phase.RUNNING, stage=Stage.TEACH)
    after = project(
        finished_teach(StageState.FAILED, "JobFailed"), phase=Phase.FAILED, stage=Stage.TEACH
    )
    metrics.passed("ns/p", uid="u-1", before=before, after=after)
    metrics.launched(stage="Teach", mode="rayjob")
    with metrics.reconcile_seconds.time():
        pass
    samples = scrape(metrics)
    failed = (("outcome", "Failed"), ("stage", "Teach"))
    assert samples[("distill_stage_duration_seconds_count", failed)] == 1
    assert samples[("distill_stage_duration_seconds_sum", failed)] == 1800.0
    assert (
        samples[("distill_job_failures_total", (("reason", "JobFailed"), ("stage", "Teach")))] == 1
    )
    assert samples[("distill_job_launches_total", (("mode", "rayjob"), ("stage", "Teach")))] == 1
    assert samples[("distill_reconcile_duration_seconds_count", ())] == 1
    assert samples[("distill_projects", (("phase", "Failed"), ("stage", "Teach")))] == 1


def test_two_operators_in_one_process_keep_their_own_registries() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.launched(stage="Teach", mode="submit")
    assert ("distill_job_launches_total", (("mode", "submit"), ("stage", "Teach"))) not in scrape(
        second
    )


# --- what a log line carries ------------------------------------------------------------------


@pytest.fixture
def book() -> ProjectBook:
    book = ProjectBook()
    book.see("team-a/tickets", uid="u-1", phase="Running", stage="Teach")
    return book


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: give pytest's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def json_lines(book: ProjectBook) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(log_format="json", verbose=False, book=book, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def kopf_object_logger(namespace: str, name: str, uid: str = "u-1") -> kopf.ObjectLogger:
    """The logger kopf hands a handler (it references the object), posting no events."""
    body = kopf.Body(
        {
            "apiVersion": "distill.dev/v1alpha1",
            "kind": "DistillationProject",
            "metadata": {"namespace": namespace, "name": name, "uid": uid},
        }
    )
    return kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())


def test_a_kopf_object_line_is_one_json_object_naming_project_and_stage(
    json_lines: io.StringIO,
) -> None:
    kopf_object_logger("team-a", "tickets").info("submitted job %s (%s)", "dp-1", "submit")
    (line,) = lines(json_lines)
    assert line["message"] == "submitted job dp-1 (submit)"
    assert line["level"] == "INFO" and line["logger"] == "kopf.objects"
    assert line["project"] == "team-a/tickets" and line["stage"] == "Teach"
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert set(line) == {"time", "level", "logger", "message", "project", "stage"}


def test_lines_logged_inside_a_projects_loop_name_it_and_the_operators_own_do_not(
    json_lines: io.StringIO, book: ProjectBook
) -> None:
    logging.getLogger("kopf.activities.startup").info("starting")
    with about_project("team-a/tickets", uid="u-1"):
        logging.getLogger("urllib3.connectionpool").warning("retrying")
        book.see("team-a/tickets", uid="u-1", phase="Running", stage="Iterate")
        logging.getLogger("distill").info("later", extra={"attempt": 2})
    operator_line, retrying, later = lines(json_lines)
    assert "project" not in operator_line and "stage" not in operator_line
    assert (retrying["project"], retrying["stage"]) == ("team-a/tickets", "Teach")
    assert (later["stage"], later["attempt"]) == ("Iterate", 2), "the stage as of the line"


def test_a_project_not_seen_yet_has_a_null_stage_and_a_traceback_stays_in_its_line(
    json_lines: io.StringIO,
) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        kopf_object_logger("team-b", "new", uid="u-9").exception("handler failed")
    (line,) = lines(json_lines)
    assert line["project"] == "team-b/new" and line["stage"] is None
    assert "RuntimeError: boom" in line["exc_info"]


def test_text_lines_put_project_and_stage_before_the_message(book: ProjectBook) -> None:
    stream = io.StringIO()
    configure_logging(log_format="text", verbose=True, book=book, stream=stream)
    kopf_object_logger("team-a", "tickets").debug("polled")
    logging.getLogger("kopf.reactor").info("watching")
    polled, watching = stream.getvalue().splitlines()
    assert polled.endswith(" DEBUG kopf.objects [team-a/tickets Teach] polled")
    assert watching.endswith(" INFO kopf.reactor watching")


def test_an_unknown_log_format_is_refused_by_name(book: ProjectBook) -> None:
    with pytest.raises(ValueError, match=r"'yaml'.*text, json"):
        configure_logging(log_format="yaml", verbose=False, book=book)


def test_a_deleted_projects_last_lines_keep_its_stage_and_a_namesake_does_not_inherit_it(
    json_lines: io.StringIO,
) -> None:
    metrics = OperatorMetrics()
    configure_logging(log_format="json", verbose=False, book=metrics.projects, stream=json_lines)
    with metrics.tracking("team-a/tickets"):
        metrics.saw("team-a/tickets", uid="u-1", status=ProjectStatus(stage=Stage.LOOK))
    kopf_object_logger("team-a", "tickets", uid="u-1").info("Handler 'stop_jobs' succeeded.")
    kopf_object_logger("team-a", "tickets", uid="u-2").info("Handler 'wake' succeeded.")
    deleted, recreated = lines(json_lines)
    assert deleted["stage"] == "Look"
    assert recreated["project"] == "team-a/tickets" and recreated["stage"] is None
    assert metrics.projects.counts() == {}, "gone from the gauge all the same"
