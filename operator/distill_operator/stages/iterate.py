"""Iterate: train the smallest plausible student and larger ones; keep the smallest
that clears quality, cost and latency.

Each candidate trains in its own job (``distill_jobs.train``) on its own input, so adding
a candidate re-uses the others' results. A candidate's result says whether it clears the
bar (``exitConditionMet``, with a message naming any target it misses and by how much)
and carries the numbers the operator chooses and reports by (``SELECTION_METRICS``) and
the trained model (``artifacts["student"]``). While it trains, the job may write
``progress.json`` beside its result (``PROGRESS_METRICS``), shown in status.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from distill_operator.api import CandidateStatus, ProjectSpec, Stage, StageState
from distill_operator.stages.base import StageDefinition, Verdict
from distill_operator.stages.define import bar_in_words

# Result metrics the operator reads; kept first when status has room for only some.
SELECTION_METRICS = ("parameters", "score", "latency_p95_ms", "cost_per_1k_requests")
PROGRESS_METRICS = ("step", "loss", "tokensPerSecond")


def exit_condition(spec: ProjectSpec) -> str:
    names = ", ".join(c.name for c in spec.students.candidates)
    return f"smallest of ({names}) that clears {bar_in_words(spec)}"


def candidates(spec: ProjectSpec) -> list[tuple[str, dict[str, Any]]]:
    """One input per candidate: the bar, the shared training settings and that candidate
    (nothing about the other candidates, so adding one leaves these inputs as they are)."""
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    training = dumped["students"]["training"]
    return [
        (
            candidate["name"],
            {"bar": dumped["bar"], "students": {"training": training, "candidate": candidate}},
        )
        for candidate in dumped["students"]["candidates"]
    ]


def choose(
    spec: ProjectSpec, trained: Sequence[CandidateStatus]
) -> tuple[CandidateStatus | None, Verdict]:
    """The candidate with the fewest measured parameters among those that clear the bar.

    Ties, and candidates whose result has no parameter count, go by spec order.
    """
    passed = [c for c in trained if c.state == StageState.SUCCEEDED]
    if not passed:
        misses = "; ".join(f"{c.name}: {c.message}" for c in trained)
        return None, Verdict(
            False, "NoCandidateClearsBar", f"no candidate clears the bar — {misses}"
        )
    chosen = min(passed, key=lambda c: c.metrics.get("parameters", math.inf))  # first of equals
    others = [c.name for c in passed if c is not chosen]
    if not others:
        why = "the only one that clears the bar"
    else:
        verb = "clears" if len(others) == 1 else "clear"
        why = f"the smallest that clears the bar; {' and '.join(others)} also {verb} it"
    return chosen, Verdict(True, "StudentSelected", f"{_summary(spec, chosen)}: {why}")


def _summary(spec: ProjectSpec, candidate: CandidateStatus) -> str:
    """``tiny (1.2M parameters, score 0.91 ≥ 0.90, p95 3 ms, 0.0004/1k requests)``."""
    numbers = candidate.metrics
    shown = []
    if "parameters" in numbers:
        shown.append(f"{_count(numbers['parameters'])} parameters")
    if "score" in numbers:
        score, bar = numbers["score"], spec.bar.threshold
        shown.append(f"score {score:.2f} {'≥' if score >= bar else '<'} {bar:.2f}")
    if "latency_p95_ms" in numbers:
        shown.append(f"p95 {numbers['latency_p95_ms']:.3g} ms")
    if "cost_per_1k_requests" in numbers:
        shown.append(f"{numbers['cost_per_1k_requests']:.2g}/1k requests")
    return f"{candidate.name} ({', '.join(shown)})" if shown else candidate.name


def _count(parameters: float) -> str:
    for suffix, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= size:
            return f"{parameters / size:.3g}{suffix}"
    return f"{parameters:.0f}"


DEFINITION = StageDefinition(
    stage=Stage.ITERATE,
    exit_condition=exit_condition,
    workload="distill_jobs.train",
    reads=("bar", "students"),
    upstream=(Stage.SOURCE, Stage.TEACH),
    parts=candidates,
    choose=choose,
    accelerators=lambda spec: (
        spec.students.training.workers * spec.students.training.gpus_per_worker
    ),
)
