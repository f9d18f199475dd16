"""SIGKILL chaos for the operator (issue #8): a seeded killer that restarts it, a watch
that checks status invariants on every read, and the audits of Ray's jobs and of the
stage results once the project is through.

The killer only ever sends SIGKILL and starts the operator again at once; everything
else here reads: the live API (the project, its Events), Ray's job list and the
artifact store.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiException, CoreV1Api
from pydantic import ValidationError
from ray.job_submission import JobDetails, JobSubmissionClient

from distill_jobs.contract import read_result
from distill_operator import naming
from distill_operator.api import JobRunStatus, ProjectStatus, Stage, StageState
from distill_operator.devstack.operator_process import OperatorProcess
from distill_operator.stages import RUN_ORDER

from .projects import Projects

POLL_S = 0.3
START_MARK = "--- distill-devstack: operator start #"  # OperatorProcess.start writes it
READY_LINE = "Initial authentication has finished."  # kopf, once it can talk to the API
READY_TIMEOUT_S = 120.0
# Reasons of an attempt that ended without a result (machine._watch, _check_deadline).
JOB_FAILURES = frozenset({"JobFailed", "DeadlineExceeded", "LaunchRefused"})
ATTEMPT = re.compile(r"-a(\d+)-[0-9a-f]{8}$")  # the tail naming.job_id gives every id
SUBMITTED = re.compile(r"submitted job (\S+) \(")  # reconciler._carry_out's log line
EVENT_JOB = re.compile(r"job (\S+)$")  # "Teach: job dp-…" (machine._submit's event)

RANDOM, AFTER_SUBMIT, AFTER_CHANGE = "random", "after JobSubmitted", "after a state change"


# --- status invariants ---------------------------------------------------------------
def units(status: ProjectStatus) -> dict[str, JobRunStatus]:
    """Everything that runs attempts, by the label events use: ``Teach``, ``Iterate/tiny``,
    ``Launch/router``."""
    found: dict[str, JobRunStatus] = {}
    for entry in status.stages:
        found[entry.name.value] = entry
        for candidate in entry.candidates:
            found[f"{entry.name.value}/{candidate.name}"] = candidate
    router = status.serving.router if status.serving else None
    if router is not None:
        found[f"{Stage.LAUNCH.value}/{router.name}"] = router
    return found


def generation_of(status: ProjectStatus) -> tuple[int, int]:
    """What one walk through the stages is: the spec's generation and the loop backs."""
    return status.observed_generation, status.lifecycle.redistillations


def problems_in(status: ProjectStatus) -> list[str]:
    """What is wrong with one status on its own."""
    problems = []
    names = [entry.name for entry in status.stages]
    if names and names != list(Stage):
        problems.append(f"stages out of order: {names}")
    by_name = {entry.name: entry for entry in status.stages}
    for index, stage in enumerate(RUN_ORDER):
        entry = by_name.get(stage)
        if entry is None or entry.state in (StageState.PENDING, StageState.SKIPPED):
            continue
        behind = [
            s.value
            for s in RUN_ORDER[:index]
            if s not in by_name or by_name[s].state != StageState.SUCCEEDED
        ]
        if behind:
            problems.append(f"{stage.value} is {entry.state.value} before {behind} succeeded")
    return problems


