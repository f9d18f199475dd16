"""The stage machine, without a cluster: spec + status + observations in, status + actions out."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from distill_jobs.contract import StageResult
from distill_operator import crd, naming
from distill_operator.api import Phase, ProjectSpec, ProjectStatus, Stage, StageState
from distill_operator.launch.base import JobObservation, JobState
from distill_operator.machine import (
    Decision,
    Emit,
    Observations,
    PublishReport,
    Settings,
    StopJob,
    SubmitJob,
    WriteInput,
    reconcile,
    timestamp,
)
from distill_operator.reconciler import OperatorSettings, Runtime, read_progress, stop_project_jobs
from distill_operator.stages import BY_STAGE, PIPELINE, RUN_ORDER, Facts
from manifests import example_manifest

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
API_PROMPT_VARIANT = {"name": "terse", "kind": "prompt_variant", "prompt": "Label only."}
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
    job: JobObservation | None = None,
    result: StageResult | None = None,
    **observed: Any,
) -> Decision:
    """One pass; ``job`` and ``result`` are short for a stage's only job and result."""
    if job is not None:
        observed["jobs"] = {job.job_id: job}
    if result is not None:
        observed["results"] = results_at(status, result)
    obs = Observations(
        now=now, generation=generation, project="ns/demo", project_uid="0a1b2c3d-uid", **observed
    )
    return reconcile(spec, status, obs, SETTINGS)


def units(status: ProjectStatus) -> list[Any]:
    return [unit for s in status.stages for unit in (s, *s.candidates)]


def results_at(status: ProjectStatus, *results: StageResult) -> dict[str, StageResult]:
    """The results keyed by where status expects them (the unit with their input hash)."""
    uri = {u.input_hash: u.result_uri for u in units(status) if u.result_uri}
    return {uri[r.input_hash]: r for r in results}


def entry(status: ProjectStatus, stage: Stage) -> Any:
    return next(s for s in status.stages if s.name == stage)


def condition(status: ProjectStatus, kind: str) -> Any:
    return next(c for c in status.conditions if c.type == kind)


def of_type(decision: Decision, kind: type) -> list[Any]:
    return [a for a in decision.actions if isinstance(a, kind)]


def result_for(status: ProjectStatus, stage: Stage, **fields: Any) -> StageResult:
    values = {"exitConditionMet": True, "reason": "Done", "message": "ok"} | fields
    return StageResult(stage=stage.value, input_hash=entry(status, stage).input_hash, **values)


def started_source() -> ProjectStatus:
    return step(example_spec(), ProjectStatus()).status


def test_first_pass_defines_the_task_and_records_the_next_job_before_submitting_it() -> None:
    decision = step(example_spec(), ProjectStatus())
    status = decision.status
    define = entry(status, Stage.DEFINE)
    assert define.state == StageState.SUCCEEDED
    assert define.started_at == define.finished_at == "2026-11-23T12:00:00Z"
    assert "exact_match >= 0.9, p95 <= 50 ms, <= 0.0015/1k" in define.exit_condition
    assert condition(status, "TaskDefined").status == "True"
    source = entry(status, Stage.SOURCE)
    assert source.state == StageState.RUNNING
    assert source.job.id.startswith("dp-0a1b2c3d-source-a0-")
    assert source.result_uri.startswith("file:///tmp/distill-demo/artifacts/ns/demo/")
    assert status.stage == Stage.SOURCE and status.phase == Phase.RUNNING
    assert not of_type(decision, SubmitJob), "the id is saved in status before any submit"
    [write] = of_type(decision, WriteInput)
    assert write.stage_input.stage == "Source"
    assert decision.requeue_after == 0


def test_a_recorded_job_that_does_not_exist_yet_is_submitted_once_with_that_id() -> None:
    status = started_source()
    decision = step(example_spec(), status)
    [submit] = of_type(decision, SubmitJob)
    job_id = entry(status, Stage.SOURCE).job.id
    assert submit.job.job_id == job_id
    assert submit.job.entrypoint.startswith("python -m distill_jobs.source --input file://")
    assert submit.mode == "submit"
    # An operator killed after recording the job but before writing its input left none:
    # the submit brings the input again, ahead of the job.
    [write] = of_type(decision, WriteInput)
    assert write.uri == submit.job.entrypoint.split("--input ")[1]
    assert decision.actions.index(write) < decision.actions.index(submit)


def test_an_api_teachers_key_goes_to_its_jobs_by_reference_only() -> None:
    spec = example_spec(
        **{
            "teacher.backend": "anthropic",
            "teacher.model": "claude",
            "teacher.apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
            "investigate.alternatives": [API_PROMPT_VARIANT],
        }
    )
    status = step(spec, ProjectStatus()).status
    [source] = of_type(step(spec, status), SubmitJob)
    assert source.secret_env == (), "Source never talks to the teacher"
    status = _through(spec, [Stage.SOURCE])
    [submit] = of_type(step(spec, status), SubmitJob)
    assert submit.secret_env == (("DISTILL_TEACHER_API_KEY", "teacher-key", "api-key"),)
    assert "teacher-key" not in status.model_dump_json()


def test_a_ray_cluster_that_carries_the_key_gets_nothing_from_the_operator() -> None:
    keyed = {
        "teacher.backend": "anthropic",
        "teacher.model": "claude",
        "teacher.apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
        "investigate.alternatives": [API_PROMPT_VARIANT],
        "ray.secretDelivery": "cluster",
    }
    spec = example_spec(**keyed, **{"launch.router": {"platform": "ray"}})
    [submit] = of_type(step(spec, _through(spec, [Stage.SOURCE])), SubmitJob)
    assert "-investigate-" in submit.job.job_id, "a job that calls the teacher"
    assert submit.secret_env == () and not submit.job.env
    assert spec.secrets_in_namespace() == {}, "the Secret lives with the Ray cluster"
    on_kubernetes = example_spec(**keyed, **{"launch.router": {"platform": "kubernetes"}})
    assert [r.name for r in on_kubernetes.secrets_in_namespace().values()] == ["teacher-key"], (
        "the router's Deployment reads it from the namespace"
    )


