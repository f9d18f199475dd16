"""The stage at fault when a project fails or is weak: DISTILL's debugging map.

Broad weakness points to Source (the data), specific failing slices to Teach (the
teacher is wrong there) or Look (the evaluation cannot tell), decay over time to Launch.
A workload that has the evidence (Look's slice table) names the stage in its result;
otherwise a failed stage is at fault itself, except a sweep in which every student is
weak on quality, which is the data's fault more often than the students'.
"""

from __future__ import annotations

from distill_jobs.contract import StageResult
from distill_operator.api import Diagnosis, ProjectSpec, Stage, StageStatus
from distill_operator.stages import Verdict

MAX_MESSAGE = 4096


def diagnose(
    spec: ProjectSpec, entry: StageStatus, verdict: Verdict, result: StageResult | None
) -> Diagnosis | None:
    """The diagnosis of a stage that just concluded, or None when nothing is wrong."""
    if result is not None and result.diagnosis is not None:
        named = result.diagnosis
        stage = Stage(named.stage) if named.stage in Stage.__members__.values() else entry.name
        return Diagnosis(stage=stage, reason=named.reason, message=named.message[:MAX_MESSAGE])
    if verdict.met:
        return None
    weak = _broadly_weak_students(spec, entry)
    if weak is not None:
        return weak
    return Diagnosis(stage=entry.name, reason=verdict.reason, message=verdict.message[:MAX_MESSAGE])


def _broadly_weak_students(spec: ProjectSpec, entry: StageStatus) -> Diagnosis | None:
    """Every candidate was trained and measured, and every one misses on quality."""
    if entry.name != Stage.ITERATE or not entry.candidates:
        return None
    scores = [c.metrics.get("score") for c in entry.candidates if c.reason == "BarMissed"]
    measured = [score for score in scores if score is not None]
    threshold = spec.bar.threshold
    if len(measured) != len(entry.candidates) or max(measured) >= threshold:
        return None
    return Diagnosis(
        stage=Stage.SOURCE,
        reason="BroadWeakness",
        message=f"every student candidate misses the quality bar (best score "
        f"{max(measured):.3g} < {threshold:g}); students weak across the board point at the "
        "data: check that the traffic covers the task and how much of it Teach kept",
    )
