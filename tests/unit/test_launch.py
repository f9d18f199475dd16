"""Launch and the lifecycle, without a cluster: the router, the rollout, drift, re-distilling.

Each pass is fed what the handler would have seen of the router (where it listens, the
routing revision in force, its counters by revision) and of its Ray job.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from pydantic import ValidationError

from distill_jobs.contract import (
    METRIC_COMPARISONS,
    METRIC_FALLBACKS,
    METRIC_LATENCY,
    METRIC_REQUESTS,
    METRIC_REVISION,
    Endpoint,
    RoutingMode,
    StageResult,
)
from distill_operator import naming
from distill_operator.api import Phase, ProjectSpec, ProjectStatus, Stage, StageState
from distill_operator.cli import serving_lines
from distill_operator.launch.base import JobObservation, JobState, Owner
from distill_operator.machine import (
    Decision,
    Emit,
    StopJob,
    SubmitJob,
    WriteInput,
    WriteRouting,
    parse_timestamp,
    timestamp,
)
from distill_operator.reconciler import parse_spec
from distill_operator.stages.launch import RevisionCounts, RouterSeen, read_router_metrics
from manifests import example_manifest

from .test_machine import (
    SETTINGS,
    T0,
    TO_ITERATE,
    alternatives_missing,
    at_look,
    candidate_result,
    condition,
    delete_project,
    entry,
    example_spec,
    look_result,
    of_type,
    passing,
    result_for,
    results_at,
    step,
)

URL = "http://127.0.0.1:9"
ROUTING_URI = "file:///tmp/distill-demo/artifacts/ns/demo/launch/routing.json"
TINY_URI = "file:///tmp/students/tiny"
# Within every bound in every mode: shadow asks 20, canary and full 10, all agree.
GOOD = RevisionCounts(student=10, teacher=10, agree=10)
# The rollout and lifecycle every test starts from, whatever the example says.
LAUNCH = {
    "steps": [
        {"mode": "shadow", "holdSeconds": 10},
        {"mode": "canary", "percent": 50, "holdSeconds": 0},
        {"mode": "full", "holdSeconds": 0},
    ],
    "minRequests": 5,
    "minAgreement": 0.9,
    "maxFallbackRate": 0.2,
    "confidenceThreshold": -1.0,
    "router": {"platform": "ray"},  # as in the example; the kubernetes tests say so
}
ON_KUBERNETES = {"router": {"platform": "kubernetes"}}


def rollout_spec(
    *, launch: dict[str, Any] | None = None, lifecycle: dict[str, Any] | None = None, **more: Any
) -> ProjectSpec:
    """Shadow for 10 s, canary 50 %, then full, each step judged after 5 requests; no
    schedule, no automatic re-distilling, a drift check an hour (unless ``lifecycle``)."""
    return example_spec(
        launch=LAUNCH | (launch or {}),
        lifecycle=lifecycle or {},
        **{"policy.maxRetries": 1, "policy.backoffSeconds": 5} | more,
    )


# --- what a pass sees ----------------------------------------------------------------
def router_id(status: ProjectStatus) -> str:
    assert status.serving is not None and status.serving.router is not None
    assert status.serving.router.job is not None
    return status.serving.router.job.id


def running_job(job_id: str) -> dict[str, JobObservation]:
    return {job_id: JobObservation(job_id=job_id, state=JobState.RUNNING)}


def router_seen(
    status: ProjectStatus,
    *,
    revision: int | None,
    counts: RevisionCounts | None = None,
    url: str = URL,
    also: dict[str, JobObservation] | None = None,
    **observed: Any,
) -> dict[str, Any]:
    """A pass's observations of a running router that listens at ``url`` (its current
    attempt) and serves routing ``revision``, with ``counts`` counted under it; ``also``:
    other running jobs."""
    assert status.serving is not None and status.serving.router is not None
    endpoint = Endpoint(url=url, attempt=status.serving.router.attempt)
    by_revision = {revision: counts} if revision is not None and counts is not None else {}
    seen = RouterSeen(endpoint=endpoint, revision=revision, counts=by_revision)
    jobs = running_job(router_id(status)) | (also or {})
    return {"jobs": jobs, "router": seen, **observed}


def serving_now(
    status: ProjectStatus, counts: RevisionCounts | None = None, **observed: Any
) -> dict[str, Any]:
    """A running router that already serves the revision status last wrote."""
    if status.serving is None or status.serving.router is None:
        return observed
    return router_seen(status, revision=status.serving.revision, counts=counts, **observed)


def events(decision: Decision, reason: str) -> list[str]:
    return [e.message for e in of_type(decision, Emit) if e.reason == reason]


def stopped(decision: Decision) -> list[str]:
    return [stop.job_id for stop in of_type(decision, StopJob)]


# --- walking a project there -----------------------------------------------------------
def launching(spec: ProjectSpec) -> Decision:
    """The pass in which Look concludes (its report published) and Launch begins, tiny
    being the student."""
    status = at_look(spec)
    look = look_result(status)
    return step(spec, status, result=look, reports={"demo-look": look.input_hash})


def walk(
    spec: ProjectSpec, status: ProjectStatus, *, now: datetime, winner: str, **observed: Any
) -> ProjectStatus:
    """From Source running (again) to Launch begun: every stage passes on its result,
    ``winner`` is the one candidate that clears the bar; the router serves throughout."""
    for stage in TO_ITERATE:
        results = (
            alternatives_missing(status)
            if stage == Stage.INVESTIGATE
            else [result_for(status, stage)]
        )
        seen = serving_now(status, results=results_at(status, *results), **observed)
        status = step(spec, status, now=now, **seen).status
    loser = "small" if winner == "tiny" else "tiny"
    iterate = [
        passing(status, winner, 1e6, 0.93),
        candidate_result(status, loser, exitConditionMet=False, message="misses"),
    ]
    seen = serving_now(status, results=results_at(status, *iterate), **observed)
    status = step(spec, status, now=now, **seen).status
    look = look_result(status)
    reports = {"demo-look": look.input_hash}
    seen = serving_now(status, results=results_at(status, look), reports=reports, **observed)
    return step(spec, status, now=now, **seen).status


def through_rollout(
    spec: ProjectSpec, status: ProjectStatus, now: datetime, counts: RevisionCounts = GOOD
) -> tuple[ProjectStatus, datetime]:
    """Judge step after step on ``counts`` (the router picking up each revision at once)
    until Launch ends; returns the status and the time it ended."""
    for _ in range(12):
        if entry(status, Stage.LAUNCH).state.is_terminal():
            return status, now
        now += timedelta(seconds=11)
        status = step(spec, status, now=now, **serving_now(status, counts)).status
    raise AssertionError(f"Launch never ended: {entry(status, Stage.LAUNCH).message}")


def rolled_out(spec: ProjectSpec) -> tuple[ProjectStatus, datetime]:
    """tiny serving all traffic, the project Monitoring; and when that happened."""
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=None)).status
    status, now = through_rollout(spec, status, T0)
    assert status.phase == Phase.MONITORING, entry(status, Stage.LAUNCH).message
    return status, now


def drift_result(status: ProjectStatus, **fields: Any) -> dict[str, StageResult]:
    """The running drift check's result, where status expects it."""
    check = status.lifecycle.drift_check
    assert check is not None and check.result_uri is not None
    values = {"exitConditionMet": True, "reason": "NoDrift", "message": "live traffic as trained"}
    result = StageResult(stage="Launch", input_hash=check.input_hash, **(values | fields))
    return {check.result_uri: result}


