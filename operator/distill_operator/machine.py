"""The pure stage machine: (spec, status, observations) → (status, actions).

It never calls an API: the handler observes (the jobs whose ids status names, the
results at the URIs status names, the Secrets the spec references), calls
:func:`reconcile`, patches the status it returns and then carries out its actions.
Because job ids and result URIs are written into status *before* a job is submitted, a
pass interrupted at any point is simply repeated by the next one, and no job is ever
submitted twice.

What runs one job per attempt is a unit (:class:`JobRunStatus`): a stage, or one part of
a stage split into parts (Iterate's student candidates, each trained by its own job).
Every unit goes through the same lifecycle (submit, watch, deadline, retry, result); a
split stage chooses among its parts once all of them are done.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from distill_jobs.contract import (
    ROUTER_TOKEN_ENV,
    TEACHER_API_KEY_ENV,
    Routing,
    Spend,
    StageInput,
    StageResult,
    routing_uri,
)
from distill_operator import ledger, naming
from distill_operator.api import (
    CandidateStatus,
    Diagnosis,
    JobRecord,
    JobRunStatus,
    Phase,
    ProjectSpec,
    ProjectStatus,
    ServiceJobStatus,
    Serving,
    Stage,
    StageState,
    StageStatus,
    Student,
    Trigger,
)
from distill_operator.api.status import MAX_JOB_MESSAGE
from distill_operator.conditions import Problem, derive_conditions
from distill_operator.diagnosis import diagnose
from distill_operator.launch.base import (
    DEPLOYMENT_MODE,
    JobObservation,
    JobSpec,
    JobState,
    Owner,
)
from distill_operator.stages import (
    BY_STAGE,
    PIPELINE,
    RUN_ORDER,
    Facts,
    StageDefinition,
    Verdict,
    launch,
)
from distill_operator.stages.iterate import PROGRESS_METRICS, SELECTION_METRICS

# Numbers kept first when status has room for only some of a result's or progress report's.
KEY_METRICS = SELECTION_METRICS + PROGRESS_METRICS

# Allowed stage-state transitions; anything else is a bug in the machine.
TRANSITIONS: dict[StageState, frozenset[StageState]] = {
    StageState.PENDING: frozenset({StageState.RUNNING, StageState.SUCCEEDED,
                                   StageState.FAILED, StageState.SKIPPED}),
    StageState.RUNNING: frozenset({StageState.SUCCEEDED, StageState.FAILED, StageState.PENDING}),
    StageState.SUCCEEDED: frozenset({StageState.PENDING}),
    StageState.FAILED: frozenset({StageState.PENDING}),
    StageState.SKIPPED: frozenset({StageState.PENDING}),
}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Timings of the machine; settings, so tests never shorten production code."""

    poll_seconds: float = 5.0
    driver_cpus: float = 0.1


@dataclass(frozen=True)
class Observations:
    """What the handler saw for this pass, of every unit that has a job running.

    Attributes:
        jobs: by job id; a job that does not exist (yet) is absent.
        results: by result URI; a result not written yet is absent.
        progress: by result URI, what a running job reports beside its result.
        launch_errors: by job id, why the platform refused its submit in the last pass.
        reports: by ConfigMap name, the input hash a published report was made from,
            for the reports of running stages (:func:`wanted_reports`) that exist.
        report_errors: by ConfigMap name, why publishing it was refused in the last pass.
    """

    now: datetime
    generation: int
    project: str
    project_uid: str
    facts: Facts = field(default_factory=Facts)
    jobs: Mapping[str, JobObservation] = field(default_factory=dict)
    results: Mapping[str, StageResult] = field(default_factory=dict)
    progress: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    spec_error: str | None = None
    launch_errors: Mapping[str, str] = field(default_factory=dict)
    reports: Mapping[str, str] = field(default_factory=dict)
    report_errors: Mapping[str, str] = field(default_factory=dict)
    router: launch.RouterSeen = field(default_factory=launch.RouterSeen)


@dataclass(frozen=True)
class WriteInput:
    uri: str
    stage_input: StageInput


@dataclass(frozen=True)
class SubmitJob:
    """Submit ``job``; ``secret_env`` names Secret keys resolved into its env at submit
    time, so key values never pass through status, the machine or the input file."""

    mode: str
    job: JobSpec
    secret_env: tuple[tuple[str, str, str], ...] = ()  # (env var, Secret name, key)


@dataclass(frozen=True)
class StopJob:
    mode: str
    job_id: str
    namespace: str


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event on the project."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class PublishReport:
    """Create or update the ConfigMap ``name`` from a result's summary (a JSON object of
    strings at ``summary_uri``), marked with the input hash it was made from."""

    name: str
    namespace: str
    stage: Stage
    summary_uri: str
    input_hash: str


@dataclass(frozen=True)
class WriteRouting:
    """Tell the router what to do now (it polls the file)."""

    uri: str
    routing: Routing


Action = WriteInput | SubmitJob | StopJob | Emit | PublishReport | WriteRouting


@dataclass(frozen=True)
class Decision:
    status: ProjectStatus
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def reconcile(
    spec: ProjectSpec | None, status: ProjectStatus, obs: Observations, settings: Settings
) -> Decision:
    """One reconcile pass. ``spec`` is None when it failed validation (``obs.spec_error``)."""
    run = _Pass(status.model_copy(deep=True), obs, settings)
    run.advance(spec)
    return run.decision()


