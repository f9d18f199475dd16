"""Source: representative prompts from production traffic, with a held-out set."""

from __future__ import annotations

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import StageDefinition


def exit_condition(spec: ProjectSpec) -> str:
    critical = ", ".join(f"{c.name}>={c.min_count}" for c in spec.source.critical_slices)
    return (
        "training set reflects traffic"
        + (f" incl. critical slices ({critical})" if critical else "")
        + f"; {spec.source.held_out_fraction:.0%} held out"
    )


DEFINITION = StageDefinition(
    stage=Stage.SOURCE,
    exit_condition=exit_condition,
    workload="distill_jobs.source",
    reads=("task", "source"),
)