def drift_checked(spec: ProjectSpec, **fields: Any) -> tuple[ProjectStatus, Decision, datetime]:
    """Rolled out, a drift check begun once due, and the pass that reads its result."""
    status, live_at = rolled_out(spec)
    now = live_at + timedelta(seconds=spec.lifecycle.drift_check_seconds + 1)
    begun = step(spec, status, now=now, **serving_now(status)).status
    check = begun.lifecycle.drift_check
    assert check is not None and check.job is not None
    now += timedelta(seconds=30)
    done = step(
        spec,
        begun,
        now=now,
        **serving_now(begun, also=running_job(check.job.id), results=drift_result(begun, **fields)),
    )
    return begun, done, now


DRIFTED = {
    "exitConditionMet": False,
    "reason": "Drifted",
    "message": "slice mix moved: sliceShift 0.35 > 0.2",
    "metrics": {"sliceShift": 0.35, "lengthShift": 0.05, "liveRows": 800},
}


# --- the router ---------------------------------------------------------------------
def test_launch_starts_a_router_on_the_teacher_that_no_deadline_stops() -> None:
    spec = rollout_spec(launch=ON_KUBERNETES)
    decision = launching(spec)
    status = decision.status
    launch = entry(status, Stage.LAUNCH)
    assert launch.state == StageState.RUNNING and launch.reason == "Started"
    [write] = [w for w in of_type(decision, WriteInput) if w.stage_input.stage == "Launch"]
    assert set(write.stage_input.spec) == {"teacher", "router", "maxOutputTokens"}
    assert write.stage_input.spec["maxOutputTokens"] == spec.teach.max_output_tokens
    assert write.stage_input.spec["teacher"]["model"] == "/tmp/distill-demo/teacher"
    # On kubernetes (the default) every interface of the pod, on a port a Service targets.
    assert write.stage_input.spec["router"] == {
        "platform": "kubernetes", "host": "0.0.0.0", "port": 8000}  # fmt: skip
    assert write.uri.startswith("file:///tmp/distill-demo/artifacts/ns/demo/launch/")
    assert router_id(status).startswith("dp-0a1b2c3d-launch-router-a0-")
    assert not of_type(decision, SubmitJob), "the router's id is saved before it is submitted"

    submitted = step(spec, status, now=T0 + timedelta(seconds=1))
    [submit] = of_type(submitted, SubmitJob)
    assert submit.job.job_id == router_id(status)
    assert submit.job.entrypoint.startswith("python -m distill_jobs.serve --input file://")
    assert submit.job.labels["distill.dev/stage"] == "Launch"
    assert submit.mode == "deployment" and submit.job.owner == Owner("demo", "0a1b2c3d-uid")

    past_deadline = T0 + timedelta(seconds=spec.policy.deadline_seconds * 3)
    still = step(spec, submitted.status, now=past_deadline, jobs=running_job(router_id(status)))
    assert not of_type(still, StopJob) and not of_type(still, SubmitJob)
    router = still.status.serving.router
    assert router.state == StageState.RUNNING and router.attempt == 0
    assert router.job.state == "Running" and router.reason == "Started"
    assert still.requeue_after == SETTINGS.poll_seconds


def test_a_router_on_ray_is_a_job_of_the_project_s_ray_mode_on_loopback() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    [write] = [w for w in of_type(launching(spec), WriteInput) if w.stage_input.stage == "Launch"]
    assert write.stage_input.spec["router"] == {"platform": "ray", "host": "127.0.0.1", "port": 0}
    [submit] = of_type(step(spec, status, now=T0 + timedelta(seconds=1)), SubmitJob)
    assert submit.mode == "submit"
    listening = step(spec, status, **router_seen(status, revision=None))
    assert listening.status.serving.endpoint and listening.status.serving.service is None