def test_a_running_job_found_after_a_restart_is_watched_not_submitted_again() -> None:
    status = step(example_spec(), started_source()).status
    job_id = entry(status, Stage.SOURCE).job.id
    running = JobObservation(job_id=job_id, state=JobState.RUNNING)
    decision = step(example_spec(), status, now=T0 + timedelta(seconds=30), job=running)
    assert not of_type(decision, SubmitJob)
    assert entry(decision.status, Stage.SOURCE).job.state == "Running"
    assert decision.requeue_after == SETTINGS.poll_seconds


def test_a_workload_that_is_not_built_fails_its_stage_and_says_so() -> None:
    status = step(example_spec(), started_source()).status
    result = result_for(
        status,
        Stage.SOURCE,
        exitConditionMet=False,
        reason="WorkloadNotBuilt",
        message="the Source workload is not built yet",
    )
    decision = step(example_spec(), status, result=result)
    status = decision.status
    assert entry(status, Stage.SOURCE).state == StageState.FAILED
    assert status.phase == Phase.FAILED
    stalled = condition(status, "Stalled")
    assert stalled.status == "True" and stalled.reason == "WorkloadNotBuilt"
    assert stalled.message.startswith("Source failed: the Source workload is not built")
    assert condition(status, "DataSourced").status == "False"
    assert condition(status, "Ready").status == "False"
    assert any(isinstance(a, Emit) and a.type == "Warning" for a in decision.actions)


def test_a_failed_job_is_retried_after_backoff_with_a_new_attempt_id_then_gives_up() -> None:
    spec = example_spec(**{"policy.maxRetries": 1, "policy.backoffSeconds": 10})
    status = step(spec, started_source()).status
    first_id = entry(status, Stage.SOURCE).job.id
    failed = JobObservation(job_id=first_id, state=JobState.FAILED, message="worker died")
    decision = step(spec, status, job=failed)
    [stop] = of_type(decision, StopJob)
    assert stop.job_id == first_id, "a failed attempt leaves nothing running"
    retry = entry(decision.status, Stage.SOURCE)
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
    source = entry(final, Stage.SOURCE)
    assert source.state == StageState.FAILED and final.phase == Phase.FAILED
    assert "gave up after 2 attempts" in source.message


def test_a_job_the_platform_refuses_is_retried_then_fails_naming_the_stage() -> None:
    spec = example_spec(**{"policy.maxRetries": 0})
    status = step(spec, started_source()).status
    refused = "RayJob CRD ray.io/v1 is not installed in the cluster"
    job_id = entry(status, Stage.SOURCE).job.id
    decision = step(spec, status, launch_errors={job_id: refused})
    source = entry(decision.status, Stage.SOURCE)
    assert source.state == StageState.FAILED and source.reason == "LaunchRefused"
    assert refused in condition(decision.status, "Stalled").message
    assert condition(decision.status, "Stalled").message.startswith("Source failed")


def test_a_job_past_its_deadline_is_stopped_and_retried() -> None:
    spec = example_spec(**{"policy.deadlineSeconds": 60})
    status = step(spec, started_source()).status
    job_id = entry(status, Stage.SOURCE).job.id
    running = JobObservation(job_id=job_id, state=JobState.RUNNING)
    decision = step(spec, status, now=T0 + timedelta(seconds=61), job=running)
    [stop] = of_type(decision, StopJob)
    assert stop.job_id == job_id
    assert entry(decision.status, Stage.SOURCE).reason == "DeadlineExceeded"


def test_a_job_whose_platform_cannot_be_asked_keeps_its_deadline() -> None:
    spec = example_spec(**{"policy.deadlineSeconds": 60, "policy.maxRetries": 0})
    status = step(spec, started_source()).status
    job_id = entry(status, Stage.SOURCE).job.id
    away = "cannot reach Ray's dashboard at http://127.0.0.1:8265: connection refused"
    unknown = JobObservation(job_id=job_id, state=JobState.UNKNOWN, message=away)
    waiting = step(spec, status, now=T0 + timedelta(seconds=30), job=unknown)
    source = entry(waiting.status, Stage.SOURCE)
    assert source.state == StageState.RUNNING and not of_type(waiting, SubmitJob)
    assert (source.job.state, source.job.message) == ("Unknown", away)
    failed = step(spec, waiting.status, now=T0 + timedelta(seconds=61), job=unknown)
    source = entry(failed.status, Stage.SOURCE)
    assert (source.state, source.reason) == (StageState.FAILED, "DeadlineExceeded")
    assert away in source.message
    assert condition(failed.status, "Stalled").message.startswith("Source failed")


def test_a_retry_whose_platform_is_away_is_submitted_and_its_deadline_starts_then() -> None:
    spec = example_spec(**{"policy.deadlineSeconds": 60, "policy.backoffSeconds": 1})
    status = step(spec, started_source()).status
    first = entry(status, Stage.SOURCE).job.id
    away = "Ray at http://127.0.0.1:8265 unreachable"
    unknown = JobObservation(job_id=first, state=JobState.UNKNOWN, message=away)
    status = step(spec, status, now=T0 + timedelta(seconds=61), job=unknown).status
    retry = entry(status, Stage.SOURCE).job
    assert retry.id != first and retry.submitted_at is None
    later = T0 + timedelta(seconds=63)
    unknown = JobObservation(job_id=retry.id, state=JobState.UNKNOWN, message=away)
    decision = step(spec, status, now=later, job=unknown)
    [submit] = of_type(decision, SubmitJob)
    assert submit.job.job_id == retry.id
    source = entry(decision.status, Stage.SOURCE)
    assert source.state == StageState.RUNNING and source.job.submitted_at == timestamp(later)


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


