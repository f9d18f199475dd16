"""The stage timeline of a project's status: one entry per stage and per alternative or
candidate, in the order they ran, with how long each took (or has run so far), and the
jobs worth looking at now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from distill_operator.cli import render


@dataclass(frozen=True)
class TimelineEntry:
    """One stage, or one alternative or candidate of a stage, as the timeline shows it."""

    stage: str
    candidate: str | None
    state: str
    reason: str
    message: str
    exit_condition: str
    attempt: int
    started_at: str | None
    finished_at: str | None
    seconds: float | None  # how long it took; while it runs, how long so far
    job: Mapping[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.candidate}" if self.candidate else self.stage

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "candidate": self.candidate,
            "state": self.state,
            "reason": self.reason,
            "message": self.message,
            "exitCondition": self.exit_condition,
            "attempt": self.attempt,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "durationSeconds": self.seconds,
            "job": job_json(self.job),
        }


def job_json(job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JobRecord with every key present, so scripts need no defaults."""
    if not job:
        return None
    keys = ("mode", "id", "state", "message", "dashboard", "submittedAt")
    return {key: job.get(key) for key in keys}


def timeline(project: Mapping[str, Any], *, now: datetime) -> list[TimelineEntry]:
    """One entry per stage (then its alternatives or candidates), in the order they ran;
    stages not started yet come last, in DISTILL order."""
    stages = (project.get("status") or {}).get("stages") or []
    ran = sorted(stages, key=lambda s: (not s.get("startedAt"), s.get("startedAt") or ""))
    entries = []
    for stage in ran:
        entries.append(_entry(stage["name"], None, stage, now=now))
        entries += [
            _entry(stage["name"], c["name"], c, now=now) for c in stage.get("candidates", [])
        ]
    return entries


def _entry(
    stage: str, candidate: str | None, entry: Mapping[str, Any], *, now: datetime
) -> TimelineEntry:
    started, finished = entry.get("startedAt"), entry.get("finishedAt")
    state = entry.get("state") or "Pending"
    return TimelineEntry(
        stage=stage,
        candidate=candidate,
        state=state,
        reason=entry.get("reason") or "",
        message=entry.get("message") or "",
        exit_condition=entry.get("exitCondition") or "",
        attempt=int(entry.get("attempt") or 0),
        started_at=started,
        finished_at=finished,
        seconds=_seconds(started, finished if state != "Running" else None, now=now),
        job=entry.get("job"),
    )


def _seconds(started: str | None, finished: str | None, *, now: datetime) -> float | None:
    begin = render.parse_time(started)
    if begin is None:
        return None
    end = render.parse_time(finished) or now
    return (end - begin).total_seconds()


def timeline_rows(
    project: Mapping[str, Any], *, now: datetime | None = None
) -> list[dict[str, str]]:
    """The timeline as text cells: stage, state, started, took, reason, detail, job."""
    return [
        {
            "stage": entry.label,
            "state": entry.state,
            "started": render.short_time(entry.started_at),
            "took": took(entry),
            "reason": entry.reason,
            "detail": entry.message or entry.exit_condition,
            "job": (entry.job or {}).get("id", ""),
        }
        for entry in timeline(project, now=now or datetime.now(UTC))
    ]


def took(entry: TimelineEntry) -> str:
    took = render.duration(entry.seconds)
    return f"{took}…" if took and entry.state == "Running" else took


@dataclass(frozen=True)
class CurrentJob:
    """A job worth looking at now: one that runs, else the last one that ran."""

    what: str  # Teach, Iterate/tiny, router
    stage_option: str  # the logs command's --stage
    candidate: str | None
    job: Mapping[str, Any]
    state: str  # of its stage, candidate or router: the job record's own can be stale

    @property
    def running(self) -> bool:
        return self.state == "Running"

    def logs_command(self, *, name: str, namespace: str) -> str:
        extra = f" --candidate {self.candidate}" if self.candidate else ""
        return f"kubectl distill logs {name} -n {namespace} --stage {self.stage_option}{extra}"

    def to_json(self, *, name: str, namespace: str) -> dict[str, Any]:
        return {
            "what": self.what,
            "state": self.state,
            "running": self.running,
            "job": job_json(self.job),
            "logs": self.logs_command(name=name, namespace=namespace),
        }


def current_jobs(project: Mapping[str, Any], *, now: datetime) -> list[CurrentJob]:
    """The jobs running now (stages, candidates, the router while it serves); when none
    runs, the job that started last."""
    entries = [e for e in timeline(project, now=now) if e.job]
    found = [_current(e) for e in entries if e.state == "Running"]
    status = project.get("status") or {}
    router = (status.get("serving") or {}).get("router") or {}
    if router.get("job") and (router.get("state") == "Running" or not found):
        state = router.get("state") or "Pending"
        found.append(CurrentJob("router", "launch", None, router["job"], state))
    if found:
        return found
    last = max(entries, key=lambda e: e.started_at or "", default=None)
    return [_current(last)] if last else []


def _current(entry: TimelineEntry) -> CurrentJob:
    assert entry.job is not None
    return CurrentJob(entry.label, entry.stage.lower(), entry.candidate, entry.job, entry.state)
