"""What one pass changed, read from the status it began with and the status it wrote.

Only a change witnessed within one pass counts. A restarted operator reads a status whose
units are already finished and sees no change, so nothing is counted twice; a pass whose
status write failed is repeated, and only the repeat (once written) is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from distill_operator.api import JobRunStatus, ProjectStatus, Stage, StageState
from distill_operator.machine import parse_timestamp


class UnitKind(StrEnum):
    """What a unit of work is, as the metrics tell them apart."""

    STAGE = "stage"
    CANDIDATE = "candidate"  # Investigate's alternatives and Iterate's student candidates
    SERVICE = "service"  # the router and drift checks: they serve rather than finish


@dataclass(frozen=True)
class Finished:
    """A stage or a candidate reached a terminal state having started: it took ``seconds``."""

    kind: UnitKind
    stage: str
    outcome: str  # Succeeded or Failed
    seconds: float


@dataclass(frozen=True)
class AttemptFailed:
    """A job attempt ended without success: it is retried, or its unit gave up.

    ``reason`` is the unit's: LaunchRefused (the platform refused the submit), JobFailed,
    DeadlineExceeded, or, for a job whose own result failed the exit condition, the
    result's reason.
    """

    stage: str
    reason: str


@dataclass(frozen=True)
class Changes:
    """Everything one pass changed that the metrics count."""

    finished: tuple[Finished, ...] = ()
    failed_attempts: tuple[AttemptFailed, ...] = ()


UnitKey = tuple[UnitKind, str, str]  # (kind, stage, part name or "")


def units(status: ProjectStatus) -> dict[UnitKey, JobRunStatus]:
    """Every unit of work in ``status``, keyed the same way in every pass."""
    found: dict[UnitKey, JobRunStatus] = {}
    for entry in status.stages:
        found[(UnitKind.STAGE, entry.name.value, "")] = entry
        for candidate in entry.candidates:
            found[(UnitKind.CANDIDATE, entry.name.value, candidate.name)] = candidate
    services = [status.serving.router if status.serving else None, status.lifecycle.drift_check]
    for service in services:
        if service is not None:  # both belong to Launch: they keep its student serving
            found[(UnitKind.SERVICE, Stage.LAUNCH.value, service.name)] = service
    return found


def changes(before: ProjectStatus, after: ProjectStatus) -> Changes:
    """The units that finished and the attempts that failed between two statuses.

    A unit absent before is new (Pending): a project's first pass may finish Define.
    """
    earlier = units(before)
    finished: list[Finished] = []
    failed: list[AttemptFailed] = []
    for key, unit in units(after).items():
        kind, stage, _ = key
        was = earlier.get(key)
        seconds = _duration(unit)  # None for a stage skipped without running: nothing to tell
        was_terminal = was is not None and was.state.is_terminal()
        ends = kind != UnitKind.SERVICE and unit.state.is_terminal() and not was_terminal
        if ends and seconds is not None:
            finished.append(Finished(kind, stage, unit.state.value, seconds))
        if was is not None and _attempt_failed(was, unit):
            failed.append(AttemptFailed(stage, unit.reason or "Unknown"))
    return Changes(tuple(finished), tuple(failed))


def _attempt_failed(was: JobRunStatus, now: JobRunStatus) -> bool:
    """The unit had a job, and now retries it (the next attempt) or has failed."""
    if was.job is None or was.state != StageState.RUNNING:
        return False
    retried = now.state == StageState.RUNNING and now.attempt > was.attempt
    return retried or now.state == StageState.FAILED


def _duration(unit: JobRunStatus) -> float | None:
    if not unit.started_at or not unit.finished_at:
        return None
    try:
        began, ended = parse_timestamp(unit.started_at), parse_timestamp(unit.finished_at)
    except ValueError:  # a hand-edited status: no duration rather than a failed pass
        return None
    return max((ended - began).total_seconds(), 0.0)