def test_a_new_generation_waits_for_the_running_stage_and_unchanged_inputs_keep_their_hash() -> (
    None
):
    status = step(example_spec(), started_source()).status
    before = entry(status, Stage.SOURCE)
    # A change Source does not read (a rollout step) keeps its input hash.
    spec = example_spec(**{"launch.steps": [{"mode": "full"}]})
    decision = step(spec, status, generation=2)
    assert not of_type(decision, StopJob), "the running stage finishes first"
    assert decision.status.observed_generation == 1
    assert decision.status.pending_generation == 2
    reconciling = condition(decision.status, "Reconciling")
    assert reconciling.reason == "SpecChangePending"
    assert reconciling.message.startswith("generation 2 is picked up when Source ends")
    done = step(spec, decision.status, generation=2, result=result_for(status, Stage.SOURCE))
    assert done.status.observed_generation == 2 and done.status.pending_generation is None
    after = entry(done.status, Stage.SOURCE)
    assert after.input_hash == before.input_hash and after.result_uri == before.result_uri
    assert not of_type(done, SubmitJob), "its result is re-used, not run again"
    changed = example_spec(**{"source.heldOutFraction": 0.25})
    moved = step(changed, status, generation=2, result=result_for(status, Stage.SOURCE)).status
    assert entry(moved, Stage.SOURCE).input_hash != before.input_hash


def test_a_new_generation_takes_over_at_once_when_the_running_attempt_fails() -> None:
    spec = example_spec(**{"policy.maxRetries": 3})
    status = step(spec, started_source()).status
    job_id = entry(status, Stage.SOURCE).job.id
    fixed = example_spec(**{"policy.maxRetries": 3, "source.heldOutFraction": 0.25})
    failed = JobObservation(job_id=job_id, state=JobState.FAILED, message="bad rows")
    decision = step(fixed, status, generation=2, job=failed)
    source = entry(decision.status, Stage.SOURCE)
    assert decision.status.observed_generation == 2
    assert source.attempt == 0 and source.job.id != job_id, "no retry of the old input"
    assert source.input_hash != entry(status, Stage.SOURCE).input_hash


def test_suspend_starts_no_job() -> None:
    decision = step(example_spec(suspend=True), ProjectStatus())
    assert decision.status.phase == Phase.SUSPENDED
    assert not of_type(decision, SubmitJob) and not of_type(decision, WriteInput)


def _through(spec: ProjectSpec, stages: list[Stage]) -> ProjectStatus:
    """Passes each stage in turn; Investigate's alternatives each miss the bar."""
    status = step(spec, ProjectStatus()).status
    for stage in stages:
        if stage == Stage.INVESTIGATE:
            results = results_at(status, *alternatives_missing(status))
            status = step(spec, status, results=results).status
        else:
            status = step(spec, status, result=result_for(status, stage)).status
    return status


def alternative_result(status: ProjectStatus, name: str, **fields: Any) -> StageResult:
    part = next(a for a in entry(status, Stage.INVESTIGATE).candidates if a.name == name)
    values = {"exitConditionMet": False, "reason": "BarMissed", "message": f"{name} misses"}
    return StageResult(stage="Investigate", input_hash=part.input_hash, **(values | fields))


def alternatives_missing(status: ProjectStatus) -> list[StageResult]:
    names = [a.name for a in entry(status, Stage.INVESTIGATE).candidates]
    return [alternative_result(status, name) for name in names]


def two_alternatives() -> ProjectSpec:
    return example_spec(
        **{
            "investigate.alternatives": [
                {"name": "teacher-int8", "kind": "quantized_teacher", "quantization": "int8"},
                {"name": "terse-prompt", "kind": "prompt_variant", "prompt": "Label only."},
            ]
        }
    )


def started_investigate(spec: ProjectSpec) -> ProjectStatus:
    return _through(spec, [Stage.SOURCE])


def test_source_runs_before_investigate_which_gets_its_held_out_set_as_upstream() -> None:
    spec = two_alternatives()
    status = started_investigate(spec)
    investigate = entry(status, Stage.INVESTIGATE)
    assert [s.name for s in status.stages][:3] == [Stage.DEFINE, Stage.INVESTIGATE, Stage.SOURCE]
    assert entry(status, Stage.SOURCE).state == StageState.SUCCEEDED
    assert investigate.state == StageState.RUNNING
    assert [a.name for a in investigate.candidates] == ["teacher-int8", "terse-prompt"]
    assert entry(status, Stage.TEACH).state == StageState.PENDING
    writes = of_type(step(spec, ProjectStatus()), WriteInput)
    assert [w.stage_input.stage for w in writes] == ["Source"]


def test_each_alternative_is_evaluated_by_its_own_job_on_sources_held_out_set() -> None:
    spec = two_alternatives()
    status = _through(spec, [])
    decision = step(spec, status, result=result_for(status, Stage.SOURCE))
    writes = {w.stage_input.spec["alternative"]["name"]: w for w in of_type(decision, WriteInput)}
    assert set(writes) == {"teacher-int8", "terse-prompt"}
    source_uri = entry(decision.status, Stage.SOURCE).result_uri
    for write in writes.values():
        assert write.stage_input.upstream == {"Source": source_uri}
        assert set(write.stage_input.spec) == {
            "task", "bar", "teacher", "teach", "alternative", "serving"
        }  # fmt: skip
    assert writes["teacher-int8"].stage_input.spec["serving"]["cpusPerWorker"] == 1
    submits = of_type(step(spec, decision.status), SubmitJob)
    assert len(submits) == 2
    assert all("distill_jobs.evaluate" in s.job.entrypoint for s in submits)
    assert {s.job.labels["distill.dev/candidate"] for s in submits} == set(writes)