def wanted_reports(status: ProjectStatus, *, name: str) -> list[str]:
    """The ConfigMaps whose presence a pass must observe: the reports of running stages."""
    return [
        naming.report_name(project=name, stage=entry.name)
        for entry in status.stages
        if entry.state == StageState.RUNNING and BY_STAGE[entry.name].report
    ]


def stage_units(status: ProjectStatus) -> list[JobRunStatus]:
    """What has a stage job now or soon: the running stage, or the running parts of it."""
    units: list[JobRunStatus] = []
    for entry in status.stages:
        if entry.state == StageState.RUNNING:
            units += [entry, *(c for c in entry.candidates if c.state == StageState.RUNNING)]
    return [unit for unit in units if unit.job is not None]


def service_units(status: ProjectStatus) -> list[ServiceJobStatus]:
    """The lifecycle's running jobs: the router, and a drift check."""
    units = [status.serving.router if status.serving else None, status.lifecycle.drift_check]
    return [u for u in units if u and u.state == StageState.RUNNING and u.job is not None]


def running_units(status: ProjectStatus) -> list[JobRunStatus]:
    """Every job the project has now or soon: observed each pass, stopped on deletion."""
    return [*stage_units(status), *service_units(status)]


def router_dir(status: ProjectStatus) -> str | None:
    """Where the running router writes its endpoint (its stage directory)."""
    router = status.serving.router if status.serving else None
    if router is None or router.state != StageState.RUNNING or router.result_uri is None:
        return None
    return router.result_uri.rsplit("/", 1)[0]


class _Superseded(Exception):
    """A deferred spec change takes over: the running stage's attempt has ended."""


@dataclass(frozen=True)
class _Unit:
    """One unit of a stage's work and the stage it belongs to; ``entry`` is updated in place."""

    definition: StageDefinition
    entry: JobRunStatus

    @property
    def part(self) -> str | None:
        entry = self.entry
        return entry.name if isinstance(entry, CandidateStatus | ServiceJobStatus) else None

    @property
    def label(self) -> str:
        """How events and messages name it: ``Teach``, ``Iterate/tiny``."""
        stage = self.definition.stage.value
        return f"{stage}/{self.part}" if self.part else stage


def _unit(entry: StageStatus) -> _Unit:
    return _Unit(BY_STAGE[entry.name], entry)