def test_a_router_token_goes_to_the_router_only_and_by_reference() -> None:
    token = {"name": "router-token", "key": "token"}
    spec = rollout_spec(launch={"router": {"platform": "kubernetes", "tokenSecretRef": token}})
    decision = launching(spec)
    [write] = [w for w in of_type(decision, WriteInput) if w.stage_input.stage == "Launch"]
    assert write.stage_input.spec["router"]["tokenSecretRef"] == token  # no value: a name
    [submit] = of_type(step(spec, decision.status, now=T0 + timedelta(seconds=1)), SubmitJob)
    assert submit.secret_env == (("DISTILL_ROUTER_TOKEN", "router-token", "token"),)
    assert "DISTILL_ROUTER_TOKEN" not in submit.job.env


def test_a_router_on_kubernetes_names_its_service_for_clients() -> None:
    spec = rollout_spec(launch=ON_KUBERNETES)
    status = launching(spec).status
    listening = step(spec, status, **router_seen(status, revision=None))
    assert listening.status.serving.endpoint == URL
    assert listening.status.serving.service == "http://demo-router.ns.svc"


def test_a_router_that_fails_to_start_has_its_deployment_deleted() -> None:
    spec = rollout_spec(launch=ON_KUBERNETES)
    status = step(spec, launching(spec).status, now=T0 + timedelta(seconds=1)).status
    result = StageResult(
        stage="Launch",
        input_hash=status.serving.router.input_hash,
        exit_condition_met=False,
        reason="TeacherUnavailable",
        message="spec.teacher.model: no such directory",
    )
    failed = step(spec, status, results={status.serving.router.result_uri: result})
    assert [s.job_id for s in of_type(failed, StopJob)] == [router_id(status)]
    assert failed.status.serving.router.state == StageState.FAILED
    assert entry(failed.status, Stage.LAUNCH).reason == "TeacherUnavailable"


# --- routing --------------------------------------------------------------------------
def test_the_router_is_told_the_first_step_each_pass_until_it_serves_that_revision() -> None:
    spec = rollout_spec(launch={"confidenceThreshold": -0.5})
    status = launching(spec).status
    assert status.serving.endpoint is None
    waiting = step(spec, status)
    assert not of_type(waiting, WriteRouting), "nowhere to route before the router listens"

    listening = step(spec, waiting.status, **router_seen(status, revision=None))
    [write] = of_type(listening, WriteRouting)
    assert write.uri == ROUTING_URI
    routing = write.routing
    assert (routing.revision, routing.mode, routing.percent) == (1, RoutingMode.SHADOW, 0)
    assert (routing.student, routing.student_name) == (TINY_URI, "tiny")
    assert routing.confidence_threshold == -0.5
    status = listening.status
    assert status.serving.endpoint == URL
    launch = entry(status, Stage.LAUNCH)
    assert launch.message == "step 1/3 (shadow): waiting for the router to serve revision 1"
    assert status.serving.step_started_at is None, "the step's clock starts once it is served"

    older = step(spec, status, **router_seen(status, revision=0))
    assert [w.routing.revision for w in of_type(older, WriteRouting)] == [1], "written again"
    served = step(spec, older.status, **router_seen(status, revision=1))
    assert not of_type(served, WriteRouting)
    assert served.status.serving.step_started_at == "2026-11-23T12:00:00Z"


# --- a rollout that advances ------------------------------------------------------------
def test_a_rollout_holds_each_step_until_judged_and_held_then_goes_live() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=1)).status
    passed: list[str] = []

    def at(seconds: float, revision: int, counts: RevisionCounts) -> Decision:
        now = T0 + timedelta(seconds=seconds)
        decision = step(
            spec, status, now=now, **router_seen(status, revision=revision, counts=counts)
        )
        passed.extend(events(decision, "StepPassed"))
        return decision

    # Below minRequests even a poor agreement is not judged yet.
    few = at(1, 1, RevisionCounts(teacher=3, agree=1, disagree=2))
    status = few.status
    launch = entry(status, Stage.LAUNCH)
    assert launch.state == StageState.RUNNING and status.serving.step == 0
    assert "3 student requests" in launch.message and "judged after 5" in launch.message
    assert status.serving.metrics["studentRequests"] == 3

    enough = RevisionCounts(teacher=20, agree=19, disagree=1)
    holding = at(5, 1, enough)
    status = holding.status
    assert status.serving.step == 0 and status.serving.revision == 1
    assert "holds 5s more" in entry(status, Stage.LAUNCH).message
    assert holding.requeue_after == 5
    assert status.serving.metrics["agreement"] == 0.95

    advanced = at(11, 1, enough)
    status = advanced.status
    serving = status.serving
    assert (serving.step, serving.revision, serving.mode, serving.percent) == (1, 2, "canary", 50)
    assert serving.step_started_at is None and serving.metrics == {}
    assert advanced.requeue_after == 0
    assert passed[-1].startswith("Launch: step 1/3 (shadow) passed (20 student requests")
    assert passed[-1].endswith("; next canary 50%")

    told = at(12, 1, enough)
    [write] = of_type(told, WriteRouting)
    assert (write.routing.revision, write.routing.mode, write.routing.percent) == (2, "canary", 50)
    status = told.status
    status = at(13, 2, RevisionCounts(student=8, fallbacks=1, agree=3)).status
    assert (status.serving.step, status.serving.revision, status.serving.mode) == (2, 3, "full")
    assert status.serving.percent == 100

    done = at(14, 3, RevisionCounts(student=6, agree=1))
    status = done.status
    launch = entry(status, Stage.LAUNCH)
    assert launch.state == StageState.SUCCEEDED and launch.reason == "RolledOut"
    assert launch.message.startswith("tiny serves all traffic after shadow -> canary 50% -> full")
    assert status.phase == Phase.MONITORING and status.stage == Stage.LAUNCH
    serving = status.serving
    assert serving.live is not None and (serving.live.name, serving.live.uri) == ("tiny", TINY_URI)
    assert serving.candidate is None and serving.step is None
    assert (serving.mode, serving.percent, serving.revision) == ("full", 100, 3)
    launched = condition(status, "StudentLaunched")
    assert (launched.status, launched.reason) == ("True", "RolledOut")
    assert launched.message.startswith("student serving behind the router (shadow -> 50% -> full)")
    assert condition(status, "Ready").status == "True"
    assert condition(status, "Reconciling").status == "False"
    assert condition(status, "Stalled").status == "False"
    assert len(passed) == 2 and passed[1].startswith("Launch: step 2/3 (canary 50%) passed")
    assert not stopped(done), "the router goes on serving the live student"