def test_a_baseline_that_clears_the_bar_ends_the_project_and_skips_the_rest() -> None:
    spec = two_alternatives()
    status = started_investigate(spec)
    cleared = alternative_result(
        status,
        "teacher-int8",
        exitConditionMet=True,
        reason="BarCleared",
        message="teacher-int8 clears the bar: score 0.95 ≥ 0.9",
        metrics={"score": 0.95, "cost_per_1k_requests": 0.01},
        artifacts={"model": "/models/teacher"},
    )
    missed = alternative_result(status, "terse-prompt")
    status = step(spec, status, results=results_at(status, cleared, missed)).status
    assert status.phase == Phase.BASELINE_SUFFICIENT
    investigate = entry(status, Stage.INVESTIGATE)
    assert investigate.state == StageState.SUCCEEDED and investigate.reason == "BaselineSufficient"
    assert "serve teacher-int8" in investigate.message
    assert status.student is not None and status.student.name == "teacher-int8"
    assert status.student.uri == "/models/teacher" and status.student.score == 0.95
    later = [entry(status, s).state for s in (Stage.TEACH, Stage.ITERATE, Stage.LOOK, Stage.LAUNCH)]
    assert later == [StageState.SKIPPED] * 4
    assert condition(status, "Ready").status == "True"
    assert condition(status, "Reconciling").status == "False"
    again = step(spec, status)
    assert not [a for a in again.actions if not isinstance(a, Emit)], "nothing more runs"


def test_the_cheapest_of_two_clearing_alternatives_is_taken() -> None:
    spec = two_alternatives()
    status = started_investigate(spec)
    results = [
        alternative_result(status, name, exitConditionMet=True, reason="BarCleared",
                           metrics={"cost_per_1k_requests": cost})
        for name, cost in (("teacher-int8", 0.02), ("terse-prompt", 0.01))
    ]  # fmt: skip
    status = step(spec, status, results=results_at(status, *results)).status
    assert status.student is not None and status.student.name == "terse-prompt"


def test_every_alternative_missing_the_bar_rules_them_out_with_each_shortfall() -> None:
    spec = two_alternatives()
    status = started_investigate(spec)
    results = [
        alternative_result(status, "teacher-int8", message="teacher-int8 misses the bar: "
                           "p95 40 ms > 30 ms (over by 10 ms)"),
        alternative_result(status, "terse-prompt", message="terse-prompt misses the bar: "
                           "score 0.2 < 0.9 (short by 0.7)"),
    ]  # fmt: skip
    decision = step(spec, status, results=results_at(status, *results))
    investigate = entry(decision.status, Stage.INVESTIGATE)
    assert investigate.state == StageState.SUCCEEDED
    assert investigate.reason == "AlternativesRuledOut"
    assert "over by 10 ms" in investigate.message and "short by 0.7" in investigate.message
    assert {a.state for a in investigate.candidates} == {StageState.FAILED}
    assert condition(decision.status, "AlternativesRuledOut").status == "True"
    assert entry(decision.status, Stage.TEACH).state == StageState.RUNNING
    assert decision.status.diagnosis is None


def test_an_alternative_that_could_not_be_evaluated_is_no_evidence_and_fails_investigate() -> None:
    spec = two_alternatives()
    status = started_investigate(spec)
    results = [
        alternative_result(status, "teacher-int8", reason="QuantizationUnavailable",
                           message="int4 needs a CUDA GPU and bitsandbytes"),
        alternative_result(status, "terse-prompt"),
    ]  # fmt: skip
    status = step(spec, status, results=results_at(status, *results)).status
    investigate = entry(status, Stage.INVESTIGATE)
    assert investigate.state == StageState.FAILED
    assert investigate.reason == "AlternativeNotEvaluated"
    assert "teacher-int8: QuantizationUnavailable" in investigate.message
    assert status.phase == Phase.FAILED and entry(status, Stage.TEACH).job is None
    assert status.diagnosis is not None and status.diagnosis.stage == Stage.INVESTIGATE


def test_teach_refuses_to_start_until_the_teacher_terms_are_acknowledged() -> None:
    spec = example_spec(**{"teacher.termsAcknowledged": False})
    status = _through(spec, [Stage.SOURCE, Stage.INVESTIGATE])
    teach = entry(status, Stage.TEACH)
    assert teach.state == StageState.FAILED and teach.reason == "TeacherTermsNotAcknowledged"
    assert teach.job is None


def test_teach_input_carries_the_source_result_as_upstream() -> None:
    status = _through(example_spec(), [Stage.SOURCE])
    results = results_at(status, *alternatives_missing(status))
    decision = step(example_spec(), status, results=results)
    [write] = of_type(decision, WriteInput)
    assert write.stage_input.stage == "Teach"
    source_uri = entry(decision.status, Stage.SOURCE).result_uri
    assert write.stage_input.upstream == {"Source": source_uri}
    assert entry(decision.status, Stage.TEACH).state == StageState.RUNNING


def test_stages_passing_through_look_launch_the_chosen_student_behind_the_router() -> None:
    spec = example_spec()
    status = _through(spec, [Stage.SOURCE, Stage.INVESTIGATE, Stage.TEACH])
    tiny = candidate_result(
        status,
        "tiny",
        metrics={"score": 0.93, "parameters": 1_000_000, "table": {"tiny": 1}},
        artifacts={"student": "file:///tmp/s"},
    )
    small = candidate_result(status, "small", exitConditionMet=False, message="score 0.5 < 0.9")
    status = step(spec, status, results=results_at(status, tiny, small)).status
    status = step(spec, status, result=result_for(status, Stage.LOOK)).status
    status = step(spec, status, reports={"demo-look": entry(status, Stage.LOOK).input_hash}).status
    assert status.stage == Stage.LAUNCH and status.phase == Phase.RUNNING
    assert entry(status, Stage.LAUNCH).state == StageState.RUNNING
    assert status.serving is not None and status.serving.candidate.uri == "file:///tmp/s"
    assert status.serving.router.job.id.startswith("dp-0a1b2c3d-launch-router-")
    assert status.student is not None and status.student.name == "tiny"
    assert status.student.uri == "file:///tmp/s"
    assert status.student.score == pytest.approx(0.93)
    headline = entry(status, Stage.ITERATE).metrics
    assert headline == {"parameters": 1e6, "score": 0.93}, "numbers only, tables stay out"
    assert all(
        condition(status, s.exit_condition_type).status == "True"
        for s in Stage
        if s != Stage.LAUNCH
    )


