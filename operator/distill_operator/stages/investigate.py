"""Investigate: cheaper alternatives are evaluated first; one that clears the bar ends
the project with outcome BaselineSufficient.

Each alternative is evaluated by its own job (``distill_jobs.evaluate``) on Source's
held-out set, the same prompts Look later judges the student on, so Source runs before
Investigate (see ``stages.RUN_ORDER``); nothing costly (teacher collection, training)
runs until every alternative has been ruled out. An alternative's result says whether it
clears the bar (``BarCleared``) or by how much it misses (``BarMissed``); any other
failure means it could not be evaluated, which is no evidence either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from distill_operator.api import CandidateStatus, Phase, ProjectSpec, Stage, StageState
from distill_operator.stages.base import StageDefinition, Verdict, dumped_spec
from distill_operator.stages.define import bar_in_words

EVALUATED = ("BarCleared", "BarMissed")


def exit_condition(spec: ProjectSpec) -> str:
    names = ", ".join(a.name for a in spec.investigate.alternatives)
    return f"evidence that every cheaper alternative ({names}) misses {bar_in_words(spec)}"


def alternatives(spec: ProjectSpec) -> list[tuple[str, dict[str, Any]]]:
    """One input per alternative: what evaluating it needs, and nothing about the others.

    ``serving`` is where and at what price a local model is measured: the students'
    workers, so an alternative's cost and a student's are comparable.
    """
    dumped = dumped_spec(spec)
    training = dumped["students"]["training"]
    serving = {
        key: training[key] for key in ("pricePerAcceleratorHour", "cpusPerWorker", "gpusPerWorker")
    }
    shared = {key: dumped[key] for key in ("task", "bar", "teacher", "teach")}
    return [
        (alternative["name"], {**shared, "alternative": alternative, "serving": serving})
        for alternative in dumped["investigate"]["alternatives"]
    ]


def choose(
    spec: ProjectSpec, evaluated: Sequence[CandidateStatus]
) -> tuple[CandidateStatus | None, Verdict]:
    """The cheapest alternative that clears the bar ends the project; if none does, every
    one must have been evaluated and missed, and the misses are the stage's evidence."""
    cleared = [a for a in evaluated if a.state == StageState.SUCCEEDED]
    if cleared:
        chosen = min(cleared, key=lambda a: a.metrics.get("cost_per_1k_requests", math.inf))
        return chosen, Verdict(
            True,
            "BaselineSufficient",
            f"{chosen.message}; no distillation needed: serve {chosen.name}",
            outcome=Phase.BASELINE_SUFFICIENT,
        )
    unknown = [a for a in evaluated if a.reason not in EVALUATED]
    if unknown:
        why = "; ".join(f"{a.name}: {a.reason}: {a.message}" for a in unknown)
        return None, Verdict(
            False,
            "AlternativeNotEvaluated",
            f"{len(unknown)} of {len(evaluated)} alternatives could not be evaluated, so "
            f"there is no evidence that they miss the bar — {why}",
        )
    misses = "; ".join(a.message for a in evaluated)
    return None, Verdict(
        True, "AlternativesRuledOut", f"every alternative misses the bar — {misses}"
    )


DEFINITION = StageDefinition(
    stage=Stage.INVESTIGATE,
    exit_condition=exit_condition,
    workload="distill_jobs.evaluate",
    reads=("task", "bar", "teacher", "teach", "investigate", "students"),
    upstream=(Stage.SOURCE,),
    parts=alternatives,
    choose=choose,
    # A local alternative is measured on one worker like a student's: one GPU if they have any.
    accelerators=lambda spec: 1.0 if spec.students.training.gpus_per_worker > 0 else 0.0,
)
