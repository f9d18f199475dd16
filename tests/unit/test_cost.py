"""The cost ledger in status: every ended attempt counted once, priced where the spec says."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jsonschema

from distill_jobs.contract import Spend, StageInput, StageResult
from distill_operator import crd
from distill_operator.api import ProjectSpec, ProjectStatus, Stage, StageState
from distill_operator.launch.base import JobObservation, JobState
from distill_operator.machine import SubmitJob, WriteInput
from distill_operator.stages import BY_STAGE

from .test_machine import (
    T0,
    TO_ITERATE,
    _through,
    candidate,
    candidate_result,
    entry,
    example_spec,
    of_type,
    result_for,
    results_at,
    running,
    started_source,
    step,
)

TEACH_SPEND = Spend(teacher_input_tokens=2_000_000, teacher_output_tokens=500_000)
PRICING = {"inputPerMillionTokens": 3.0, "outputPerMillionTokens": 15.0}
API_TEACHER = {
    "teacher.backend": "anthropic",
    "teacher.model": "claude",
    "teacher.apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
    "investigate.alternatives": [{"name": "terse", "kind": "prompt_variant", "prompt": "Label."}],
}
ON_GPUS = {"students.training.workers": 2, "students.training.gpusPerWorker": 1}


def stage_cost(status: ProjectStatus, stage: Stage) -> Any:
    assert status.cost is not None
    return next(e for e in status.cost.stages if e.name == stage)


def submitted(spec: ProjectSpec, status: ProjectStatus, *, generation: int = 1) -> ProjectStatus:
    """The pass that submits the recorded job(s) of the running stage."""
    decision = step(spec, status, generation=generation)
    assert of_type(decision, SubmitJob)
    return decision.status


def with_spend(result: StageResult, spent: Spend) -> StageResult:
    return result.model_copy(update={"metrics": {**result.metrics, **spent.metrics()}})


def test_a_result_is_counted_once_even_when_a_restarted_operator_reads_it_again() -> None:
    spec = example_spec()
    status = submitted(spec, started_source())
    result = with_spend(result_for(status, Stage.SOURCE), Spend(accelerator_seconds=7.5))
    counted = step(spec, status, result=result).status
    source = stage_cost(counted, Stage.SOURCE)
    assert (source.attempts, source.accelerator_seconds) == (1, 7.5)
    # The patch was lost and the pass runs again on the old status: still one attempt.
    assert step(spec, status, result=result).status.cost == counted.cost
    # The next pass sees the same result file again: the stage is over, nothing is added.
    again = step(spec, counted, result=result).status
    assert stage_cost(again, Stage.SOURCE).attempts == 1


def test_a_result_reused_for_an_unchanged_input_costs_nothing_again() -> None:
    spec = example_spec()
    status = submitted(spec, started_source())
    result = with_spend(result_for(status, Stage.SOURCE), Spend(accelerator_seconds=3.0))
    status = step(spec, status, result=result).status
    # A spec change walks the stages again; Source's input is unchanged, its result re-used.
    changed = example_spec(**{"policy.maxRetries": 4})
    restarted = step(changed, status, generation=2).status
    reused = step(changed, restarted, generation=2, result=result).status
    assert entry(reused, Stage.SOURCE).state == StageState.SUCCEEDED
    assert stage_cost(reused, Stage.SOURCE).attempts == 1
    assert stage_cost(reused, Stage.SOURCE).accelerator_seconds == 3.0


def test_a_new_input_keeps_adding_to_the_same_ledger() -> None:
    spec = example_spec()
    status = submitted(spec, started_source())
    failed = result_for(status, Stage.SOURCE, exitConditionMet=False, reason="TooFewRows")
    status = step(spec, status, result=with_spend(failed, Spend(accelerator_seconds=3.0))).status
    # The user's fix is a new input: Source runs again, and the ledger goes on adding.
    changed = example_spec(**{"source.heldOutFraction": 0.25})
    status = submitted(changed, step(changed, status, generation=2).status, generation=2)
    second = with_spend(result_for(status, Stage.SOURCE), Spend(accelerator_seconds=4.0))
    status = step(changed, status, generation=2, result=second).status
    source = stage_cost(status, Stage.SOURCE)
    assert (source.attempts, source.accelerator_seconds) == (2, 7.0)
    assert status.cost is not None and status.cost.total.accelerator_seconds == 7.0


def test_a_dead_job_is_estimated_from_its_wall_time_and_requested_gpus_then_retried() -> None:
    spec = example_spec(**ON_GPUS, **{"policy.backoffSeconds": 10})
    status = submitted(spec, _through(spec, TO_ITERATE))  # both candidates at T0
    tiny_id = candidate(status, "tiny").job.id
    died = {tiny_id: JobObservation(job_id=tiny_id, state=JobState.FAILED, message="OOM")}
    status = step(
        spec, status, now=T0 + timedelta(seconds=100), jobs=died | running(status, "small")
    ).status
    iterate = stage_cost(status, Stage.ITERATE)
    # 2 workers x 1 GPU x 100 s, marked as the operator's estimate.
    assert (iterate.attempts, iterate.accelerator_seconds) == (1, 200.0)
    assert iterate.estimated_accelerator_seconds == 200.0
    reported = [
        with_spend(candidate_result(status, name), Spend(accelerator_seconds=50.0))
        for name in ("tiny", "small")
    ]
    # The retry of tiny was not submitted yet: its result (a re-use) adds nothing; small's does.
    status = step(
        spec, status, now=T0 + timedelta(seconds=105), results=results_at(status, *reported)
    ).status
    iterate = stage_cost(status, Stage.ITERATE)
    assert (iterate.attempts, iterate.accelerator_seconds) == (2, 250.0)
    assert iterate.estimated_accelerator_seconds == 200.0


def test_a_failed_result_counts_what_it_reports() -> None:
    spec = example_spec()
    status = submitted(spec, started_source())
    failed = result_for(status, Stage.SOURCE, exitConditionMet=False, reason="TooFewRows")
    status = step(spec, status, result=with_spend(failed, Spend(accelerator_seconds=2.0))).status
    assert entry(status, Stage.SOURCE).state == StageState.FAILED
    assert stage_cost(status, Stage.SOURCE).accelerator_seconds == 2.0
    assert stage_cost(status, Stage.SOURCE).estimated_accelerator_seconds == 0.0


def test_a_refused_submit_ran_nothing_and_costs_nothing() -> None:
    spec = example_spec(**{"policy.maxRetries": 0})
    status = submitted(spec, started_source())
    job_id = entry(status, Stage.SOURCE).job.id
    status = step(spec, status, launch_errors={job_id: "no RayJob CRD"}).status
    assert status.cost is None


def test_a_spec_change_taking_over_from_a_failed_attempt_counts_every_stopped_job_once() -> None:
    spec = example_spec(**ON_GPUS)
    status = submitted(spec, _through(spec, TO_ITERATE))
    later = example_spec(**ON_GPUS, **{"students.training.learningRate": 1e-3})
    waiting = step(later, status, generation=2, jobs=running(status, "tiny", "small")).status
    tiny_id = candidate(status, "tiny").job.id
    died = {tiny_id: JobObservation(job_id=tiny_id, state=JobState.FAILED)}
    jobs = died | running(status, "small")
    taken_over = step(later, waiting, generation=2, now=T0 + timedelta(seconds=10), jobs=jobs)
    iterate = stage_cost(taken_over.status, Stage.ITERATE)
    # tiny died, small was stopped by the take-over: 2 attempts x 2 GPUs x 10 s.
    assert (iterate.attempts, iterate.accelerator_seconds) == (2, 40.0)


def through_teach(spec: ProjectSpec) -> ProjectStatus:
    status = submitted(spec, _through(spec, [Stage.SOURCE, Stage.INVESTIGATE]))
    result = with_spend(result_for(status, Stage.TEACH), TEACH_SPEND)
    return step(spec, status, result=result).status


def test_an_api_teachers_tokens_are_priced_by_teacher_pricing_and_unpriced_without_it() -> None:
    unpriced = through_teach(example_spec(**API_TEACHER))
    assert stage_cost(unpriced, Stage.TEACH).teacher_input_tokens == 2_000_000
    assert stage_cost(unpriced, Stage.TEACH).price is None
    assert unpriced.cost is not None and unpriced.cost.total.price is None
    assert "price" not in unpriced.model_dump(by_alias=True, exclude_none=True)["cost"]["total"]

    priced = through_teach(example_spec(**API_TEACHER, **{"teacher.pricing": PRICING}))
    # 2M input tokens at 3/M and 0.5M output tokens at 15/M.
    assert stage_cost(priced, Stage.TEACH).price == 6.0 + 7.5
    assert priced.cost is not None and priced.cost.total.price == 13.5


def test_a_local_teachers_tokens_are_counted_but_its_cost_is_its_accelerator_time() -> None:
    status = through_teach(example_spec())  # the example's teacher is hf
    teach = stage_cost(status, Stage.TEACH)
    assert teach.teacher_output_tokens == 500_000 and teach.price == 0.0


def test_accelerator_time_is_priced_per_hour() -> None:
    spec = example_spec(**{"students.training.pricePerAcceleratorHour": 2.0})
    status = submitted(spec, started_source())
    result = with_spend(result_for(status, Stage.SOURCE), Spend(accelerator_seconds=5400.0))
    status = step(spec, status, result=result).status
    assert stage_cost(status, Stage.SOURCE).price == 3.0  # 1.5 h x 2.0


def test_a_new_price_is_bookkeeping_and_re_runs_nothing() -> None:
    plain, priced = example_spec(), example_spec(**{"teacher.pricing": PRICING})
    for definition in BY_STAGE.values():
        assert definition.spec_excerpt(plain) == definition.spec_excerpt(priced)
    writes = [
        of_type(step(spec, _through(spec, [Stage.SOURCE, Stage.INVESTIGATE])), WriteInput)
        for spec in (plain, priced)
    ]
    hashes = [
        [StageInput.model_validate(w.stage_input).input_hash() for w in batch] for batch in writes
    ]
    assert hashes[0] == hashes[1]


def test_a_workload_that_reports_nothing_is_estimated_not_trusted_as_free() -> None:
    spec = example_spec(**ON_GPUS)
    status = submitted(spec, _through(spec, TO_ITERATE))
    silent = [candidate_result(status, name) for name in ("tiny", "small")]
    later = T0 + timedelta(seconds=30)
    status = step(spec, status, now=later, results=results_at(status, *silent)).status
    iterate = stage_cost(status, Stage.ITERATE)
    assert iterate.accelerator_seconds == iterate.estimated_accelerator_seconds == 120.0


def test_the_ledger_fits_the_crd_status_schema() -> None:
    spec = example_spec(**{"teacher.pricing": PRICING})
    status = submitted(spec, started_source())
    result = with_spend(result_for(status, Stage.SOURCE), Spend(accelerator_seconds=1.0))
    status = step(spec, status, result=result).status
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["cost"]["stages"][0] == {
        "name": "Source",
        "attempts": 1,
        "acceleratorSeconds": 1.0,
        "estimatedAcceleratorSeconds": 0.0,
        "teacherInputTokens": 0,
        "teacherOutputTokens": 0,
        "price": round(1 / 3600, 6),
    }
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    jsonschema.Draft4Validator(schema).validate(dumped)
