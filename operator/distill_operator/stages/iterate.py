"""Iterate: train the smallest plausible student and larger ones; keep the smallest
that clears quality, cost and latency."""

from __future__ import annotations

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import StageDefinition
from distill_operator.stages.define import bar_in_words


def exit_condition(spec: ProjectSpec) -> str:
    names = ", ".join(c.name for c in spec.students.candidates)
    return f"smallest of ({names}) that clears {bar_in_words(spec)}"


DEFINITION = StageDefinition(
    stage=Stage.ITERATE,
    exit_condition=exit_condition,
    workload="distill_jobs.train",
    reads=("bar", "students"),
    upstream=(Stage.SOURCE, Stage.TEACH),
)