def test_conditions_keep_their_transition_time_until_they_flip() -> None:
    status = started_investigate(example_spec())
    later = step(example_spec(), status, now=T0 + timedelta(minutes=5)).status
    assert condition(later, "TaskDefined").last_transition_time == "2026-11-23T12:00:00Z"


# --- Iterate: one job per student candidate, then the operator chooses -------------------
TO_ITERATE = [Stage.SOURCE, Stage.INVESTIGATE, Stage.TEACH]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def candidate(status: ProjectStatus, name: str) -> Any:
    return next(c for c in entry(status, Stage.ITERATE).candidates if c.name == name)


def candidate_result(status: ProjectStatus, name: str, **fields: Any) -> StageResult:
    values = {"exitConditionMet": True, "reason": "ClearsBar", "message": "ok"} | fields
    return StageResult(stage="Iterate", input_hash=candidate(status, name).input_hash, **values)


def passing(status: ProjectStatus, name: str, parameters: float, score: float) -> StageResult:
    metrics = {"parameters": parameters, "score": score, "latency_p95_ms": 3.2,
               "cost_per_1k_requests": 0.0004}  # fmt: skip
    artifacts = {"student": f"file:///tmp/students/{name}"}
    return candidate_result(status, name, metrics=metrics, artifacts=artifacts)


def running(status: ProjectStatus, *names: str) -> dict[str, JobObservation]:
    ids = [candidate(status, name).job.id for name in names]
    return {job_id: JobObservation(job_id=job_id, state=JobState.RUNNING) for job_id in ids}


def three_candidates() -> list[dict[str, Any]]:
    """The example's two candidates, then a third."""
    example = example_manifest()["spec"]["students"]["candidates"]
    return [*example, {"name": "base", "preset": "base"}]


def test_iterate_submits_one_job_per_candidate_each_with_its_own_input() -> None:
    spec = example_spec()
    status = _through(spec, [Stage.SOURCE, Stage.INVESTIGATE])
    decision = step(spec, status, result=result_for(status, Stage.TEACH))
    iterate = entry(decision.status, Stage.ITERATE)
    assert iterate.state == StageState.RUNNING and iterate.job is None
    assert [c.name for c in iterate.candidates] == ["tiny", "small"]
    assert all(c.state == StageState.RUNNING and c.attempt == 0 for c in iterate.candidates)
    ids = [c.job.id for c in iterate.candidates]
    assert len(set(ids)) == 2 and len({c.input_hash for c in iterate.candidates}) == 2
    assert all(len(i) <= 40 and DNS_LABEL.match(i) for i in ids), ids
    assert ids[0].startswith("dp-0a1b2c3d-iterate-tiny-a0-")
    writes = of_type(decision, WriteInput)
    assert [w.stage_input.spec["students"]["candidate"]["name"] for w in writes] == [
        "tiny",
        "small",
    ]
    tiny_input = writes[0].stage_input
    assert set(tiny_input.spec) == {"bar", "students"}
    assert set(tiny_input.spec["students"]) == {"training", "candidate"}
    assert tiny_input.upstream == {
        "Source": entry(status, Stage.SOURCE).result_uri,
        "Teach": entry(decision.status, Stage.TEACH).result_uri,
    }
    assert [w.uri.rsplit("/", 1)[0] for w in writes] == [
        c.result_uri.rsplit("/", 1)[0] for c in iterate.candidates
    ]
    assert not of_type(decision, SubmitJob), "ids are saved in status before any submit"
    submits = of_type(step(spec, decision.status), SubmitJob)
    assert [s.job.job_id for s in submits] == ids, "all submitted at once: Ray queues them"
    assert all(
        s.job.entrypoint.startswith("python -m distill_jobs.train --input ") for s in submits
    )
    assert submits[1].job.labels["distill.dev/candidate"] == "small"


def test_adding_a_candidate_leaves_the_others_input_hashes_and_results_as_they_were() -> None:
    def inputs(status: ProjectStatus) -> dict[str, tuple[str, str]]:
        return {
            c.name: (c.input_hash, c.result_uri) for c in entry(status, Stage.ITERATE).candidates
        }

    two = inputs(_through(example_spec(), TO_ITERATE))
    three = inputs(
        _through(example_spec(**{"students.candidates": three_candidates()}), TO_ITERATE)
    )
    assert three["tiny"] == two["tiny"] and three["small"] == two["small"]
    assert three["base"][0] not in {two["tiny"][0], two["small"][0]}
    reseeded = inputs(_through(example_spec(**{"students.training.seed": 7}), TO_ITERATE))
    assert reseeded["tiny"] != two["tiny"], "the training settings are every candidate's input"


def test_the_candidate_with_fewest_measured_parameters_is_chosen_when_both_clear_the_bar() -> None:
    spec = example_spec()
    status = _through(spec, TO_ITERATE)
    # Spec order says tiny is smaller; what the jobs measured says small is.
    tiny, small = passing(status, "tiny", 5e6, 0.95), passing(status, "small", 1.2e6, 0.91)
    decision = step(spec, status, results=results_at(status, tiny, small))
    status = decision.status
    iterate = entry(status, Stage.ITERATE)
    assert iterate.state == StageState.SUCCEEDED and iterate.reason == "StudentSelected"
    assert iterate.message == (
        "small (1.2M parameters, score 0.91 ≥ 0.90, p95 3.2 ms, 0.0004/1k requests): "
        "the smallest that clears the bar; tiny also clears it"
    )
    chosen = candidate(status, "small")
    assert (iterate.input_hash, iterate.result_uri) == (chosen.input_hash, chosen.result_uri)
    assert iterate.metrics == chosen.metrics and iterate.metrics["parameters"] == 1.2e6
    assert status.student is not None
    assert (status.student.name, status.student.uri) == ("small", "file:///tmp/students/small")
    assert status.student.score == pytest.approx(0.91)
    assert condition(status, "StudentSelected").status == "True"
    assert condition(status, "StudentSelected").reason == "StudentSelected"
    [write] = of_type(decision, WriteInput)
    assert write.stage_input.stage == "Look"
    assert write.stage_input.upstream["Iterate"] == chosen.result_uri