# --- a rollout that rolls back ------------------------------------------------------------
def assert_rolled_back(decision: Decision, *words: str) -> ProjectStatus:
    status = decision.status
    launch = entry(status, Stage.LAUNCH)
    assert launch.state == StageState.FAILED and launch.reason == "RolledBack"
    for word in words:
        assert word in launch.message, (word, launch.message)
    assert status.phase == Phase.FAILED
    stalled = condition(status, "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "RolledBack")
    assert stalled.message.startswith("Launch failed: ")
    assert condition(status, "StudentLaunched").status == "False"
    assert status.diagnosis is not None
    assert (status.diagnosis.stage, status.diagnosis.reason) == (Stage.LAUNCH, "RolledBack")
    assert not stopped(decision), "the router stays up to serve what is left"
    return status


def test_a_canary_falling_back_too_often_rolls_back_to_the_teacher() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=1)).status
    now = T0 + timedelta(seconds=11)
    status = step(spec, status, now=now, **router_seen(status, revision=1, counts=GOOD)).status
    assert status.serving.step == 1
    bad = RevisionCounts(student=4, fallbacks=6, agree=4)
    decision = step(spec, status, now=now, **router_seen(status, revision=2, counts=bad))
    status = assert_rolled_back(
        decision,
        "tiny rolled back at step 2/3 (canary 50%)",
        "fallback rate 0.60 > 0.2",
        "10 student requests",
        "traffic is back on the teacher",
    )
    assert status.diagnosis.message == entry(status, Stage.LAUNCH).message
    serving = status.serving
    assert serving.candidate is None and serving.live is None
    assert (serving.mode, serving.percent, serving.revision) == ("teacher", 0, 3)
    assert any(e.type == "Warning" for e in of_type(decision, Emit))

    later = step(spec, status, now=now, **router_seen(status, revision=2))
    [write] = of_type(later, WriteRouting)
    assert (write.routing.revision, write.routing.mode) == (3, RoutingMode.TEACHER)
    assert write.routing.student is None and write.routing.student_name is None
    assert later.status.phase == Phase.FAILED


def test_a_shadow_step_disagreeing_with_the_teacher_rolls_back() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=1)).status
    poor = RevisionCounts(teacher=20, agree=10, disagree=10)
    decision = step(spec, status, **router_seen(status, revision=1, counts=poor))
    status = assert_rolled_back(
        decision,
        "tiny rolled back at step 1/3 (shadow)",
        "agreement 0.50 < 0.9",
        "over 20 compared",
        "traffic is back on the teacher",
    )
    assert status.serving.mode == "teacher" and status.serving.revision == 2


def test_a_rollback_in_a_redistillation_returns_all_traffic_to_the_live_student() -> None:
    spec = rollout_spec(lifecycle={"schedule": "0 * * * *"})
    status, _ = rolled_out(spec)
    hour = datetime(2026, 11, 23, 13, 0, tzinfo=T0.tzinfo)
    status = step(spec, status, now=hour, **serving_now(status)).status
    assert status.lifecycle.redistillations == 1 and status.phase == Phase.RUNNING
    status = step(spec, status, now=hour, **serving_now(status)).status  # Source again
    status = walk(spec, status, now=hour, winner="small")
    serving = status.serving
    assert serving.live.name == "tiny" and serving.candidate.name == "small"
    assert (serving.mode, serving.step) == ("shadow", 0)
    poor = RevisionCounts(teacher=20, agree=10, disagree=10)
    decision = step(spec, status, now=hour, **serving_now(status, poor))
    status = assert_rolled_back(
        decision, "small rolled back at step 1/3 (shadow)", "traffic is back on tiny"
    )
    serving = status.serving
    assert serving.live.name == "tiny" and serving.candidate is None
    assert (serving.mode, serving.percent) == ("full", 100)
    later = step(spec, status, now=hour, **router_seen(status, revision=serving.revision - 1))
    [write] = of_type(later, WriteRouting)
    assert write.routing.mode == RoutingMode.FULL and write.routing.percent == 100
    assert (write.routing.student, write.routing.student_name) == (TINY_URI, "tiny")
    # The project is Failed (Launch names the fault), but the live student is still
    # watched: the next hour's schedule loops back once more.
    assert status.phase == Phase.FAILED
    next_hour = hour + timedelta(hours=1)
    again = step(spec, status, now=next_hour, **serving_now(status)).status
    assert again.lifecycle.redistillations == 2 and again.phase == Phase.RUNNING
    assert again.lifecycle.last_trigger.reason == "Scheduled"
    source = step(spec, again, now=next_hour, **serving_now(again)).status
    assert entry(source, Stage.SOURCE).state == StageState.RUNNING


