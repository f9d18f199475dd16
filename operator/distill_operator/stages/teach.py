"""Teach: teacher outputs collected, verified and filtered; the teacher's terms acknowledged."""

from __future__ import annotations

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import Facts, StageDefinition, Verdict


def exit_condition(spec: ProjectSpec) -> str:
    return (
        f"clean outputs of {spec.teacher.backend}:{spec.teacher.model} kept, wrong ones "
        "dropped, a review sample queued; terms acknowledged"
    )


def preflight(spec: ProjectSpec, facts: Facts) -> Verdict | None:
    if spec.teacher.terms_acknowledged:
        return None
    return Verdict(
        met=False,
        reason="TeacherTermsNotAcknowledged",
        message="spec.teacher.termsAcknowledged: confirm that the teacher's terms permit "
        "training on its outputs, then set it to true",
    )


DEFINITION = StageDefinition(
    stage=Stage.TEACH,
    exit_condition=exit_condition,
    workload="distill_jobs.teach",
    reads=("task", "teacher", "teach"),
    upstream=(Stage.SOURCE,),
    preflight=preflight,
)