def test_the_larger_candidate_is_chosen_when_only_it_clears_the_bar() -> None:
    spec = example_spec()
    status = _through(spec, TO_ITERATE)
    tiny = candidate_result(
        status, "tiny", exitConditionMet=False, reason="BelowBar",
        message="score 0.71 misses exact_match >= 0.9 by 0.19", metrics={"parameters": 1e6},
    )  # fmt: skip
    status = step(spec, status, results=results_at(status, tiny)).status
    assert candidate(status, "tiny").state == StageState.FAILED
    assert entry(status, Stage.ITERATE).state == StageState.RUNNING, "small still trains"
    small = passing(status, "small", 4e6, 0.92)
    status = step(spec, status, results=results_at(status, small)).status
    iterate = entry(status, Stage.ITERATE)
    assert iterate.state == StageState.SUCCEEDED
    assert iterate.message.endswith(": the only one that clears the bar")
    assert status.student is not None and status.student.name == "small"


def test_no_candidate_clearing_the_bar_fails_iterate_with_each_candidates_message() -> None:
    spec = example_spec()
    status = _through(spec, TO_ITERATE)
    tiny = candidate_result(
        status, "tiny", exitConditionMet=False, reason="BelowBar",
        message="score 0.71 misses exact_match >= 0.9 by 0.19",
    )  # fmt: skip
    small = candidate_result(
        status, "small", exitConditionMet=False, reason="TooSlow",
        message="p95 420 ms misses 300 ms by 120 ms",
    )  # fmt: skip
    decision = step(spec, status, results=results_at(status, tiny, small))
    status = decision.status
    iterate = entry(status, Stage.ITERATE)
    assert iterate.state == StageState.FAILED and iterate.reason == "NoCandidateClearsBar"
    assert iterate.message == (
        "no candidate clears the bar — tiny: score 0.71 misses exact_match >= 0.9 by 0.19; "
        "small: p95 420 ms misses 300 ms by 120 ms"
    )
    assert status.phase == Phase.FAILED and status.student is None
    assert condition(status, "StudentSelected").status == "False"
    assert condition(status, "Stalled").reason == "NoCandidateClearsBar"
    events = [a.message for a in of_type(decision, Emit)]
    assert "Iterate/tiny Failed: score 0.71 misses exact_match >= 0.9 by 0.19" in events
    assert any(m.startswith("Iterate Failed: no candidate clears the bar") for m in events)


def test_every_candidate_weak_on_quality_is_diagnosed_as_a_source_problem() -> None:
    spec = example_spec()
    status = _through(spec, TO_ITERATE)
    weak = [
        candidate_result(status, name, exitConditionMet=False, reason="BarMissed",
                         message=f"{name} misses", metrics={"score": score})
        for name, score in (("tiny", 0.31), ("small", 0.42))
    ]  # fmt: skip
    status = step(spec, status, results=results_at(status, *weak)).status
    assert status.diagnosis is not None
    assert (status.diagnosis.stage, status.diagnosis.reason) == (Stage.SOURCE, "BroadWeakness")
    assert "best score 0.42 < 0.9" in status.diagnosis.message


def test_a_candidate_missing_only_on_latency_is_not_blamed_on_the_data() -> None:
    spec = example_spec()
    status = _through(spec, TO_ITERATE)
    results = [
        candidate_result(status, "tiny", exitConditionMet=False, reason="BarMissed",
                         message="tiny misses", metrics={"score": 0.31}),
        candidate_result(status, "small", exitConditionMet=False, reason="BarMissed",
                         message="small: p95 over", metrics={"score": 0.95}),
    ]  # fmt: skip
    status = step(spec, status, results=results_at(status, *results)).status
    assert status.diagnosis is not None and status.diagnosis.stage == Stage.ITERATE


# --- Look: the report ConfigMap, then the verdict ------------------------------------------
def at_look(spec: ProjectSpec) -> ProjectStatus:
    status = _through(spec, TO_ITERATE)
    tiny = passing(status, "tiny", 1e6, 0.93)
    small = candidate_result(status, "small", exitConditionMet=False, message="misses")
    return step(spec, status, results=results_at(status, tiny, small)).status


def look_result(status: ProjectStatus, **fields: Any) -> StageResult:
    summary = {"artifacts": {"summary": "file:///tmp/look/summary.json"}}
    return result_for(status, Stage.LOOK, **(summary | fields))


def test_look_publishes_its_report_before_it_concludes() -> None:
    spec = example_spec()
    status = at_look(spec)
    look = entry(status, Stage.LOOK)
    assert look.state == StageState.RUNNING
    result = look_result(status)
    decision = step(spec, status, result=result)
    [publish] = of_type(decision, PublishReport)
    assert (publish.name, publish.namespace) == ("demo-look", "ns")
    assert publish.summary_uri == "file:///tmp/look/summary.json"
    assert publish.input_hash == look.input_hash
    assert entry(decision.status, Stage.LOOK).state == StageState.RUNNING, "not before the report"
    assert decision.requeue_after == 0
    stale = step(spec, decision.status, result=result, reports={"demo-look": "old-hash"})
    assert of_type(stale, PublishReport), "a report of an earlier result is replaced"
    done = step(spec, decision.status, result=result, reports={"demo-look": look.input_hash})
    assert not of_type(done, PublishReport)
    look = entry(done.status, Stage.LOOK)
    assert look.state == StageState.SUCCEEDED and look.report_config_map == "demo-look"