# --- the router failing ------------------------------------------------------------------
def test_a_crashed_router_restarts_as_a_new_attempt_after_the_backoff() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=1)).status
    first = router_id(status)
    crashed = {first: JobObservation(job_id=first, state=JobState.FAILED, message="worker died")}
    now = T0 + timedelta(seconds=20)
    decision = step(spec, status, now=now, jobs=crashed)
    assert stopped(decision) == [first]
    router = decision.status.serving.router
    assert router.state == StageState.RUNNING and router.attempt == 1
    assert "-a1-" in router.job.id and router.job.id != first
    assert router.reason == "JobFailed" and "worker died" in router.message
    assert router.next_attempt_at == "2026-11-23T12:00:25Z"  # policy.backoffSeconds 5
    [write] = of_type(decision, WriteInput)
    assert write.stage_input.attempt == 1 and "router" in write.stage_input.spec
    assert any(e.type == "Warning" and e.reason == "JobFailed" for e in of_type(decision, Emit))
    assert entry(decision.status, Stage.LAUNCH).state == StageState.RUNNING
    assert decision.requeue_after == 5

    early = step(spec, decision.status, now=now + timedelta(seconds=3))
    assert not of_type(early, SubmitJob), "no submit before the backoff is over"
    due = step(spec, early.status, now=now + timedelta(seconds=6))
    [submit] = of_type(due, SubmitJob)
    assert submit.job.job_id == router.job.id
    assert submit.job.entrypoint.startswith("python -m distill_jobs.serve")
    status = due.status
    listening = step(
        spec,
        status,
        now=now + timedelta(seconds=9),
        **router_seen(status, revision=None, url="http://127.0.0.1:10"),
    )
    assert listening.status.serving.endpoint == "http://127.0.0.1:10"
    assert [w.routing.revision for w in of_type(listening, WriteRouting)] == [1]


def test_a_crashed_routers_address_is_not_shown_while_its_next_attempt_starts() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=1)).status
    assert status.serving.endpoint == URL
    first = router_id(status)
    crashed = {first: JobObservation(job_id=first, state=JobState.FAILED, message="worker died")}
    # The old attempt's endpoint file is still there; nothing answers at it any more.
    dead = RouterSeen(endpoint=Endpoint(url=URL, attempt=0), error=f"the router at {URL}: refused")
    decision = step(spec, status, now=T0 + timedelta(seconds=20), jobs=crashed, router=dead)
    assert decision.status.serving.router.attempt == 1
    assert decision.status.serving.endpoint is None, "the crashed attempt's address is dead"


def test_a_live_students_router_out_of_retries_is_not_reported_ready() -> None:
    spec = rollout_spec(**{"policy.maxRetries": 0})
    status, live_at = rolled_out(spec)
    first = router_id(status)
    crashed = {first: JobObservation(job_id=first, state=JobState.FAILED, message="worker died")}
    decision = step(spec, status, now=live_at + timedelta(seconds=5), jobs=crashed)
    status = decision.status
    assert status.serving.router.state == StageState.FAILED
    assert status.serving.endpoint is None
    assert any("gave up after 1 attempts" in m for m in events(decision, "JobFailed"))
    # Nothing answers the live student's traffic any more: the project must not say Ready.
    assert condition(status, "Ready").status == "False"
    stalled = condition(status, "Stalled")
    assert stalled.status == "True" and "router" in stalled.message


def test_a_router_that_cannot_start_fails_launch_with_its_reason() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=None)).status
    router = status.serving.router
    message = "the teacher at /tmp/distill-demo/teacher did not load: out of memory"
    failed = StageResult(
        stage="Launch",
        input_hash=router.input_hash,
        exitConditionMet=False,
        reason="TeacherUnavailable",
        message=message,
    )
    decision = step(
        spec,
        status,
        now=T0 + timedelta(seconds=5),
        jobs={router.job.id: JobObservation(job_id=router.job.id, state=JobState.SUCCEEDED)},
        results={router.result_uri: failed},
    )
    status = decision.status
    launch = entry(status, Stage.LAUNCH)
    assert launch.state == StageState.FAILED and launch.reason == "TeacherUnavailable"
    assert launch.message == f"the router failed: {message}"
    assert status.phase == Phase.FAILED
    assert condition(status, "Stalled").reason == "TeacherUnavailable"
    assert status.diagnosis is not None and status.diagnosis.stage == Stage.LAUNCH
    assert status.serving.router.state == StageState.FAILED
    assert status.serving.endpoint is None and status.serving.candidate is None
    assert not of_type(decision, SubmitJob), "a router that says why it cannot start is not retried"


