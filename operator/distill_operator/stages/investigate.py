"""Investigate: cheaper alternatives are evaluated first; one that clears the bar ends
the project with outcome BaselineSufficient."""

from __future__ import annotations

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import StageDefinition
from distill_operator.stages.define import bar_in_words


def exit_condition(spec: ProjectSpec) -> str:
    names = ", ".join(a.name for a in spec.investigate.alternatives)
    return f"evidence that every cheaper alternative ({names}) misses {bar_in_words(spec)}"


DEFINITION = StageDefinition(
    stage=Stage.INVESTIGATE,
    exit_condition=exit_condition,
    workload="distill_jobs.evaluate",
    reads=("task", "bar", "teacher", "investigate", "source"),
)
