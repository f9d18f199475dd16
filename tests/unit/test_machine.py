"""The stage machine, without a cluster: spec + status + observations in, status + actions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from distill_jobs.contract import StageResult
from distill_operator.api import Phase, ProjectSpec, ProjectStatus, Stage, StageState
from distill_operator.launch.base import JobObservation, JobState
from distill_operator.machine import (
    Decision,
    Emit,
    Observations,
    Settings,
    StopJob,
    SubmitJob,
    WriteInput,
    reconcile,
)
from distill_operator.stages import Facts
from manifests import example_manifest

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SETTINGS = Settings(poll_seconds=5.0)


def example_spec(**overrides: Any) -> ProjectSpec:
    manifest = example_manifest(**{f"spec.{key}": value for key, value in overrides.items()})
    return ProjectSpec.model_validate(manifest["spec"])


def step(
    spec: ProjectSpec | None,
    status: ProjectStatus,
    *,
    now: datetime = T0,
    generation: int = 1,
    **observed: Any,
) -> Decision:
    obs = Observations(
        now=now, generation=generation, project="ns/demo", project_uid="0a1b2c3d-uid", **observed
    )
    return reconcile(spec, status, obs, SETTINGS)


def entry(status: ProjectStatus, stage: Stage) -> Any:
    return next(s for s in status.stages if s.name == stage)


def condition(status: ProjectStatus, kind: str) -> Any:
    return next(c for c in status.conditions if c.type == kind)


def of_type(decision: Decision, kind: type) -> list[Any]:
    return [a for a in decision.actions if isinstance(a, kind)]


def result_for(status: ProjectStatus, stage: Stage, **fields: Any) -> StageResult:
    values = {"exitConditionMet": True, "reason": "Done", "message": "ok"} | fields
    return StageResult(stage=stage.value, input_hash=entry(status, stage).input_hash, **values)


def started_investigate() -> ProjectStatus:
    return step(example_spec(), ProjectStatus()).status


def test_first_pass_defines_the_task_and_records_the_next_job_before_submitting_it() -> None:
    decision = step(example_spec(), ProjectStatus())
    status = decision.status
    define = entry(status, Stage.DEFINE)
    assert define.state == StageState.SUCCEEDED
    assert define.started_at == define.finished_at == "2026-11-23T12:00:00Z"
    assert "exact_match >= 0.9, p95 <= 300 ms, <= 0.05/1k" in define.exit_condition
    assert condition(status, "TaskDefined").status == "True"
    investigate = entry(status, Stage.INVESTIGATE)
    assert investigate.state == StageState.RUNNING
    assert investigate.job.id.startswith("dp-0a1b2c3d-investigate-a0-")
    assert investigate.result_uri.startswith("file:///tmp/distill-demo/artifacts/ns/demo/")
    assert status.stage == Stage.INVESTIGATE and status.phase == Phase.RUNNING
    assert not of_type(decision, SubmitJob), "the id is saved in status before any submit"
    [write] = of_type(decision, WriteInput)
    assert write.stage_input.stage == "Investigate"
    assert decision.requeue_after == 0


def test_a_recorded_job_that_does_not_exist_yet_is_submitted_once_with_that_id() -> None:
    status = started_investigate()
    decision = step(example_spec(), status)
    [submit] = of_type(decision, SubmitJob)
    job_id = entry(status, Stage.INVESTIGATE).job.id
    assert submit.job.job_id == job_id
    assert submit.job.entrypoint.startswith("python -m distill_jobs.evaluate --input file://")
    assert submit.mode == "submit"


def test_an_api_teachers_key_goes_to_its_jobs_by_reference_only() -> None:
    spec = example_spec(
        **{
            "teacher.backend": "anthropic",
            "teacher.model": "claude",
            "teacher.apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
        }
    )
    status = step(spec, ProjectStatus()).status
    [submit] = of_type(step(spec, status), SubmitJob)
    assert submit.secret_env == (("DISTILL_TEACHER_API_KEY", "teacher-key", "api-key"),)
    assert "teacher-key" not in status.model_dump_json()


def test_a_running_job_found_after_a_restart_is_watched_not_submitted_again() -> None:
    status = step(example_spec(), started_investigate()).status
    job_id = entry(status, Stage.INVESTIGATE).job.id
    running = JobObservation(job_id=job_id, state=JobState.RUNNING)
    decision = step(example_spec(), status, now=T0 + timedelta(seconds=30), job=running)
    assert not of_type(decision, SubmitJob)
    assert entry(decision.status, Stage.INVESTIGATE).job.state == "Running"
    assert decision.requeue_after == SETTINGS.poll_seconds


def test_a_workload_that_is_not_built_fails_its_stage_and_says_so() -> None:
    status = step(example_spec(), started_investigate()).status
    result = result_for(
        status,
        Stage.INVESTIGATE,
        exitConditionMet=False,
        reason="WorkloadNotBuilt",
        message="the Investigate workload is not built yet",
    )
    decision = step(example_spec(), status, result=result)
    status = decision.status
    assert entry(status, Stage.INVESTIGATE).state == StageState.FAILED
    assert status.phase == Phase.FAILED
    stalled = condition(status, "Stalled")
    assert stalled.status == "True" and stalled.reason == "WorkloadNotBuilt"
    assert stalled.message.startswith("Investigate failed: the Investigate workload is not built")
    assert condition(status, "AlternativesRuledOut").status == "False"
    assert condition(status, "Ready").status == "False"
    assert any(isinstance(a, Emit) and a.type == "Warning" for a in decision.actions)


def test_a_baseline_that_clears_the_bar_ends_the_project_and_skips_the_rest() -> None:
    status = step(example_spec(), started_investigate()).status
    result = result_for(status, Stage.INVESTIGATE, outcome="BaselineSufficient")
    status = step(example_spec(), status, result=result).status
    assert status.phase == Phase.BASELINE_SUFFICIENT
    assert [s.state for s in status.stages[2:]] == [StageState.SKIPPED] * 5
    assert condition(status, "Ready").status == "True"
    assert condition(status, "Reconciling").status == "False"
    later = step(example_spec(), status)
    assert not later.actions, "a finished project launches nothing more"


def test_a_failed_job_is_retried_after_backoff_with_a_new_attempt_id_then_gives_up() -> None:
    spec = example_spec(**{"policy.maxRetries": 1, "policy.backoffSeconds": 10})
    status = step(spec, started_investigate()).status
    first_id = entry(status, Stage.INVESTIGATE).job.id
    failed = JobObservation(job_id=first_id, state=JobState.FAILED, message="worker died")
    decision = step(spec, status, job=failed)
    [stop] = of_type(decision, StopJob)
    assert stop.job_id == first_id, "a failed attempt leaves nothing running"
    retry = entry(decision.status, Stage.INVESTIGATE)
    assert retry.attempt == 1 and retry.job.id != first_id and "-a1-" in retry.job.id
    assert retry.reason == "JobFailed" and "worker died" in retry.message
    assert decision.requeue_after == 10
    early = step(spec, decision.status, now=T0 + timedelta(seconds=5))
    assert not of_type(early, SubmitJob), "no submit before the backoff is over"
    due = step(spec, early.status, now=T0 + timedelta(seconds=11))
    [submit] = of_type(due, SubmitJob)
    assert submit.job.job_id == retry.job.id
    again = JobObservation(job_id=retry.job.id, state=JobState.FAILED, message="died again")
    final = step(spec, due.status, now=T0 + timedelta(seconds=20), job=again).status
    investigate = entry(final, Stage.INVESTIGATE)
    assert investigate.state == StageState.FAILED and final.phase == Phase.FAILED
    assert "gave up after 2 attempts" in investigate.message


def test_a_job_the_platform_refuses_is_retried_then_fails_naming_the_stage() -> None:
    spec = example_spec(**{"policy.maxRetries": 0})
    status = step(spec, started_investigate()).status
    refused = "RayJob CRD ray.io/v1 is not installed in the cluster"
    decision = step(spec, status, launch_error=refused)
    investigate = entry(decision.status, Stage.INVESTIGATE)
    assert investigate.state == StageState.FAILED and investigate.reason == "LaunchRefused"
    assert refused in condition(decision.status, "Stalled").message
    assert condition(decision.status, "Stalled").message.startswith("Investigate failed")


def test_a_job_past_its_deadline_is_stopped_and_retried() -> None:
    spec = example_spec(**{"policy.deadlineSeconds": 60})
    status = step(spec, started_investigate()).status
    job_id = entry(status, Stage.INVESTIGATE).job.id
    running = JobObservation(job_id=job_id, state=JobState.RUNNING)
    decision = step(spec, status, now=T0 + timedelta(seconds=61), job=running)
    [stop] = of_type(decision, StopJob)
    assert stop.job_id == job_id
    assert entry(decision.status, Stage.INVESTIGATE).reason == "DeadlineExceeded"


def test_a_task_of_two_sentences_fails_define_and_launches_nothing() -> None:
    spec = example_spec(task="Classify tickets. Also summarise them.")
    decision = step(spec, ProjectStatus())
    define = entry(decision.status, Stage.DEFINE)
    assert define.state == StageState.FAILED and define.reason == "TaskNotOneSentence"
    assert "spec.task" in define.message
    assert not of_type(decision, WriteInput) and not of_type(decision, SubmitJob)
    assert condition(decision.status, "Stalled").reason == "TaskNotOneSentence"


def test_a_missing_secret_holds_define_until_it_appears() -> None:
    missing = Facts(missing_secrets=("teacher-key/api-key",))
    decision = step(example_spec(), ProjectStatus(), facts=missing)
    define = entry(decision.status, Stage.DEFINE)
    assert define.state == StageState.PENDING and define.reason == "SecretNotFound"
    assert condition(decision.status, "Stalled").status == "True"
    assert "teacher-key/api-key" in condition(decision.status, "Stalled").message
    later = step(example_spec(), decision.status, now=T0 + timedelta(seconds=5))
    assert entry(later.status, Stage.DEFINE).state == StageState.SUCCEEDED
    assert condition(later.status, "Stalled").status == "False"


def test_an_invalid_spec_stalls_with_its_message_and_does_nothing() -> None:
    decision = step(None, ProjectStatus(), spec_error="spec.bar: Field required")
    assert not [a for a in decision.actions if not isinstance(a, Emit)]
    stalled = condition(decision.status, "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    assert "spec.bar" in stalled.message


def test_a_new_generation_stops_the_running_job_and_unchanged_inputs_keep_their_hash() -> None:
    status = step(example_spec(), started_investigate()).status
    before = entry(status, Stage.INVESTIGATE)
    # A change Investigate does not read (a rollout step) keeps its input hash.
    spec = example_spec(**{"launch.steps": [{"mode": "full"}]})
    decision = step(spec, status, generation=2)
    [stop] = of_type(decision, StopJob)
    assert stop.job_id == before.job.id
    after = entry(decision.status, Stage.INVESTIGATE)
    assert after.input_hash == before.input_hash and after.result_uri == before.result_uri
    assert decision.status.observed_generation == 2
    changed = step(example_spec(**{"bar.threshold": 0.8}), status, generation=2).status
    assert entry(changed, Stage.INVESTIGATE).input_hash != before.input_hash


def test_suspend_starts_no_job() -> None:
    decision = step(example_spec(suspend=True), ProjectStatus())
    assert decision.status.phase == Phase.SUSPENDED
    assert not of_type(decision, SubmitJob) and not of_type(decision, WriteInput)


def _through(spec: ProjectSpec, stages: list[Stage]) -> ProjectStatus:
    status = step(spec, ProjectStatus()).status
    for stage in stages:
        status = step(spec, status, result=result_for(status, stage)).status
    return status


def test_teach_refuses_to_start_until_the_teacher_terms_are_acknowledged() -> None:
    spec = example_spec(**{"teacher.termsAcknowledged": False})
    status = _through(spec, [Stage.INVESTIGATE, Stage.SOURCE])
    teach = entry(status, Stage.TEACH)
    assert teach.state == StageState.FAILED and teach.reason == "TeacherTermsNotAcknowledged"
    assert teach.job is None


def test_teach_input_carries_the_source_result_as_upstream() -> None:
    status = _through(example_spec(), [Stage.INVESTIGATE])
    decision = step(example_spec(), status, result=result_for(status, Stage.SOURCE))
    [write] = of_type(decision, WriteInput)
    assert write.stage_input.stage == "Teach"
    source_uri = entry(decision.status, Stage.SOURCE).result_uri
    assert write.stage_input.upstream == {"Source": source_uri}
    assert entry(decision.status, Stage.TEACH).state == StageState.RUNNING


def test_all_stages_passing_ends_in_monitoring_with_the_student_recorded() -> None:
    spec = example_spec()
    status = _through(spec, [Stage.INVESTIGATE, Stage.SOURCE, Stage.TEACH])
    iterate = result_for(
        status,
        Stage.ITERATE,
        metrics={"student": "tiny", "score": 0.93, "candidates": 2, "table": {"tiny": 1}},
        artifacts={"student": "file:///tmp/s"},
    )
    status = step(spec, status, result=iterate).status
    for stage in (Stage.LOOK, Stage.LAUNCH):
        status = step(spec, status, result=result_for(status, stage)).status
    status = step(spec, status).status
    assert status.phase == Phase.MONITORING
    assert status.student is not None and status.student.name == "tiny"
    assert status.student.score == pytest.approx(0.93)
    headline = entry(status, Stage.ITERATE).metrics
    assert headline == {"candidates": 2.0, "score": 0.93}, "numbers only, tables stay out"
    assert all(condition(status, s.exit_condition_type).status == "True" for s in Stage)


def test_conditions_keep_their_transition_time_until_they_flip() -> None:
    status = started_investigate()
    later = step(example_spec(), status, now=T0 + timedelta(minutes=5)).status
    assert condition(later, "TaskDefined").last_transition_time == "2026-11-23T12:00:00Z"