# --- drift checks ------------------------------------------------------------------------
def test_no_drift_check_runs_before_drift_check_seconds_then_a_monitor_job_checks() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    status, live_at = rolled_out(spec)
    assert status.lifecycle.next_drift_check_at == timestamp(live_at + timedelta(seconds=600))
    early = step(spec, status, now=live_at + timedelta(seconds=300), **serving_now(status))
    assert not of_type(early, WriteInput) and not of_type(early, SubmitJob)
    assert early.status.lifecycle.drift_checks == 0

    due = step(spec, early.status, now=live_at + timedelta(seconds=601), **serving_now(status))
    [write] = of_type(due, WriteInput)
    assert write.stage_input.stage == "Launch" and write.stage_input.spec["check"] == 1
    source = entry(status, Stage.SOURCE).result_uri
    assert write.stage_input.upstream == {"Source": source}
    check = due.status.lifecycle.drift_check
    assert check is not None and check.name == "drift-1" and check.state == StageState.RUNNING
    assert due.status.lifecycle.drift_checks == 1
    assert not stopped(due)

    submitted = step(spec, due.status, now=live_at + timedelta(seconds=602), **serving_now(status))
    [submit] = of_type(submitted, SubmitJob)
    assert submit.job.job_id == check.job.id
    assert submit.job.entrypoint.startswith("python -m distill_jobs.monitor --input file://")


def test_a_check_that_finds_no_drift_says_so_in_a_condition() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    _, done, _ = drift_checked(spec, metrics={"sliceShift": 0.05, "lengthShift": 0.02})
    status = done.status
    drifted = condition(status, "Drifted")
    assert (drifted.status, drifted.reason) == ("False", "NoDrift")
    assert drifted.message == "live traffic as trained"
    assert status.lifecycle.drifted is False
    assert status.lifecycle.drift == {"sliceShift": 0.05, "lengthShift": 0.02}
    assert status.phase == Phase.MONITORING and status.diagnosis is None
    assert not events(done, "Drifted")


def test_drift_without_auto_redistill_is_reported_and_nothing_runs_again() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    _, done, now = drift_checked(spec, **DRIFTED)
    status = done.status
    drifted = condition(status, "Drifted")
    assert (drifted.status, drifted.reason) == ("True", "Drifted")
    assert drifted.message == "slice mix moved: sliceShift 0.35 > 0.2"
    assert status.lifecycle.drift == {"sliceShift": 0.35, "lengthShift": 0.05}
    assert events(done, "Drifted")[-1] == "tiny: slice mix moved: sliceShift 0.35 > 0.2"
    assert any(e.type == "Warning" for e in of_type(done, Emit) if e.reason == "Drifted")
    assert status.diagnosis is not None
    assert (status.diagnosis.stage, status.diagnosis.reason) == (Stage.LAUNCH, "Drifted")
    assert status.lifecycle.redistillations == 0 and status.lifecycle.last_trigger is None
    assert status.phase == Phase.MONITORING
    assert entry(status, Stage.SOURCE).state == StageState.SUCCEEDED
    again = step(spec, status, now=now + timedelta(seconds=1), **serving_now(status))
    assert not of_type(again, WriteInput) and not of_type(again, SubmitJob)
    assert not stopped(done) and not stopped(again)


def test_drift_with_auto_redistill_loops_back_to_source_on_fresh_traffic() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600, "autoRedistill": True})
    begun, done, now = drift_checked(spec, **DRIFTED)
    before = entry(begun, Stage.SOURCE)
    status = done.status
    lifecycle = status.lifecycle
    assert lifecycle.redistillations == 1
    assert lifecycle.last_trigger is not None and lifecycle.last_trigger.reason == "Drifted"
    assert lifecycle.last_trigger.message == "slice mix moved: sliceShift 0.35 > 0.2"
    assert events(done, "Redistilling") == ["Drifted: slice mix moved: sliceShift 0.35 > 0.2"]
    assert status.phase == Phase.RUNNING
    assert status.diagnosis is not None and status.diagnosis.reason == "Drifted", "kept visible"
    assert entry(status, Stage.DEFINE).state == StageState.SUCCEEDED
    assert entry(status, Stage.LAUNCH).state == StageState.PENDING
    assert status.serving.live.name == "tiny" and status.serving.mode == "full"
    assert router_id(begun) not in stopped(done), "the router keeps serving the live student"

    again = step(spec, status, now=now, **serving_now(status))
    source = entry(again.status, Stage.SOURCE)
    assert source.state == StageState.RUNNING
    assert source.input_hash != before.input_hash, "a new snapshot of the traffic"
    [write] = of_type(again, WriteInput)
    assert write.stage_input.stage == "Source" and write.stage_input.spec["snapshot"] == 1
    assert again.status.serving.live.name == "tiny"
    assert router_id(begun) not in stopped(again)
    assert not of_type(again, WriteRouting), "the live student's routing is left alone"


# --- live agreement ----------------------------------------------------------------------
def test_a_live_student_disagreeing_with_the_teacher_counts_as_drift() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    status, live_at = rolled_out(spec)
    now = live_at + timedelta(seconds=601)
    begun = step(spec, status, now=now, **serving_now(status)).status
    check = begun.lifecycle.drift_check
    live = RevisionCounts(student=300, agree=10, disagree=20)
    done = step(
        spec,
        begun,
        now=now + timedelta(seconds=30),
        **serving_now(
            begun,
            live,
            also=running_job(check.job.id),
            results=drift_result(begun, metrics={"sliceShift": 0.01}),
        ),
    )
    lifecycle = done.status.lifecycle
    assert lifecycle.drifted is True
    assert lifecycle.drift_message == "live agreement 0.33 < 0.9 over 30 compared requests"
    assert lifecycle.drift == {"sliceShift": 0.01, "liveAgreement": 0.3333}
    assert condition(done.status, "Drifted").status == "True"
    assert done.status.diagnosis.reason == "Drifted"
    assert events(done, "Drifted")[-1].startswith("tiny: live agreement 0.33")


