"""Launch and lifecycle: the student behind a router, rolled out step by step."""

from __future__ import annotations

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import StageDefinition


def exit_condition(spec: ProjectSpec) -> str:
    steps = " -> ".join(
        s.mode if s.mode != "canary" else f"{s.percent}%" for s in spec.launch.steps
    )
    return f"student serving behind the router ({steps or 'full'}), drift watched"


DEFINITION = StageDefinition(
    stage=Stage.LAUNCH,
    exit_condition=exit_condition,
    workload="distill_jobs.serve",
    reads=("launch", "bar"),
    upstream=(Stage.ITERATE, Stage.LOOK),
)