@dataclass
class _Pass:
    status: ProjectStatus
    obs: Observations
    settings: Settings
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None
    problem: Problem | None = None
    spec: ProjectSpec | None = None
    deferring: bool = False  # a new generation waits for the running stage to end

    @property
    def namespace(self) -> str:
        return self.obs.project.split("/", 1)[0]

    def decision(self) -> Decision:
        self.status.conditions = derive_conditions(
            self.status, self.obs.generation, timestamp(self.obs.now), self.problem
        )
        return Decision(self.status, tuple(self.actions), self.requeue_after)

    # --- the pass -------------------------------------------------------------------
    def advance(self, spec: ProjectSpec | None) -> None:
        if not self.status.stages:
            self.status.stages = [StageStatus(name=d.stage) for d in PIPELINE]
        if spec is None:
            message = self.obs.spec_error or "the spec is invalid"
            self.problem = Problem("InvalidSpec", message)
            self.status.observed_generation = self.obs.generation
            return
        self.spec = spec
        self._keep_router(spec)  # the live student keeps serving whatever else happens
        if spec.suspend:
            self.status.phase = Phase.SUSPENDED
            self.status.observed_generation = self.obs.generation
            self.status.pending_generation = None
            return
        if self.status.observed_generation != self.obs.generation:
            running = any(entry.state == StageState.RUNNING for entry in self.status.stages)
            if running and self.status.observed_generation > 0:
                self.deferring = True
                self.status.pending_generation = self.obs.generation
            else:
                self._restart(spec)
        if self.status.phase == Phase.SUSPENDED:
            self.status.phase = Phase.RUNNING
        # Stages the operator decides itself finish within the pass, so go on until a
        # stage waits on the outside world (a job, a result, a retry) or the project ends.
        by_name = {entry.name: entry for entry in self.status.stages}
        for _ in range(len(PIPELINE) + 1):
            if self.status.phase.is_terminal() and not self.deferring:
                if self.status.phase == Phase.FAILED:
                    # A re-distillation failed, but a live student still serves: its drift
                    # checks and schedule go on, and either may start the next attempt.
                    self._lifecycle(spec)
                return
            waiting = (by_name[stage] for stage in RUN_ORDER)
            current = next((s for s in waiting if not s.state.is_terminal()), None)
            if current is None and not self.deferring:
                self.status.phase = Phase.MONITORING
                self._lifecycle(spec)
                return
            try:
                if current is not None:
                    self.status.stage = current.name
                    self.status.phase = Phase.RUNNING
                    self._step(spec, BY_STAGE[current.name], current)
                if current is not None and not current.state.is_terminal():
                    return
                if self.deferring:  # the stage it waited for has ended
                    raise _Superseded
            except _Superseded:
                self.deferring = False
                self._restart(spec)

    def _restart(self, spec: ProjectSpec) -> None:
        """A new generation: walk the stages again; unchanged inputs re-use their results."""
        self._loop_back(spec, RUN_ORDER, "SpecChanged", "the spec changed")
        self.status.observed_generation = self.obs.generation
        self.status.pending_generation = None

    def _loop_back(
        self, spec: ProjectSpec, stages: tuple[Stage, ...], reason: str, message: str
    ) -> None:
        """Walk ``stages`` again; the router and the live student stay as they are."""
        for entry in self.status.stages:
            if entry.state != StageState.RUNNING:
                continue
            for running in (entry, *entry.candidates):
                if running.state == StageState.RUNNING and running.job is not None:
                    self._stop(running)
                    self._count_spend(_Unit(BY_STAGE[entry.name], running), None)
        check = self.status.lifecycle.drift_check
        if check is not None and check.state == StageState.RUNNING and check.job is not None:
            self._stop(check)
            self._count_spend(_Unit(launch.MONITOR, check), None)
            self.status.lifecycle.drift_check = None
        for entry in self.status.stages:
            if entry.name not in stages:
                continue
            if entry.state != StageState.PENDING:
                self._move(_unit(entry), StageState.PENDING, reason, message)
            entry.exit_condition = BY_STAGE[entry.name].exit_condition(spec)
            entry.attempt, entry.job, entry.next_attempt_at = 0, None, None
            entry.started_at = entry.finished_at = None
            entry.candidates = []
            entry.report_config_map = None
        if self.status.serving is not None:  # a rollout in progress is abandoned
            self._abandon_rollout(spec)
        self.status.phase = Phase.RUNNING
        self.status.stage = stages[0]
        self.status.student = None
        self.status.diagnosis = None
        self.requeue_after = 0

    def _step(self, spec: ProjectSpec, definition: StageDefinition, entry: StageStatus) -> None:
        if definition is launch.DEFINITION:
            self._launch(spec, entry)
        elif entry.state == StageState.PENDING:
            verdict = definition.preflight(spec, self.obs.facts)
            if verdict is None and definition.decide is not None:
                verdict = definition.decide(spec, self.obs.facts)
            if verdict is None:
                self._start(spec, definition, entry)
            elif verdict.waits:
                self._hold(entry, verdict)
            else:
                self._finish(entry, verdict)
        elif definition.parts is not None:
            self._watch_parts(spec, definition, entry)
        else:
            self._watch(spec, _Unit(definition, entry))

    def _hold(self, entry: StageStatus, verdict: Verdict) -> None:
        """Wait for the world to change (e.g. a Secret to appear), checking every poll."""
        if (entry.reason, entry.message) != (verdict.reason, verdict.message):
            self.actions.append(Emit("Warning", verdict.reason, f"{entry.name}: {verdict.message}"))
        entry.reason, entry.message = verdict.reason, verdict.message
        self.problem = Problem(verdict.reason, f"{entry.name}: {verdict.message}")
        self._wait(self.settings.poll_seconds)

    def _start(self, spec: ProjectSpec, definition: StageDefinition, entry: StageStatus) -> None:
        if definition.parts is None:
            self._begin(spec, _Unit(definition, entry), self._stage_input(spec, definition))
            return
        # One unit per part, all submitted at once: Ray queues what does not fit.
        entry.started_at = timestamp(self.obs.now)
        entry.input_hash = entry.result_uri = None  # the chosen part's, once chosen
        entry.candidates = []
        for name, excerpt in definition.parts(spec):
            candidate = CandidateStatus(name=name)
            entry.candidates.append(candidate)
            stage_input = self._stage_input(spec, definition, excerpt)
            self._begin(spec, _Unit(definition, candidate), stage_input)
        self._move(_Unit(definition, entry), StageState.RUNNING, "Started", _parts_line(entry))

    def _begin(self, spec: ProjectSpec, unit: _Unit, stage_input: StageInput) -> None:
        entry = unit.entry
        entry.input_hash = stage_input.input_hash()
        entry.result_uri = stage_input.result_uri()
        entry.started_at = timestamp(self.obs.now)
        entry.attempt = 0
        self._new_attempt(spec, unit, stage_input)
        self._move(unit, StageState.RUNNING, "Started", f"job {entry.job.id if entry.job else ''}")
        self.requeue_after = 0  # observe the (possibly re-used) result at once

    def _stage_input(
        self, spec: ProjectSpec, definition: StageDefinition, excerpt: dict[str, Any] | None = None
    ) -> StageInput:
        upstream = {
            stage.value: entry.result_uri
            for entry in self.status.stages
            for stage in definition.upstream
            if entry.name == stage and entry.result_uri
        }
        excerpt = definition.spec_excerpt(spec) if excerpt is None else excerpt
        snapshot = self.status.lifecycle.redistillations
        if definition.stage == Stage.SOURCE and snapshot:
            # A loop back on fresh traffic: the same spec, a new snapshot of the files.
            excerpt = {**excerpt, "snapshot": snapshot}
        return StageInput(
            project=self.obs.project,
            project_uid=self.obs.project_uid,
            stage=definition.stage.value,
            spec=excerpt,
            upstream=upstream,
            artifacts_uri=spec.artifacts.uri,
        )

    def _input_of(self, spec: ProjectSpec, unit: _Unit) -> StageInput:
        parts, excerpt = unit.definition.parts, None
        if unit.definition is launch.ROUTER:
            excerpt = launch.router_excerpt(spec)
        elif unit.definition is launch.MONITOR:
            excerpt = launch.monitor_excerpt(spec, check=self.status.lifecycle.drift_checks)
        elif parts and unit.part:
            excerpt = dict(parts(spec))[unit.part]
        return self._stage_input(spec, unit.definition, excerpt)

    def _new_attempt(self, spec: ProjectSpec, unit: _Unit, stage_input: StageInput) -> None:
        """Choose and record the attempt's job id; the input file is written first."""
        entry = unit.entry
        assert unit.definition.workload is not None and entry.input_hash is not None
        job_id = naming.job_id(
            project_uid=self.obs.project_uid,
            stage=unit.definition.stage,
            attempt=entry.attempt,
            input_hash=entry.input_hash,
            part=unit.part,
        )
        entry.job = JobRecord(mode=launch.job_mode(spec, unit.definition), id=job_id, state="")
        stage_input = stage_input.model_copy(update={"attempt": entry.attempt})
        self.actions.append(WriteInput(naming.input_uri(stage_input.stage_dir()), stage_input))

    def _watch_parts(
        self, spec: ProjectSpec, definition: StageDefinition, entry: StageStatus
    ) -> None:
        """Each part runs on its own; once every one is done, the stage chooses among them."""
        if not entry.candidates:  # status of an operator from before this stage had parts
            if entry.job is not None:
                self._stop(entry)
            self._start(spec, definition, entry)
            return
        for candidate in entry.candidates:
            if not candidate.state.is_terminal():
                self._watch(spec, _Unit(definition, candidate))
        if not all(c.state.is_terminal() for c in entry.candidates):
            entry.message = _parts_line(entry)
            return
        assert definition.choose is not None
        chosen, verdict = definition.choose(spec, entry.candidates)
        if chosen is not None:
            entry.input_hash, entry.result_uri = chosen.input_hash, chosen.result_uri
            entry.metrics = dict(chosen.metrics)
            score = chosen.metrics.get("score")
            self.status.student = Student(name=chosen.name, uri=chosen.student_uri, score=score)
        self._finish(entry, verdict)

    def _watch(self, spec: ProjectSpec, unit: _Unit) -> None:
        """A running unit: its result decides; otherwise keep its one job going."""
        entry = unit.entry
        assert entry.job is not None and entry.result_uri is not None
        result = self.obs.results.get(entry.result_uri)
        if result is not None and result.input_hash == entry.input_hash:
            if self._report_published(unit, result):
                self._count_spend(unit, result)
                self._conclude(unit, _verdict_of(result), result)
            return
        job = self.obs.jobs.get(entry.job.id)
        refused = self.obs.launch_errors.get(entry.job.id)
        if entry.next_attempt_at and self.obs.now < parse_timestamp(entry.next_attempt_at):
            self._wait((parse_timestamp(entry.next_attempt_at) - self.obs.now).total_seconds())
        elif job is None and refused:
            message = f"job {entry.job.id} was refused: {refused}"
            self._attempt_failed(spec, unit, "LaunchRefused", message)
        elif job is None or (job.state == JobState.UNKNOWN and entry.job.submitted_at is None):
            # A retry whose platform is away is still submitted: the submit fails and is
            # retried, and the attempt's deadline counts from the first try.
            self._submit(spec, unit)
        elif not job.state.is_terminal():
            entry.job.state, entry.job.message = job.state.value, job.message[:MAX_JOB_MESSAGE]
            entry.job.dashboard = job.dashboard or entry.job.dashboard
            progress = self.obs.progress.get(entry.result_uri)
            if progress:
                entry.metrics = _bounded_numbers(progress, entry.max_metrics)
            if unit.definition.serves:
                self._wait(self.settings.poll_seconds)
            else:
                self._check_deadline(spec, unit)
        else:
            entry.job.state = job.state.value
            # Platforms can call a job failed while parts of it still run (KubeRay's
            # deployment failed, Ray's job did not): stop it, so no attempt overlaps.
            self._stop(entry)
            self._count_spend(unit, None)
            why = job.message or "it wrote no result"
            self._attempt_failed(spec, unit, "JobFailed", f"job {job.job_id} {job.state}: {why}")

    def _report_published(self, unit: _Unit, result: StageResult) -> bool:
        """A stage with a report concludes only once its ConfigMap shows this result, so
        a crash between the two never leaves a finished stage without its report."""
        entry, summary = unit.entry, result.artifacts.get("summary")
        if not unit.definition.report or summary is None or not isinstance(entry, StageStatus):
            return True
        name = naming.report_name(project=self.obs.project.split("/", 1)[1], stage=entry.name)
        refused = self.obs.report_errors.get(name)
        if refused is not None:
            self.actions.append(Emit("Warning", "ReportRefused", f"ConfigMap {name}: {refused}"))
            entry.report_config_map = None
            return True
        if self.obs.reports.get(name) == entry.input_hash:
            entry.report_config_map = name
            return True
        assert entry.input_hash is not None
        self.actions.append(
            PublishReport(name, self.namespace, entry.name, summary, entry.input_hash)
        )
        self.requeue_after = 0
        return False

    def _submit(self, spec: ProjectSpec, unit: _Unit) -> None:
        entry = unit.entry
        assert entry.job is not None and entry.result_uri is not None
        definition = unit.definition
        stage_dir = entry.result_uri.rsplit("/", 1)[0]
        # The input again (same content, same place): the pass that recorded this attempt
        # wrote it only after status, and an operator killed in between left none.
        stage_input = self._input_of(spec, unit).model_copy(update={"attempt": entry.attempt})
        if stage_input.input_hash() == entry.input_hash:
            self.actions.append(WriteInput(naming.input_uri(stage_dir), stage_input))
        entry.next_attempt_at = None
        entry.job.state = JobState.PENDING.value
        entry.job.submitted_at = timestamp(self.obs.now)
        labels = {
            naming.PROJECT_LABEL: self.obs.project.split("/", 1)[1],
            naming.STAGE_LABEL: definition.stage.value,
        }
        if unit.part:
            labels["distill.dev/candidate"] = unit.part
        self.actions.append(
            SubmitJob(
                mode=entry.job.mode,
                job=JobSpec(
                    job_id=entry.job.id,
                    namespace=self.namespace,
                    entrypoint=f"python -m {definition.workload} "
                    f"--input {naming.input_uri(stage_dir)}",
                    labels=labels,
                    entrypoint_num_cpus=self.settings.driver_cpus,
                    owner=Owner(name=labels[naming.PROJECT_LABEL], uid=self.obs.project_uid),
                ),
                secret_env=_secret_env(spec, definition, mode=entry.job.mode),
            )
        )
        self.actions.append(Emit("Normal", "JobSubmitted", f"{unit.label}: job {entry.job.id}"))
        self._wait(self.settings.poll_seconds)

    def _stop(self, entry: JobRunStatus) -> None:
        job = entry.job
        assert job is not None
        self.actions.append(StopJob(mode=job.mode, job_id=job.id, namespace=self.namespace))

    def _check_deadline(self, spec: ProjectSpec, unit: _Unit) -> None:
        entry = unit.entry
        assert entry.job is not None
        began = parse_timestamp(
            entry.job.submitted_at or entry.started_at or timestamp(self.obs.now)
        )
        deadline = began + timedelta(seconds=spec.policy.deadline_seconds)
        if self.obs.now < deadline:
            self._wait(min(self.settings.poll_seconds, (deadline - self.obs.now).total_seconds()))
            return
        self._stop(entry)
        self._count_spend(unit, None)
        limit = spec.policy.deadline_seconds
        message = f"job {entry.job.id} ran past spec.policy.deadlineSeconds ({limit}s)"
        if entry.job.state == JobState.UNKNOWN.value:
            message += f"; its platform could not be asked: {entry.job.message}"
        self._attempt_failed(spec, unit, "DeadlineExceeded", message)

    def _attempt_failed(self, spec: ProjectSpec, unit: _Unit, reason: str, message: str) -> None:
        entry, policy = unit.entry, spec.policy
        if self.deferring and isinstance(entry, StageStatus | CandidateStatus):
            # The next attempt runs on the new spec, which may well be the fix. This one
            # is over (and counted): the loop back has nothing of it to stop or count.
            self.actions.append(Emit("Warning", reason, f"{unit.label}: {message}"))
            entry.job = None
            raise _Superseded
        if entry.attempt >= policy.max_retries:
            attempts = entry.attempt + 1
            verdict = Verdict(False, reason, f"{message} (gave up after {attempts} attempts)")
            self._conclude(unit, verdict)
            return
        delay = policy.backoff_seconds * 2**entry.attempt
        entry.attempt += 1
        entry.next_attempt_at = timestamp(self.obs.now + timedelta(seconds=delay))
        entry.reason, entry.message = reason, f"{message}; retry {entry.attempt} in {delay}s"
        self.actions.append(Emit("Warning", reason, f"{unit.label}: {entry.message}"))
        self._new_attempt(spec, unit, self._input_of(spec, unit))
        self._wait(delay)

    def _count_spend(self, unit: _Unit, result: StageResult | None) -> None:
        """Fold what an ended attempt spent into the cost ledger. Called where an attempt
        ends, which happens once, so each attempt is counted once.

        What the result reports counts; an attempt without a report (its job died, was
        stopped, or is older than the report) is estimated as the GPUs its stage requests
        times the wall time since submit, and marked estimated. A result re-used for an
        unchanged input ran no job this time (none was submitted) and costs nothing; the
        router's running cost is serving's, not distillation's.
        """
        entry, spec = unit.entry, self.spec
        assert spec is not None
        if unit.definition.serves or entry.job is None or entry.job.submitted_at is None:
            return
        spent = Spend.reported(result.metrics) if result is not None else None
        estimated = spent is None
        if spent is None:
            wall = (self.obs.now - parse_timestamp(entry.job.submitted_at)).total_seconds()
            accelerators = unit.definition.accelerators(spec)
            spent = Spend(accelerator_seconds=max(wall, 0.0) * accelerators)
        stage = unit.definition.stage
        self.status.cost = ledger.fold(
            self.status.cost, stage, spent, estimated=estimated, spec=spec
        )

    def _conclude(self, unit: _Unit, verdict: Verdict, result: StageResult | None = None) -> None:
        """A unit is done: a stage moves the project on; a part only records its outcome."""
        if isinstance(unit.entry, StageStatus):
            self._finish(unit.entry, verdict, result)
            return
        if unit.definition.serves and unit.entry.job is not None:
            self._stop(unit.entry)  # a service that wrote a result is over; so is its pod
        self._close(unit, verdict, result)
        if isinstance(unit.entry, CandidateStatus) and result is not None:
            # A trained student, or the model an alternative is.
            unit.entry.student_uri = result.artifacts.get("student") or result.artifacts.get(
                "model"
            )

    def _finish(
        self, entry: StageStatus, verdict: Verdict, result: StageResult | None = None
    ) -> None:
        self._close(_unit(entry), verdict, result)
        assert self.spec is not None
        diagnosis = diagnose(self.spec, entry, verdict, result)
        if diagnosis is not None:
            self.status.diagnosis = diagnosis
        if not verdict.met:
            self.status.phase = Phase.FAILED
        elif verdict.outcome is not None:
            self.status.phase = verdict.outcome
            for later in self.status.stages:
                if later.state == StageState.PENDING:
                    self._move(
                        _unit(later),
                        StageState.SKIPPED,
                        "Skipped",
                        f"project ended {verdict.outcome}",
                    )
        if result is not None and "student" in result.artifacts:
            known = self.status.student.name if self.status.student else "student"
            self.status.student = Student(
                name=str(result.metrics.get("student", known)),
                uri=result.artifacts["student"],
                score=result.metrics.get("score"),
            )

    def _close(self, unit: _Unit, verdict: Verdict, result: StageResult | None) -> None:
        """Record a unit's outcome: its state, times and its result's numbers."""
        entry = unit.entry
        entry.finished_at = timestamp(self.obs.now)
        entry.started_at = entry.started_at or entry.finished_at  # stages decided at once
        entry.next_attempt_at = None
        if entry.job is not None and result is not None:
            job = self.obs.jobs.get(entry.job.id)
            entry.job.state = job.state.value if job else entry.job.state
        state = StageState.SUCCEEDED if verdict.met else StageState.FAILED
        self._move(unit, state, verdict.reason, verdict.message)
        if result is not None:
            entry.metrics = _bounded_numbers(result.metrics, entry.max_metrics)
        self.requeue_after = 0

    def _move(self, unit: _Unit, state: StageState, reason: str, message: str) -> None:
        entry = unit.entry
        if state != entry.state:
            if state not in TRANSITIONS[entry.state]:
                raise AssertionError(f"{unit.label}: {entry.state} -> {state} is not allowed")
            failed = state == StageState.FAILED
            self.actions.append(
                Emit("Warning" if failed else "Normal", reason, f"{unit.label} {state}: {message}")
            )
        entry.state, entry.reason, entry.message = state, reason, message

    def _wait(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds

    # --- Launch: the router and the rollout --------------------------------------------
    def _keep_router(self, spec: ProjectSpec) -> None:
        """Keep the router running on its current input; a new input (teacher, address)
        gets a new router. It is created by the first Launch, and a crashed one restarts
        with the stage policy's retries and backoff."""
        serving = self.status.serving
        if serving is None:
            return
        wanted = self._stage_input(spec, launch.ROUTER, launch.router_excerpt(spec))
        router = serving.router
        if router is None or router.input_hash != wanted.input_hash():
            if router is not None and router.state == StageState.RUNNING and router.job:
                self._stop(router)
            serving.router = ServiceJobStatus(name="router")
            serving.endpoint = None
            self._begin(spec, _Unit(launch.ROUTER, serving.router), wanted)
            return
        if router.state == StageState.RUNNING:
            self._watch(spec, _Unit(launch.ROUTER, router))
        if router.state != StageState.RUNNING:  # gave up: a new input starts a new one
            serving.endpoint = None
            if serving.live is not None:
                self.problem = Problem(router.reason or "RouterFailed",
                                       f"the router failed: {router.message}")  # fmt: skip
            return
        seen = self.obs.router
        current = seen.endpoint is not None and seen.endpoint.attempt == router.attempt
        serving.endpoint = seen.endpoint.url if seen.endpoint and current else None
        project = self.obs.project.split("/", 1)[1]
        on_kubernetes = router.job is not None and router.job.mode == DEPLOYMENT_MODE
        serving.service = (
            naming.router_service_url(project=project, namespace=self.namespace)
            if on_kubernetes
            else None
        )
        if serving.endpoint and seen.revision != serving.revision:
            uri = routing_uri(artifacts_uri=spec.artifacts.uri, project=self.obs.project)
            self.actions.append(WriteRouting(uri, launch.routing(spec, serving)))

    def _launch(self, spec: ProjectSpec, entry: StageStatus) -> None:
        serving = self.status.serving = self.status.serving or Serving()
        if entry.state == StageState.PENDING:
            student = self.status.student
            if student is None or student.uri is None:
                verdict = Verdict(False, "NoStudent", "no student came out of Iterate and Look")
                self._finish(entry, verdict)
                return
            entry.started_at = timestamp(self.obs.now)
            self._move(_unit(entry), StageState.RUNNING, "Started", f"rolling out {student.name}")
            if serving.live is not None and serving.live.uri == student.uri:
                serving.live = student
                self._set_step(spec, None)  # new launch settings reach the router
                message = f"{student.name} already serves all traffic"
                self._finish(entry, Verdict(True, "StudentUnchanged", message))
                return
            serving.candidate = student
            self._set_step(spec, 0)
            if serving.router is None:  # the first launch: the router starts now
                self._keep_router(spec)
        router = serving.router
        if router is not None and router.state == StageState.FAILED:
            self._abandon_rollout(spec)
            why = f"the router failed: {router.message}"
            self._finish(entry, Verdict(False, router.reason or "RouterFailed", why))
            return
        self._judge(spec, entry, serving)

    def _set_step(self, spec: ProjectSpec, index: int | None) -> None:
        """Route by rollout step ``index``; None: the live student (or the teacher)
        answers everything. Each change is a new routing revision."""
        serving = self.status.serving
        assert serving is not None
        serving.step, serving.step_started_at, serving.metrics = index, None, {}
        if index is not None:
            step = launch.steps_of(spec)[index]
            serving.mode = step.mode.value
            serving.percent = {"shadow": 0, "canary": step.percent, "full": 100}[step.mode.value]
        elif serving.live is not None:
            serving.mode, serving.percent = "full", 100
        else:
            serving.mode, serving.percent = "teacher", 0
        serving.revision += 1
        self.requeue_after = 0

    def _abandon_rollout(self, spec: ProjectSpec) -> None:
        serving = self.status.serving
        if serving is not None and serving.candidate is not None:
            serving.candidate = None
            self._set_step(spec, None)

    def _judge(self, spec: ProjectSpec, entry: StageStatus, serving: Serving) -> None:
        """Hold, advance or roll back the step in progress, on the router's counters."""
        assert serving.step is not None and serving.candidate is not None
        steps = launch.steps_of(spec)
        if serving.step >= len(steps):  # a held spec change removed the step: it takes over
            raise _Superseded
        step = steps[serving.step]
        where = f"step {serving.step + 1}/{len(steps)} ({launch.step_name(step)})"
        seen = self.obs.router
        if not serving.endpoint or seen.revision != serving.revision:
            waiting = seen.error or f"the router to serve revision {serving.revision}"
            entry.message = f"{where}: waiting for {waiting}"
            self._wait(self.settings.poll_seconds)
            return
        serving.step_started_at = serving.step_started_at or timestamp(self.obs.now)
        held = (self.obs.now - parse_timestamp(serving.step_started_at)).total_seconds()
        counts = seen.counts.get(serving.revision, launch.RevisionCounts())
        judged = launch.judge_step(spec, step, counts, held_seconds=held)
        serving.metrics = judged.numbers
        if judged.rollback:
            name = serving.candidate.name
            self._abandon_rollout(spec)
            back_to = serving.live.name if serving.live else "the teacher"
            message = f"{where}: {judged.summary}; traffic is back on {back_to}"
            self._finish(entry, Verdict(False, "RolledBack", f"{name} rolled back at {message}"))
        elif judged.advance and serving.step + 1 < len(steps):
            self._set_step(spec, serving.step + 1)
            entry.message = (
                f"{where} passed ({judged.summary}); next {launch.step_name(steps[serving.step])}"
            )
            self.actions.append(Emit("Normal", "StepPassed", f"Launch: {entry.message}"))
        elif judged.advance:
            serving.live, serving.candidate, serving.step = serving.candidate, None, None
            lifecycle = self.status.lifecycle
            lifecycle.drifted, lifecycle.drift, lifecycle.drift_message = None, {}, ""
            lifecycle.next_drift_check_at = None  # counted from now on
            path = " -> ".join(launch.step_name(s) for s in steps)
            message = f"{serving.live.name} serves all traffic after {path} ({judged.summary})"
            self._finish(entry, Verdict(True, "RolledOut", message))
        else:
            left = max(step.hold_seconds - held, 0.0)
            entry.message = f"{where}: {judged.summary}; holds {left:.0f}s more"
            self._wait(
                min(self.settings.poll_seconds, left) if left else self.settings.poll_seconds
            )

    # --- Lifecycle: drift checks, schedule, loops back to Source -------------------------
    def _lifecycle(self, spec: ProjectSpec) -> None:
        """A live student: check for drift now and then, re-distill on schedule."""
        lifecycle, now = self.status.lifecycle, self.obs.now
        if self.status.serving is None or self.status.serving.live is None:
            return
        due = []
        if spec.lifecycle.schedule:
            if lifecycle.next_scheduled_at is None:
                upcoming = croniter(spec.lifecycle.schedule, now).get_next(datetime)
                lifecycle.next_scheduled_at = timestamp(upcoming)
            if now >= parse_timestamp(lifecycle.next_scheduled_at):
                lifecycle.next_scheduled_at = None
                self._redistill(spec, "Scheduled", f"the schedule {spec.lifecycle.schedule!r}")
                return
            due.append(parse_timestamp(lifecycle.next_scheduled_at))
        check = lifecycle.drift_check
        if check is not None and check.state == StageState.RUNNING:
            self._watch(spec, _Unit(launch.MONITOR, check))
            if check.state.is_terminal():
                self._record_drift(spec, check)
            return
        every = timedelta(seconds=spec.lifecycle.drift_check_seconds)
        if lifecycle.next_drift_check_at is None:
            lifecycle.next_drift_check_at = timestamp(now + every)
        if now >= parse_timestamp(lifecycle.next_drift_check_at):
            lifecycle.drift_checks += 1
            lifecycle.next_drift_check_at = timestamp(now + every)
            lifecycle.drift_check = ServiceJobStatus(name=f"drift-{lifecycle.drift_checks}")
            unit = _Unit(launch.MONITOR, lifecycle.drift_check)
            self._begin(spec, unit, self._input_of(spec, unit))
            return
        due.append(parse_timestamp(lifecycle.next_drift_check_at))
        self._wait(min((moment - now).total_seconds() for moment in due))

    def _record_drift(self, spec: ProjectSpec, check: ServiceJobStatus) -> None:
        """Traffic that moved away from the training data, or a live student that no
        longer agrees with the teacher, is drift: decay over time points at Launch."""
        lifecycle, serving = self.status.lifecycle, self.status.serving
        assert serving is not None
        if check.reason not in ("Drifted", "NoDrift"):
            why = f"drift check {check.name} could not decide: {check.reason}: {check.message}"
            self.actions.append(Emit("Warning", "DriftCheckFailed", why))
            lifecycle.drift_message = why
            return
        numbers = {k: v for k, v in check.metrics.items() if k in ("sliceShift", "lengthShift")}
        findings = [check.message] if check.reason == "Drifted" else []
        counts = self.obs.router.counts.get(serving.revision, launch.RevisionCounts())
        if counts.comparisons:
            agreement = counts.agree / counts.comparisons
            numbers["liveAgreement"] = round(agreement, 4)
            if counts.comparisons >= spec.launch.min_requests and (
                agreement < spec.launch.min_agreement
            ):
                findings.append(
                    f"live agreement {agreement:.2f} < {spec.launch.min_agreement:g} over "
                    f"{counts.comparisons} compared requests"
                )
        lifecycle.drift, lifecycle.drifted = numbers, bool(findings)
        lifecycle.drift_message = "; ".join(findings) or check.message
        if not findings:
            return
        message = lifecycle.drift_message
        self.actions.append(
            Emit(
                "Warning",
                "Drifted",
                f"{serving.live.name if serving.live else 'student'}: {message}",
            )
        )
        self.status.diagnosis = Diagnosis(stage=Stage.LAUNCH, reason="Drifted", message=message)
        if spec.lifecycle.auto_redistill:
            self._redistill(spec, "Drifted", message)

    def _redistill(self, spec: ProjectSpec, reason: str, message: str) -> None:
        """Loop back to Source on a fresh snapshot of the traffic; the live student
        serves until a new one passes Look and is rolled out."""
        lifecycle = self.status.lifecycle
        lifecycle.redistillations += 1
        lifecycle.last_trigger = Trigger(reason=reason, message=message, at=timestamp(self.obs.now))
        self.actions.append(Emit("Normal", "Redistilling", f"{reason}: {message}"))
        diagnosis = self.status.diagnosis
        self._loop_back(spec, RUN_ORDER[1:], reason, f"re-distilling: {message}")
        self.status.diagnosis = diagnosis  # why it loops back stays visible


def _parts_line(entry: StageStatus) -> str:
    """``tiny Running, small Succeeded``: where each part stands, for the stage's message."""
    return ", ".join(f"{c.name} {c.state}" for c in entry.candidates)


def _verdict_of(result: StageResult) -> Verdict:
    known = {phase.value for phase in Phase}
    outcome = Phase(result.outcome) if result.outcome and result.outcome in known else None
    return Verdict(result.exit_condition_met, result.reason, result.message, outcome)


def _bounded_numbers(values: Mapping[str, Any], limit: int) -> dict[str, float]:
    """The top-level numbers of a result or a progress report, bounded so status stays
    small: the ones the operator reads first, then the rest by name. Tables stay out, and
    so do NaN and infinities, which JSON (and so the API server) cannot carry."""
    numbers = {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    order = [k for k in KEY_METRICS if k in numbers] + sorted(set(numbers) - set(KEY_METRICS))
    return {key: numbers[key] for key in order[:limit]}


def _secret_env(
    spec: ProjectSpec, definition: StageDefinition, *, mode: str
) -> tuple[tuple[str, str, str], ...]:
    """Stages that talk to the teacher get its API key, and the router its clients'
    token, by reference; none where the Ray cluster's pods carry them."""
    if spec.jobs_bring_their_secrets(mode):
        return ()
    env = []
    key = spec.teacher.api_key_secret_ref
    if key is not None and "teacher" in definition.reads:
        env.append((TEACHER_API_KEY_ENV, key.name, key.key))
    token = spec.launch.router.token_secret_ref
    if token is not None and definition.serves:
        env.append((ROUTER_TOKEN_ENV, token.name, token.key))
    return tuple(env)