def test_a_refused_report_still_concludes_look_with_a_warning() -> None:
    spec = example_spec()
    status = at_look(spec)
    result = look_result(status)
    refused = {"demo-look": "ConfigMap ns/demo-look: 403 Forbidden"}
    decision = step(spec, status, result=result, report_errors=refused)
    look = entry(decision.status, Stage.LOOK)
    assert look.state == StageState.SUCCEEDED and look.report_config_map is None
    assert any(e.reason == "ReportRefused" for e in of_type(decision, Emit))


def test_a_failing_look_names_the_stage_at_fault_from_its_evidence() -> None:
    spec = example_spec()
    status = at_look(spec)
    result = look_result(
        status,
        exitConditionMet=False,
        reason="SlicesBelowBar",
        message="refund-fraud 0.4 < 0.85 (short by 0.45)",
        diagnosis={"stage": "Teach", "reason": "TeacherWrongOnSlice",
                   "message": "the teacher scores 0.4 on refund-fraud"},
    )  # fmt: skip
    status = step(spec, status, result=result, reports={"demo-look": result.input_hash}).status
    assert status.phase == Phase.FAILED and entry(status, Stage.LOOK).reason == "SlicesBelowBar"
    assert status.diagnosis is not None
    assert (status.diagnosis.stage, status.diagnosis.reason) == (Stage.TEACH, "TeacherWrongOnSlice")
    assert status.student is not None and status.student.name == "tiny", "Look keeps the name"
    changed = step(example_spec(**{"bar.threshold": 0.8}), status, generation=2).status
    assert changed.diagnosis is None, "a new spec starts without the old diagnosis"


def test_every_stage_runs_after_the_stages_it_builds_on() -> None:
    assert sorted(RUN_ORDER) == sorted(d.stage for d in PIPELINE)
    for stage in RUN_ORDER:
        for earlier in BY_STAGE[stage].upstream:
            assert RUN_ORDER.index(earlier) < RUN_ORDER.index(stage), (earlier, stage)


def test_a_failed_candidate_job_is_retried_while_the_other_keeps_running() -> None:
    spec = example_spec(**{"policy.maxRetries": 1, "policy.backoffSeconds": 10})
    status = step(spec, _through(spec, TO_ITERATE)).status  # both submitted
    tiny_id, small_id = candidate(status, "tiny").job.id, candidate(status, "small").job.id
    jobs = running(status, "small") | {
        tiny_id: JobObservation(job_id=tiny_id, state=JobState.FAILED, message="worker died")
    }
    decision = step(spec, status, now=T0 + timedelta(seconds=30), jobs=jobs)
    assert [s.job_id for s in of_type(decision, StopJob)] == [tiny_id]
    tiny, small = candidate(decision.status, "tiny"), candidate(decision.status, "small")
    assert tiny.attempt == 1 and "-a1-" in tiny.job.id and tiny.reason == "JobFailed"
    assert "worker died" in tiny.message and tiny.state == StageState.RUNNING
    assert small.job.id == small_id and small.job.state == "Running" and small.attempt == 0
    assert decision.requeue_after == SETTINGS.poll_seconds
    due = step(spec, decision.status, now=T0 + timedelta(seconds=41), jobs=running(status, "small"))
    [submit] = of_type(due, SubmitJob)
    assert submit.job.job_id == tiny.job.id, "only the failed candidate is submitted again"


def test_a_candidate_out_of_retries_fails_naming_its_job_and_the_rest_are_still_chosen() -> None:
    spec = example_spec(**{"policy.maxRetries": 0})
    status = step(spec, _through(spec, TO_ITERATE)).status
    tiny_id = candidate(status, "tiny").job.id
    died = {tiny_id: JobObservation(job_id=tiny_id, state=JobState.FAILED, message="OOM killed")}
    status = step(spec, status, jobs=died | running(status, "small")).status
    tiny = candidate(status, "tiny")
    assert tiny.state == StageState.FAILED and tiny.reason == "JobFailed"
    assert tiny_id in tiny.message and "OOM killed" in tiny.message
    assert "gave up after 1 attempts" in tiny.message
    assert status.phase == Phase.RUNNING, "one candidate failing does not fail the project"
    small = passing(status, "small", 4e6, 0.92)
    status = step(spec, status, results=results_at(status, small)).status
    assert entry(status, Stage.ITERATE).state == StageState.SUCCEEDED
    assert status.student is not None and status.student.name == "small"


def test_a_refused_candidate_submit_fails_only_that_candidates_attempt() -> None:
    spec = example_spec(**{"policy.maxRetries": 0})
    status = _through(spec, TO_ITERATE)
    refused = {candidate(status, "small").job.id: "RayJob CRD ray.io/v1 is not installed"}
    decision = step(spec, status, launch_errors=refused)
    small = candidate(decision.status, "small")
    assert small.state == StageState.FAILED and small.reason == "LaunchRefused"
    assert "not installed" in small.message
    assert [s.job.job_id for s in of_type(decision, SubmitJob)] == [
        candidate(status, "tiny").job.id
    ]


def test_each_candidate_job_has_its_own_deadline() -> None:
    spec = example_spec(**{"policy.deadlineSeconds": 60, "policy.backoffSeconds": 10})
    status = step(spec, _through(spec, TO_ITERATE)).status  # both submitted at T0
    tiny_id = candidate(status, "tiny").job.id
    died = {tiny_id: JobObservation(job_id=tiny_id, state=JobState.FAILED)}
    small_runs = running(status, "small")
    status = step(spec, status, now=T0 + timedelta(seconds=5), jobs=died | small_runs).status
    status = step(spec, status, now=T0 + timedelta(seconds=20), jobs=small_runs).status
    assert candidate(status, "tiny").job.submitted_at == "2026-11-23T12:00:20Z"
    later = T0 + timedelta(seconds=61)
    decision = step(spec, status, now=later, jobs=running(status, "tiny", "small"))
    small = candidate(decision.status, "small")
    assert [s.job_id for s in of_type(decision, StopJob)] == [candidate(status, "small").job.id]
    assert small.reason == "DeadlineExceeded" and small.attempt == 1
    assert candidate(decision.status, "tiny").job.state == "Running", "tiny's clock began later"


