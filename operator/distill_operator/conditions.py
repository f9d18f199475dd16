"""Conditions derived from the stages: kstatus' Ready/Reconciling/Stalled, and one per
stage exit condition. Derived every pass, so they can never disagree with the stages."""

from __future__ import annotations

from dataclasses import dataclass

from distill_operator.api import Condition, ConditionStatus, Phase, ProjectStatus, StageState

READY_PHASES = (Phase.SUCCEEDED, Phase.MONITORING, Phase.BASELINE_SUFFICIENT)


@dataclass(frozen=True)
class Problem:
    """Why the project cannot progress until someone changes something."""

    reason: str
    message: str


def _stalled_by(status: ProjectStatus, problem: Problem | None) -> Problem | None:
    if problem is not None:
        return problem
    if status.phase != Phase.FAILED:
        return None
    failed = next((s for s in status.stages if s.state == StageState.FAILED), None)
    if failed is None:
        return Problem("Failed", "the project failed")
    return Problem(failed.reason or "StageFailed", f"{failed.name} failed: {failed.message}")


def _summaries(status: ProjectStatus, stalled: Problem | None) -> list[tuple[str, bool, str, str]]:
    current = next((s for s in status.stages if s.name == status.stage), None)
    doing = f"{current.name}: {current.message or current.state}" if current else "starting"
    ready = status.phase in READY_PHASES and stalled is None
    reconciling = stalled is None and not ready and status.phase != Phase.SUSPENDED
    why = f"Stage{status.stage or 'Define'}"
    if status.pending_generation is not None:
        why = "SpecChangePending"
        doing = (
            f"generation {status.pending_generation} is picked up when {status.stage} ends; "
            + doing
        )
    summaries = [
        ("Ready", ready, status.phase.value, doing if not ready else f"project {status.phase}"),
        ("Reconciling", reconciling, why, doing),
        (
            "Stalled",
            stalled is not None,
            stalled.reason if stalled else "NotStalled",
            stalled.message if stalled else "",
        ),
    ]
    drifted = status.lifecycle.drifted
    if drifted is not None:
        reason = "Drifted" if drifted else "NoDrift"
        summaries.append(("Drifted", drifted, reason, status.lifecycle.drift_message))
    return summaries


def derive_conditions(
    status: ProjectStatus, generation: int, now: str, problem: Problem | None = None
) -> list[Condition]:
    """The conditions for ``status``; a condition keeps its transition time until it flips."""
    previous = {c.type: c for c in status.conditions}
    stalled = _stalled_by(status, problem)
    wanted: list[tuple[str, ConditionStatus, str, str]] = [
        (kind, ConditionStatus.TRUE if holds else ConditionStatus.FALSE, reason, message)
        for kind, holds, reason, message in _summaries(status, stalled)
    ]
    for entry in status.stages:
        verdict = {
            StageState.SUCCEEDED: ConditionStatus.TRUE,
            StageState.FAILED: ConditionStatus.FALSE,
        }.get(entry.state, ConditionStatus.UNKNOWN)
        reason = entry.reason or entry.state.value
        extra = entry.message if entry.message not in ("", entry.exit_condition) else ""
        message = entry.exit_condition + (f" — {extra}" if extra else "")
        wanted.append((entry.name.exit_condition_type, verdict, reason, message))
    conditions = []
    for kind, state, reason, message in wanted:
        before = previous.get(kind)
        since = before.last_transition_time if before and before.status == state else now
        conditions.append(
            Condition(
                type=kind,
                status=state,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=since,
            )
        )
    return conditions