def test_live_agreement_over_too_few_comparisons_is_not_drift() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    status, live_at = rolled_out(spec)
    now = live_at + timedelta(seconds=601)
    begun = step(spec, status, now=now, **serving_now(status)).status
    check = begun.lifecycle.drift_check
    few = RevisionCounts(student=300, agree=1, disagree=3)  # 4 < minRequests 5
    done = step(
        spec,
        begun,
        now=now + timedelta(seconds=30),
        **serving_now(begun, few, also=running_job(check.job.id), results=drift_result(begun)),
    )
    assert done.status.lifecycle.drifted is False
    assert done.status.lifecycle.drift["liveAgreement"] == 0.25


# --- the schedule --------------------------------------------------------------------------
def test_a_cron_schedule_redistills_at_the_time_it_names() -> None:
    spec = rollout_spec(lifecycle={"schedule": "0 * * * *"})
    status, _ = rolled_out(spec)
    assert status.lifecycle.next_scheduled_at == "2026-11-23T13:00:00Z"
    half = datetime(2026, 11, 23, 12, 30, tzinfo=T0.tzinfo)
    waiting = step(spec, status, now=half, **serving_now(status))
    assert waiting.status.lifecycle.redistillations == 0
    assert not of_type(waiting, WriteInput)
    hour = parse_timestamp("2026-11-23T13:00:00Z")
    decision = step(spec, waiting.status, now=hour, **serving_now(status))
    lifecycle = decision.status.lifecycle
    assert lifecycle.redistillations == 1
    assert lifecycle.last_trigger is not None
    assert (lifecycle.last_trigger.reason, lifecycle.last_trigger.at) == (
        "Scheduled",
        "2026-11-23T13:00:00Z",
    )
    assert "0 * * * *" in lifecycle.last_trigger.message
    assert events(decision, "Redistilling")[0].startswith("Scheduled: ")
    assert decision.status.phase == Phase.RUNNING
    assert entry(decision.status, Stage.SOURCE).state == StageState.PENDING
    assert not stopped(decision)


def test_a_schedule_that_is_not_cron_is_refused_naming_the_field() -> None:
    manifest = example_manifest(**{"spec.lifecycle": {"schedule": "every hour"}})
    with pytest.raises(ValidationError) as caught:
        ProjectSpec.model_validate(manifest["spec"])
    assert "lifecycle.schedule" in str(caught.value)
    spec, message = parse_spec(manifest["spec"])
    assert spec is None and message is not None
    assert message.startswith("spec.lifecycle.schedule: ") and "'every hour'" in message


# --- spec changes after a rollout ----------------------------------------------------------
def test_a_change_only_to_launch_reuses_every_result_and_reroutes_the_live_student() -> None:
    spec = rollout_spec()
    status, live_at = rolled_out(spec)
    hashes = {s.name: s.input_hash for s in status.stages}
    router = router_id(status)
    changed = rollout_spec(launch={"confidenceThreshold": -0.25})
    now = live_at + timedelta(seconds=60)
    restarted = step(changed, status, now=now, generation=2, **serving_now(status))
    assert not stopped(restarted), "the router's input (teacher, address) is the same"
    status = restarted.status
    assert status.observed_generation == 2
    assert entry(status, Stage.SOURCE).input_hash == hashes[Stage.SOURCE]
    status = walk(changed, status, now=now, winner="tiny", generation=2)
    assert {s.name: s.input_hash for s in status.stages if s.name != Stage.LAUNCH} == {
        name: value for name, value in hashes.items() if name != Stage.LAUNCH
    }
    launch = entry(status, Stage.LAUNCH)
    assert launch.state == StageState.SUCCEEDED and launch.reason == "StudentUnchanged"
    assert launch.message == "tiny already serves all traffic"
    assert status.phase == Phase.MONITORING
    serving = status.serving
    assert serving.live.name == "tiny" and serving.candidate is None
    assert (serving.mode, serving.percent, serving.revision) == ("full", 100, 4)
    assert router_id(status) == router
    told = step(
        changed,
        status,
        now=now,
        generation=2,
        **router_seen(status, revision=serving.revision - 1),
    )
    [write] = of_type(told, WriteRouting)
    assert (write.routing.revision, write.routing.mode) == (4, RoutingMode.FULL)
    assert write.routing.student == TINY_URI and write.routing.confidence_threshold == -0.25


def test_a_new_teacher_model_gets_a_new_router_and_the_old_one_is_stopped() -> None:
    spec = rollout_spec()
    status, live_at = rolled_out(spec)
    old = router_id(status)
    changed = rollout_spec(**{"teacher.model": "/tmp/distill-demo/teacher-v2"})
    decision = step(
        changed, status, now=live_at + timedelta(seconds=60), generation=2, **serving_now(status)
    )
    assert stopped(decision) == [old]
    router = decision.status.serving.router
    assert router.state == StageState.RUNNING and router.job.id != old
    assert router.job.id.startswith("dp-0a1b2c3d-launch-router-a0-")
    routers = [w for w in of_type(decision, WriteInput) if "router" in w.stage_input.spec]
    assert [w.stage_input.spec["teacher"]["model"] for w in routers] == [
        "/tmp/distill-demo/teacher-v2"
    ]
    assert decision.status.serving.endpoint is None, "until the new router listens"
    assert decision.status.serving.live.name == "tiny"