def test_a_spec_change_waits_for_every_running_candidate_then_walks_the_stages_again() -> None:
    status = step(example_spec(), _through(example_spec(), TO_ITERATE)).status
    before = [c.name for c in entry(status, Stage.ITERATE).candidates]
    spec = example_spec(**{"students.candidates": three_candidates()})
    waiting = step(spec, status, generation=2)
    assert not of_type(waiting, StopJob)
    assert waiting.status.pending_generation == 2
    done = [candidate_result(status, name) for name in before]
    restarted = step(spec, waiting.status, generation=2, results=results_at(status, *done))
    assert restarted.status.observed_generation == 2
    assert entry(restarted.status, Stage.ITERATE).state == StageState.PENDING
    source = entry(restarted.status, Stage.SOURCE)
    assert source.input_hash == entry(status, Stage.SOURCE).input_hash, "re-used, not re-run"


def delete_project(spec: ProjectSpec, status: ProjectStatus) -> tuple[list[str], list[str]]:
    """What deleting the project stops: as reported, and as the launcher saw it."""
    body = {
        "metadata": {"namespace": "ns", "name": "demo"},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    launcher = RecordingLauncher()
    runtime = Runtime(
        kube=None,  # stopping jobs never touches the API server
        settings=OperatorSettings(),
        _submit_launchers={OperatorSettings().ray_address: launcher},
    )
    return asyncio.run(stop_project_jobs(runtime, body)), launcher.stopped


def test_a_deleted_project_stops_every_running_candidate_job() -> None:
    status = step(example_spec(), _through(example_spec(), TO_ITERATE)).status
    stopped, seen = delete_project(example_spec(), status)
    ids = [c.job.id for c in entry(status, Stage.ITERATE).candidates]
    assert stopped == ids and seen == ids


class RecordingLauncher:
    mode = "submit"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop(self, *, job_id: str, namespace: str) -> None:
        self.stopped.append(job_id)


def test_training_progress_shows_up_in_the_candidates_metrics() -> None:
    spec = example_spec()
    status = step(spec, _through(spec, TO_ITERATE)).status
    uri = candidate(status, "tiny").result_uri
    progress = {uri: {"step": 40, "loss": 1.25, "tokensPerSecond": 900.0, "phase": "train",
                      "gradNorm": float("nan")}}  # fmt: skip
    status = step(spec, status, jobs=running(status, "tiny", "small"), progress=progress).status
    assert candidate(status, "tiny").metrics == {"step": 40, "loss": 1.25, "tokensPerSecond": 900}
    assert candidate(status, "small").metrics == {}
    assert entry(status, Stage.ITERATE).message == "tiny Running, small Running"


def test_an_unreadable_progress_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "torn.json").write_text('{"step": 4')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "ok.json").write_text('{"step": 4}')
    assert read_progress(f"file://{tmp_path}/missing.json") is None
    assert read_progress(f"file://{tmp_path}/torn.json") is None
    assert read_progress(f"file://{tmp_path}/list.json") is None
    assert read_progress(f"file://{tmp_path}/ok.json") == {"step": 4}


def test_eight_candidates_with_many_numbers_fit_the_crd_status_schema() -> None:
    names = [f"candidate-{i}-with-a-long-name" for i in range(8)]
    candidates = [
        {"name": n, "preset": "tiny", "parameters": 1000 + i} for i, n in enumerate(names)
    ]
    spec = example_spec(**{"students.candidates": candidates})
    status = step(spec, _through(spec, TO_ITERATE)).status
    many = {f"metric{i:02}": float(i) for i in range(40)}
    progress = {candidate(status, n).result_uri: many | {"step": 3} for n in names}
    jobs = running(status, *names)
    status = step(spec, status, jobs=jobs, progress=progress).status
    assert all(
        len(c.metrics) == 16 and "step" in c.metrics
        for c in entry(status, Stage.ITERATE).candidates
    )
    results = [passing(status, n, 1e6 + i, 0.9) for i, n in enumerate(names)]
    results = [r.model_copy(update={"metrics": many | r.metrics}) for r in results]
    status = step(spec, status, results=results_at(status, *results)).status
    iterate = entry(status, Stage.ITERATE)
    assert iterate.state == StageState.SUCCEEDED and status.student.name == names[0]
    for c in iterate.candidates:
        assert len(c.metrics) == 16 and {"parameters", "score"} <= set(c.metrics)
        assert DNS_LABEL.match(c.job.id) and len(c.job.id) <= 40
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    jsonschema.Draft4Validator(schema).validate(dumped)
    assert len(json.dumps(dumped)) < 64 * 1024, "status stays far below etcd's object limit"
    too_many = dumped["stages"][4] | {"candidates": dumped["stages"][4]["candidates"] * 3}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema["properties"]["stages"]["items"]).validate(too_many)


def test_other_stages_status_has_no_candidates_field() -> None:
    dumped = started_source().model_dump(mode="json", by_alias=True, exclude_none=True)
    assert all("candidates" not in stage for stage in dumped["stages"])


@pytest.mark.parametrize("name", ["tiny", "abcdefg-x", "a-very-long-candidate-name-indeed", "x"])
@pytest.mark.parametrize("attempt", [0, 20])
def test_candidate_job_ids_are_dns_labels_of_at_most_40_characters(name: str, attempt: int) -> None:
    job_id = naming.job_id(
        project_uid="0a1b2c3d-uid", stage=Stage.ITERATE, attempt=attempt,
        input_hash="3e36851f00aa", part=name,
    )  # fmt: skip
    assert len(job_id) <= 40 and DNS_LABEL.match(job_id) and "--" not in job_id, job_id
    assert job_id.endswith(f"-a{attempt}-3e36851f")