def problems_between(before: ProjectStatus, after: ProjectStatus) -> list[str]:
    """What is wrong with going from ``before`` to ``after`` (a later read)."""
    if after.observed_generation < before.observed_generation:
        return [f"observedGeneration went down: {before.observed_generation} -> "
                f"{after.observed_generation}"]  # fmt: skip
    if generation_of(before) != generation_of(after):
        return []  # a new walk through the stages: anything may start over
    problems = []
    now = units(after)
    for label, was in units(before).items():
        unit = now.get(label)
        if unit is None:
            if was.state.is_terminal():
                problems.append(f"{label} ({was.state.value}) vanished")
            continue
        if was.state.is_terminal() and unit.state != was.state:
            problems.append(f"{label} went from {was.state.value} to {unit.state.value}")
        if was.state == StageState.SUCCEEDED and (unit.result_uri, unit.input_hash) != (
            was.result_uri,
            was.input_hash,
        ):
            problems.append(
                f"{label}'s result moved: {was.result_uri} ({was.input_hash}) -> "
                f"{unit.result_uri} ({unit.input_hash})"
            )
        if unit.attempt < was.attempt:
            problems.append(f"{label}'s attempt went down: {was.attempt} -> {unit.attempt}")
        ids = (was.job.id if was.job else None, unit.job.id if unit.job else None)
        if unit.attempt == was.attempt and None not in ids and ids[0] != ids[1]:
            problems.append(f"{label}'s job changed within attempt {unit.attempt}: {ids}")
    return problems


def job_ids(status: ProjectStatus) -> set[str]:
    """Every job id a status names."""
    named = {unit.job.id for unit in units(status).values() if unit.job is not None}
    check = status.lifecycle.drift_check
    if check is not None and check.job is not None:
        named.add(check.job.id)
    return named


@dataclass(frozen=True)
class Violation:
    """An invariant broken between two reads (``before`` is None for a single read)."""

    problem: str
    before: dict[str, Any] | None
    after: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.problem}\n  before: {self.before}\n  after:  {self.after}"


# --- the watch -----------------------------------------------------------------------
@dataclass
class StatusWatch:
    """Reads the project (and its JobSubmitted events) every ``POLL_S`` from the live
    API in a thread, checks the invariants on every read and keeps what the killer and
    the audits need."""

    projects: Projects
    name: str
    uid: str
    on_read: Callable[[dict[str, Any]], None] = lambda raw: None
    latest: dict[str, Any] = field(default_factory=dict)
    reads: int = 0
    changes: int = 0  # reads on which some unit's state differed from the read before
    violations: list[Violation] = field(default_factory=list)
    named_jobs: set[str] = field(default_factory=set)  # by any status read
    submitted: list[str] = field(default_factory=list)  # job ids of JobSubmitted events
    errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self) -> Iterator[StatusWatch]:
        thread = threading.Thread(target=self._run, name="status-watch", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)

    def snapshot(self) -> tuple[str, str]:
        """The stage the project is in and its state, as last read."""
        stage = self.latest.get("stage")
        if not stage:
            return "(not started)", ""
        entry: dict[str, Any] = next(
            (s for s in self.latest.get("stages", []) if s["name"] == stage), {}
        )
        return stage, entry.get("state", "")

    def read_events(self) -> None:
        core = CoreV1Api(self.projects.custom.api_client)
        events = core.list_namespaced_event(
            self.projects.namespace,
            field_selector=f"involvedObject.uid={self.uid},reason=JobSubmitted",
        )
        found = [EVENT_JOB.search(e.message or "") for e in events.items]
        self.submitted = sorted({match.group(1) for match in found if match})

    def _run(self) -> None:
        previous: tuple[dict[str, Any], ProjectStatus] | None = None
        while not self._stop.wait(POLL_S):
            try:
                raw = self.projects.status(self.name)
                self.read_events()
            except (ApiException, OSError) as error:  # a blip of the API; read again
                self.errors[type(error).__name__] += 1
                continue
            self.latest, self.reads = raw, self.reads + 1
            self.on_read(raw)
            try:
                status = ProjectStatus.model_validate(raw)
            except ValidationError as error:
                self.violations.append(Violation(f"status does not parse: {error}", None, raw))
                continue
            self.named_jobs |= job_ids(status)
            self.violations += [Violation(p, None, raw) for p in problems_in(status)]
            if previous is not None:
                before_raw, before = previous
                found = problems_between(before, status)
                self.violations += [Violation(p, before_raw, raw) for p in found]
                was = {label: u.state for label, u in units(before).items()}
                if was != {label: u.state for label, u in units(status).items()}:
                    self.changes += 1
            previous = raw, status


