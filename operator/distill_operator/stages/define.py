"""Define: the task in one sentence and a full bar. Nothing runs without them."""

from __future__ import annotations

import itertools
import re

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import Facts, StageDefinition, Verdict

# A sentence ends at . ! or ? followed by space and a capital letter (a new sentence).
_SENTENCE_BREAK = re.compile(r"[.!?]\s+(?=[A-Z])")


def bar_in_words(spec: ProjectSpec) -> str:
    bar = spec.bar
    return (
        f"{bar.metric} >= {bar.threshold:g}, p95 <= {bar.latency_p95_ms:g} ms, "
        f"<= {bar.cost_per_1k_requests:g}/1k requests"
    )


def exit_condition(spec: ProjectSpec) -> str:
    return f"task and bar defined: {bar_in_words(spec)}"


def _rollout_problem(spec: ProjectSpec) -> str | None:
    shares = [
        step.percent if step.mode == "canary" else 100
        for step in spec.launch.steps
        if step.mode != "shadow"
    ]
    if any(later < earlier for earlier, later in itertools.pairwise(shares)):
        return f"spec.launch.steps: student traffic must not shrink from step to step ({shares})"
    if spec.launch.steps and spec.launch.steps[-1].mode != "full":
        return "spec.launch.steps: the last step must be full (the rollout ends there)"
    return None


def decide(spec: ProjectSpec, facts: Facts) -> Verdict:
    task = spec.task.strip()
    if "\n" in task or _SENTENCE_BREAK.search(task):
        return Verdict(
            met=False,
            reason="TaskNotOneSentence",
            message="spec.task: state the task in one sentence; a vague task produces a "
            f"vague result (got: {task[:120]!r})",
        )
    if facts.missing_secrets:
        return Verdict(
            met=False,
            reason="SecretNotFound",
            message="referenced Secret keys do not exist in the project's namespace: "
            + ", ".join(facts.missing_secrets),
            waits=True,
        )
    rollout = _rollout_problem(spec)
    if rollout:
        return Verdict(met=False, reason="InvalidRollout", message=rollout)
    return Verdict(met=True, reason="TaskDefined", message=exit_condition(spec))


DEFINITION = StageDefinition(stage=Stage.DEFINE, exit_condition=exit_condition, decide=decide)