# --- suspend --------------------------------------------------------------------------------
def test_suspend_holds_the_rollout_but_keeps_the_router() -> None:
    spec = rollout_spec()
    status = launching(spec).status
    status = step(spec, status, **router_seen(status, revision=1, counts=GOOD)).status
    assert status.serving.step == 0 and status.serving.step_started_at is not None
    suspended = rollout_spec(suspend=True)
    later = T0 + timedelta(seconds=60)
    decision = step(
        suspended, status, now=later, generation=2, **router_seen(status, revision=1, counts=GOOD)
    )
    status = decision.status
    assert status.phase == Phase.SUSPENDED
    assert (status.serving.step, status.serving.revision) == (0, 1), "no step advances"
    assert entry(status, Stage.LAUNCH).state == StageState.RUNNING
    assert not stopped(decision) and not events(decision, "StepPassed")
    assert status.serving.router.state == StageState.RUNNING


def test_suspend_starts_no_drift_check_but_keeps_the_router() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    status, live_at = rolled_out(spec)
    suspended = rollout_spec(suspend=True, lifecycle={"driftCheckSeconds": 600})
    decision = step(
        suspended,
        status,
        now=live_at + timedelta(seconds=3600),
        generation=2,
        **serving_now(status),
    )
    assert decision.status.phase == Phase.SUSPENDED
    assert decision.status.lifecycle.drift_checks == 0
    assert not of_type(decision, WriteInput) and not of_type(decision, SubmitJob)
    assert not stopped(decision)
    assert decision.status.serving.live.name == "tiny"


# --- deletion ----------------------------------------------------------------------------
def test_a_deleted_project_stops_its_router_and_a_running_drift_check() -> None:
    spec = rollout_spec(lifecycle={"driftCheckSeconds": 600})
    status, live_at = rolled_out(spec)
    status = step(spec, status, now=live_at + timedelta(seconds=601), **serving_now(status)).status
    check = status.lifecycle.drift_check
    assert check is not None and check.job is not None
    stopped, seen = delete_project(spec, status)
    assert stopped == [router_id(status), check.job.id] == seen


# --- the router's metrics -----------------------------------------------------------------
def test_the_routers_prometheus_metrics_are_read_as_counts_by_revision() -> None:
    registry = CollectorRegistry()
    requests = Counter(METRIC_REQUESTS, "answered", ["revision", "served_by"], registry=registry)
    fallbacks = Counter(METRIC_FALLBACKS, "fell back", ["revision"], registry=registry)
    comparisons = Counter(METRIC_COMPARISONS, "compared", ["revision", "agree"], registry=registry)
    latency = Histogram(METRIC_LATENCY, "seconds", ["model"], registry=registry)
    revision = Gauge(METRIC_REVISION, "in force", registry=registry)
    requests.labels(revision="1", served_by="student").inc(7)
    requests.labels(revision="1", served_by="teacher").inc(3)
    fallbacks.labels(revision="1").inc(2)
    comparisons.labels(revision="1", agree="true").inc(4)
    comparisons.labels(revision="1", agree="false").inc(1)
    requests.labels(revision="2", served_by="teacher").inc(5)
    latency.labels(model="student").observe(0.02)
    revision.set(2)
    endpoint = Endpoint(url=URL, attempt=1)
    seen = read_router_metrics(generate_latest(registry).decode(), endpoint)
    assert seen.endpoint == endpoint and seen.revision == 2 and seen.error is None
    assert seen.counts == {
        1: RevisionCounts(student=7, teacher=3, fallbacks=2, agree=4, disagree=1),
        2: RevisionCounts(teacher=5),
    }
    assert seen.counts[1].comparisons == 5
    assert seen.counts[1].asked_student("canary") == 9
    assert seen.counts[2].asked_student("shadow") == 5


def test_a_router_that_counted_nothing_yet_reports_only_its_revision() -> None:
    registry = CollectorRegistry()
    Counter(METRIC_REQUESTS, "answered", ["revision", "served_by"], registry=registry)
    Gauge(METRIC_REVISION, "in force", registry=registry)
    seen = read_router_metrics(generate_latest(registry).decode(), Endpoint(url=URL, attempt=0))
    assert seen.revision == 0 and seen.counts == {}


def test_a_router_on_kubernetes_needs_a_fixed_port_for_its_service() -> None:
    with pytest.raises(ValidationError, match="needs a fixed port"):
        rollout_spec(launch={"router": {"platform": "kubernetes", "port": 0}})
    on_ray = rollout_spec(launch={"router": {"platform": "ray", "port": 0}})
    assert on_ray.launch.router.bind() == ("127.0.0.1", 0)


def test_distill_status_points_clients_at_the_service_when_there_is_one() -> None:
    spec = rollout_spec(launch=ON_KUBERNETES)
    status = launching(spec).status
    seen = step(spec, status, **router_seen(status, revision=None)).status
    lines = serving_lines(seen.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert lines[0].startswith(
        "Serving: no student (the teacher answers) at http://demo-router.ns.svc/v1"
    )


@pytest.mark.parametrize(
    ("project", "service"),
    [
        ("intents", "intents-router"),
        ("team.intents", "team-intents-router"),  # a DNS-1035 label has no dots
        ("7-eleven", "r7-eleven-router"),  # nor a leading digit
    ],
)
def test_the_router_service_is_a_name_kubernetes_accepts(project: str, service: str) -> None:
    assert naming.router_service(project) == service


def test_a_long_project_name_gets_a_shortened_router_service_name_that_stays_apart() -> None:
    first, second = naming.router_service("a" * 200), naming.router_service("a" * 199 + "b")
    assert len(first) == len(second) == 63 and first != second
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", first)