# --- the killer ----------------------------------------------------------------------
@dataclass(frozen=True)
class KillPlan:
    """How many kills, spread over which stages (in run order; the last takes whatever
    the others left), how long after the operator is up, and how long to wait for an
    interesting moment (a job just submitted, a state just changed) before killing anyway."""

    kills: int
    stages: tuple[str, ...]
    delay_s: tuple[float, float]
    window_s: float


@dataclass(frozen=True)
class Kill:
    trigger: str
    stage: str
    state: str
    up_s: float  # how long the killed operator had been up (since kopf was ready)

    def __str__(self) -> str:
        return f"{self.stage:<13} {self.state:<10} {self.up_s:5.1f}s up  {self.trigger}"


class Killer:
    """SIGKILLs the operator at random points and starts it again at once."""

    def __init__(
        self, operator: OperatorProcess, watch: StatusWatch, plan: KillPlan, rng: random.Random
    ) -> None:
        self.operator, self.watch, self.plan, self.rng = operator, watch, plan, rng
        self.kills: list[Kill] = []
        self._quota: dict[str, int] = {}

    def run(self, done: Callable[[], bool], *, timeout_s: float) -> None:
        """Kill and restart until ``done``; stop killing once the plan's kills are in."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the project did not get there in {timeout_s:.0f}s "
                    f"({len(self.kills)} kills): {self.watch.latest}"
                )
            self.assert_alive()
            if len(self.kills) >= self.plan.kills or not self._may_kill():
                time.sleep(0.2)
                continue
            self._kill_once(done)

    def assert_alive(self) -> None:
        """The operator exits only when we kill it."""
        if not self.operator.is_running():
            raise AssertionError(
                f"the operator exited on its own (status {self.operator.exit_code()}):\n"
                f"{self.operator.log_text()[-4000:]}"
            )

    def per_stage(self) -> Counter[str]:
        return Counter(kill.stage for kill in self.kills)

    def _may_kill(self) -> bool:
        stage, _ = self.watch.snapshot()
        if stage not in self.plan.stages or stage == self.plan.stages[-1]:
            return True
        if stage not in self._quota:  # first seen: its share of the kills still to come
            left = len(self.plan.stages) - self.plan.stages.index(stage)
            self._quota[stage] = math.ceil((self.plan.kills - len(self.kills)) / left)
        return self.per_stage()[stage] < self._quota[stage]

    def _kill_once(self, done: Callable[[], bool]) -> None:
        ready = self._wait_ready()
        trigger = self.rng.choices((RANDOM, AFTER_SUBMIT, AFTER_CHANGE), weights=(2, 1, 1))[0]
        delay = self.rng.uniform(*self.plan.delay_s)
        submitted, changes = len(self.watch.submitted), self.watch.changes
        until = ready + (delay if trigger == RANDOM else self.plan.window_s)
        while time.monotonic() < until:
            if done():
                return
            if trigger == AFTER_SUBMIT and len(self.watch.submitted) > submitted:
                break
            if trigger == AFTER_CHANGE and self.watch.changes > changes:
                break
            time.sleep(0.05)
        else:
            trigger = RANDOM if trigger == RANDOM else f"{RANDOM} (none came: {trigger})"
        if done() or not self._may_kill():
            return
        self.assert_alive()
        stage, state = self.watch.snapshot()
        self.operator.kill()
        self.kills.append(Kill(trigger, stage, state, time.monotonic() - ready))
        self.operator.start()

    def _wait_ready(self) -> float:
        """When the running operator (its latest start) could talk to the API server."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while READY_LINE not in self.operator.log_text().rsplit(START_MARK, 1)[-1]:
            self.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"the operator was not up in {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
        return time.monotonic()


