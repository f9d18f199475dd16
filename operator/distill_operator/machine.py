"""The pure stage machine: (spec, status, observations) → (status, actions).

It never calls an API: the handler observes (the job whose id status names, the result
at the URI status names, the Secrets the spec references), calls :func:`reconcile`,
patches the status it returns and then carries out its actions. Because job ids and
result URIs are written into status *before* a job is submitted, a pass interrupted at
any point is simply repeated by the next one, and no job is ever submitted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from distill_jobs.contract import TEACHER_API_KEY_ENV, StageInput, StageResult
from distill_operator import naming
from distill_operator.api import (
    JobRecord,
    Phase,
    ProjectSpec,
    ProjectStatus,
    Stage,
    StageState,
    StageStatus,
    Student,
)
from distill_operator.api.status import MAX_STAGE_METRICS
from distill_operator.conditions import Problem, derive_conditions
from distill_operator.launch.base import JobObservation, JobSpec, JobState
from distill_operator.stages import BY_STAGE, PIPELINE, Facts, StageDefinition, Verdict

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
    """What the handler saw for this pass."""

    now: datetime
    generation: int
    project: str
    project_uid: str
    facts: Facts = field(default_factory=Facts)
    job: JobObservation | None = None
    result: StageResult | None = None
    spec_error: str | None = None
    launch_error: str | None = None  # the platform refused the last submit


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


Action = WriteInput | SubmitJob | StopJob | Emit


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


@dataclass
class _Pass:
    status: ProjectStatus
    obs: Observations
    settings: Settings
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None
    problem: Problem | None = None

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
        if self.status.observed_generation != self.obs.generation:
            self._restart(spec)
        if spec.suspend:
            self.status.phase = Phase.SUSPENDED
            return
        if self.status.phase == Phase.SUSPENDED:
            self.status.phase = Phase.RUNNING
        # Stages the operator decides itself finish within the pass, so go on until a
        # stage waits on the outside world (a job, a result, a retry) or the project ends.
        for _ in PIPELINE:
            if self.status.phase.is_terminal():
                return
            current = next((s for s in self.status.stages if not s.state.is_terminal()), None)
            if current is None:
                self.status.phase = Phase.MONITORING
                return
            self.status.stage = current.name
            self.status.phase = Phase.RUNNING
            self._step(spec, BY_STAGE[current.name], current)
            if not current.state.is_terminal():
                return

    def _restart(self, spec: ProjectSpec) -> None:
        """A new generation: walk the stages again; unchanged inputs re-use their results."""
        for entry in self.status.stages:
            if entry.state == StageState.RUNNING and entry.job:
                self.actions.append(
                    StopJob(mode=entry.job.mode, job_id=entry.job.id, namespace=self.namespace)
                )
            if entry.state != StageState.PENDING:
                self._move(entry, StageState.PENDING, "SpecChanged", "the spec changed")
            entry.exit_condition = BY_STAGE[entry.name].exit_condition(spec)
            entry.attempt, entry.job, entry.next_attempt_at = 0, None, None
            entry.started_at = entry.finished_at = None
        self.status.phase = Phase.RUNNING
        self.status.stage = Stage.DEFINE
        self.status.student = None
        self.status.observed_generation = self.obs.generation
        self.requeue_after = 0

    def _step(self, spec: ProjectSpec, definition: StageDefinition, entry: StageStatus) -> None:
        if entry.state == StageState.PENDING:
            verdict = definition.preflight(spec, self.obs.facts)
            if verdict is None and definition.decide is not None:
                verdict = definition.decide(spec, self.obs.facts)
            if verdict is None:
                self._start(spec, definition, entry)
            elif verdict.waits:
                self._hold(entry, verdict)
            else:
                self._finish(entry, verdict)
        else:
            self._watch(spec, entry)

    def _hold(self, entry: StageStatus, verdict: Verdict) -> None:
        """Wait for the world to change (e.g. a Secret to appear), checking every poll."""
        if (entry.reason, entry.message) != (verdict.reason, verdict.message):
            self.actions.append(Emit("Warning", verdict.reason, f"{entry.name}: {verdict.message}"))
        entry.reason, entry.message = verdict.reason, verdict.message
        self.problem = Problem(verdict.reason, f"{entry.name}: {verdict.message}")
        self._wait(self.settings.poll_seconds)

    def _start(self, spec: ProjectSpec, definition: StageDefinition, entry: StageStatus) -> None:
        stage_input = self._stage_input(spec, definition)
        entry.input_hash = stage_input.input_hash()
        entry.result_uri = stage_input.result_uri()
        entry.started_at = timestamp(self.obs.now)
        entry.attempt = 0
        self._new_attempt(spec, definition, entry, stage_input)
        self._move(entry, StageState.RUNNING, "Started", f"job {entry.job.id if entry.job else ''}")
        self.requeue_after = 0  # observe the (possibly re-used) result at once

    def _stage_input(self, spec: ProjectSpec, definition: StageDefinition) -> StageInput:
        upstream = {
            stage.value: entry.result_uri
            for entry in self.status.stages
            for stage in definition.upstream
            if entry.name == stage and entry.result_uri
        }
        return StageInput(
            project=self.obs.project,
            project_uid=self.obs.project_uid,
            stage=definition.stage.value,
            spec=definition.spec_excerpt(spec),
            upstream=upstream,
            artifacts_uri=spec.artifacts.uri,
        )

    def _new_attempt(
        self,
        spec: ProjectSpec,
        definition: StageDefinition,
        entry: StageStatus,
        stage_input: StageInput,
    ) -> None:
        """Choose and record the attempt's job id; the input file is written first."""
        assert definition.workload is not None and entry.input_hash is not None
        job_id = naming.job_id(
            project_uid=self.obs.project_uid,
            stage=entry.name,
            attempt=entry.attempt,
            input_hash=entry.input_hash,
        )
        entry.job = JobRecord(mode=spec.ray.mode, id=job_id, state="")
        stage_input = stage_input.model_copy(update={"attempt": entry.attempt})
        self.actions.append(WriteInput(naming.input_uri(stage_input.stage_dir()), stage_input))

    def _watch(self, spec: ProjectSpec, entry: StageStatus) -> None:
        """A running stage: its result decides; otherwise keep its one job going."""
        result = self.obs.result
        if result is not None and result.input_hash == entry.input_hash:
            self._finish(entry, _verdict_of(result), result)
            return
        job = self.obs.job
        assert entry.job is not None
        if entry.next_attempt_at and self.obs.now < parse_timestamp(entry.next_attempt_at):
            self._wait((parse_timestamp(entry.next_attempt_at) - self.obs.now).total_seconds())
        elif job is None and self.obs.launch_error:
            message = f"job {entry.job.id} was refused: {self.obs.launch_error}"
            self._attempt_failed(spec, entry, "LaunchRefused", message)
        elif job is None:
            self._submit(spec, entry)
        elif not job.state.is_terminal():
            entry.job.state, entry.job.dashboard = job.state.value, job.dashboard
            self._check_deadline(spec, entry)
        else:
            entry.job.state = job.state.value
            # Platforms can call a job failed while parts of it still run (KubeRay's
            # deployment failed, Ray's job did not): stop it, so no attempt overlaps.
            self.actions.append(StopJob(entry.job.mode, entry.job.id, self.namespace))
            why = job.message or "it wrote no result"
            self._attempt_failed(spec, entry, "JobFailed", f"job {job.job_id} {job.state}: {why}")

    def _submit(self, spec: ProjectSpec, entry: StageStatus) -> None:
        assert entry.job is not None and entry.result_uri is not None
        definition = BY_STAGE[entry.name]
        stage_dir = entry.result_uri.rsplit("/", 1)[0]
        entry.next_attempt_at = None
        entry.job.state = JobState.PENDING.value
        entry.job.submitted_at = timestamp(self.obs.now)
        name = self.obs.project.split("/", 1)[1]
        self.actions.append(
            SubmitJob(
                mode=entry.job.mode,
                job=JobSpec(
                    job_id=entry.job.id,
                    namespace=self.namespace,
                    entrypoint=f"python -m {definition.workload} "
                    f"--input {naming.input_uri(stage_dir)}",
                    labels={"distill.dev/project": name, "distill.dev/stage": entry.name.value},
                    entrypoint_num_cpus=self.settings.driver_cpus,
                ),
                secret_env=_secret_env(spec, definition),
            )
        )
        self.actions.append(Emit("Normal", "JobSubmitted", f"{entry.name}: job {entry.job.id}"))
        self._wait(self.settings.poll_seconds)

    def _check_deadline(self, spec: ProjectSpec, entry: StageStatus) -> None:
        assert entry.job is not None
        began = parse_timestamp(
            entry.job.submitted_at or entry.started_at or timestamp(self.obs.now)
        )
        deadline = began + timedelta(seconds=spec.policy.deadline_seconds)
        if self.obs.now < deadline:
            self._wait(min(self.settings.poll_seconds, (deadline - self.obs.now).total_seconds()))
            return
        self.actions.append(
            StopJob(mode=entry.job.mode, job_id=entry.job.id, namespace=self.namespace)
        )
        limit = spec.policy.deadline_seconds
        message = f"job {entry.job.id} ran past spec.policy.deadlineSeconds ({limit}s)"
        self._attempt_failed(spec, entry, "DeadlineExceeded", message)

    def _attempt_failed(
        self, spec: ProjectSpec, entry: StageStatus, reason: str, message: str
    ) -> None:
        policy = spec.policy
        if entry.attempt >= policy.max_retries:
            attempts = entry.attempt + 1
            verdict = Verdict(False, reason, f"{message} (gave up after {attempts} attempts)")
            self._finish(entry, verdict)
            return
        delay = policy.backoff_seconds * 2**entry.attempt
        entry.attempt += 1
        entry.next_attempt_at = timestamp(self.obs.now + timedelta(seconds=delay))
        entry.reason, entry.message = reason, f"{message}; retry {entry.attempt} in {delay}s"
        self.actions.append(Emit("Warning", reason, f"{entry.name}: {entry.message}"))
        definition = BY_STAGE[entry.name]
        self._new_attempt(spec, definition, entry, self._stage_input(spec, definition))
        self._wait(delay)

    def _finish(
        self, entry: StageStatus, verdict: Verdict, result: StageResult | None = None
    ) -> None:
        entry.finished_at = timestamp(self.obs.now)
        entry.started_at = entry.started_at or entry.finished_at  # stages decided at once
        entry.next_attempt_at = None
        if entry.job is not None and result is not None:
            entry.job.state = self.obs.job.state.value if self.obs.job else entry.job.state
        state = StageState.SUCCEEDED if verdict.met else StageState.FAILED
        self._move(entry, state, verdict.reason, verdict.message)
        if not verdict.met:
            self.status.phase = Phase.FAILED
        elif verdict.outcome is not None:
            self.status.phase = verdict.outcome
            for later in self.status.stages:
                if later.state == StageState.PENDING:
                    self._move(
                        later, StageState.SKIPPED, "Skipped", f"project ended {verdict.outcome}"
                    )
        if result is not None:
            entry.metrics = _headline_metrics(result)
        if result is not None and "student" in result.artifacts:
            self.status.student = Student(
                name=str(result.metrics.get("student", "student")),
                uri=result.artifacts["student"],
                score=result.metrics.get("score"),
            )
        self.requeue_after = 0

    def _move(self, entry: StageStatus, state: StageState, reason: str, message: str) -> None:
        if state != entry.state:
            if state not in TRANSITIONS[entry.state]:
                raise AssertionError(f"{entry.name}: {entry.state} -> {state} is not allowed")
            failed = state == StageState.FAILED
            self.actions.append(
                Emit("Warning" if failed else "Normal", reason, f"{entry.name} {state}: {message}")
            )
        entry.state, entry.reason, entry.message = state, reason, message

    def _wait(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


def _verdict_of(result: StageResult) -> Verdict:
    known = {phase.value for phase in Phase}
    outcome = Phase(result.outcome) if result.outcome and result.outcome in known else None
    return Verdict(result.exit_condition_met, result.reason, result.message, outcome)


def _headline_metrics(result: StageResult) -> dict[str, float]:
    """The result's top-level numbers, bounded so status stays small."""
    numbers = {
        key: float(value)
        for key, value in sorted(result.metrics.items())
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return dict(list(numbers.items())[:MAX_STAGE_METRICS])


def _secret_env(spec: ProjectSpec, definition: StageDefinition) -> tuple[tuple[str, str, str], ...]:
    """Stages that talk to the teacher get its API key, by reference."""
    ref = spec.teacher.api_key_secret_ref
    if ref is None or "teacher" not in definition.reads:
        return ()
    return ((TEACHER_API_KEY_ENV, ref.name, ref.key),)