# --- the audits ----------------------------------------------------------------------
def project_jobs(ray_jobs: JobSubmissionClient, uid: str) -> list[JobDetails]:
    """Ray's submissions for the project with ``uid`` (naming.job_id starts them so)."""
    prefix = f"dp-{uid.replace('-', '')[:8]}-"
    return [job for job in ray_jobs.list_jobs() if (job.submission_id or "").startswith(prefix)]


def job_key(job: JobDetails) -> tuple[str, str, int]:
    """(stage, candidate, attempt) of a submission."""
    labels = job.metadata or {}
    match = ATTEMPT.search(job.submission_id or "")
    attempt = int(match.group(1)) if match else -1
    return labels.get(naming.STAGE_LABEL, "?"), labels.get("distill.dev/candidate", ""), attempt


def submission_problems(
    jobs: list[JobDetails], *, project: str, named: set[str], submitted: list[str]
) -> list[str]:
    """Duplicates and strangers among the project's Ray jobs, and submits Ray lost."""
    problems = []
    ids = {job.submission_id for job in jobs}
    for job in jobs:
        if (job.metadata or {}).get(naming.PROJECT_LABEL) != project:
            problems.append(f"{job.submission_id} is not labelled as {project}'s: {job.metadata}")
        if job.submission_id not in named | set(submitted):
            problems.append(f"{job.submission_id} is named by no status and no JobSubmitted event")
    for key, count in Counter(job_key(job) for job in jobs).items():
        if count != 1:
            same = sorted(str(j.submission_id) for j in jobs if job_key(j) == key)
            problems.append(f"{count} submissions for (stage, candidate, attempt) {key}: {same}")
    problems += [f"JobSubmitted names {job}, which Ray does not have" for job in submitted
                 if job not in ids]  # fmt: skip
    return problems


def result_problems(status: ProjectStatus) -> list[str]:
    """Every concluded unit's result is where status says, made from its input; and no
    unit needed a second attempt."""
    problems = []
    for label, unit in units(status).items():
        if unit.attempt != 0:
            problems.append(f"{label} is at attempt {unit.attempt}: {unit.reason}: {unit.message}")
        ended_with_result = unit.state == StageState.SUCCEEDED or (
            unit.state == StageState.FAILED and unit.reason not in JOB_FAILURES
        )
        if not ended_with_result or unit.result_uri is None:
            continue
        result = read_result(unit.result_uri)
        if result is None:
            problems.append(f"{label}'s result {unit.result_uri} is gone")
        elif result.input_hash != unit.input_hash:
            problems.append(
                f"{label}'s result {unit.result_uri} is of input {result.input_hash}, "
                f"status says {unit.input_hash}"
            )
    return problems


def report(killer: Killer, jobs: list[JobDetails], seconds: float, seed: int, *, log: str) -> str:
    """What a run did, for the log and for any failure's message."""
    lines = [f"seed {seed}: {len(killer.kills)} kills in {seconds:.0f}s"]
    lines += [f"  kill {n:2}: {kill}" for n, kill in enumerate(killer.kills, 1)]
    per_stage = ", ".join(f"{stage} {count}" for stage, count in killer.per_stage().items())
    lines.append(f"  kills per stage: {per_stage}")
    triggers = Counter(kill.trigger for kill in killer.kills)
    lines.append(f"  kills by trigger: {', '.join(f'{t}: {n}' for t, n in triggers.items())}")
    by_stage = Counter(job_key(job)[0] for job in jobs)
    lines.append(f"  Ray jobs: {len(jobs)} ({', '.join(f'{s} {n}' for s, n in by_stage.items())})")
    # The operator logs each submit call; a restart may repeat one, which Ray answers
    # with the job it already has.
    calls = Counter(SUBMITTED.findall(log))
    again = {job: n for job, n in calls.items() if n > 1}
    lines.append(f"  submit calls: {sum(calls.values())}, repeated for the same id: {again}")
    lines.append(f"  status reads: {killer.watch.reads}, read errors: {dict(killer.watch.errors)}")
    return "\n".join(lines)
