"""Investigate and Look workload (``python -m distill_jobs.evaluate --input URI``).

One workload for the two stages that judge models on Source's held-out set, chosen by
``stage_input.stage``:

- ``Investigate`` (one job per alternative): a cheaper alternative (an off-the-shelf
  model, the quantized teacher, another prompt) answers the held-out prompts and is
  judged by the bar: ``BarCleared`` or ``BarMissed`` and by how much
  (:mod:`distill_jobs.evaluation.alternatives`).
- ``Look``: Iterate's chosen student against the teacher, slice by slice:
  ``SlicesPass`` or ``SlicesBelowBar``, with a diagnosis naming the stage at fault
  (:mod:`distill_jobs.evaluation.look`).

A user's mistake (a missing model, a quantization the workers cannot run, held-out
prompts without references) is a failed result with a reason and a message naming the
field, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType

from distill_jobs.contract import StageInput, StageResult
from distill_jobs.evaluation.alternatives import investigate
from distill_jobs.evaluation.look import look
from distill_jobs.evaluation.outcome import Outcome
from distill_jobs.runner import stage_main
from distill_jobs.spending import SpendMeter
from distill_jobs.upstream import StageFailure

STAGES: MappingProxyType[str, Callable[[StageInput, SpendMeter], Outcome]] = MappingProxyType(
    {"Investigate": investigate, "Look": look}
)


def work(stage_input: StageInput) -> StageResult:
    """Investigate (one alternative) or Look (the student against the teacher)."""
    evaluate = STAGES.get(stage_input.stage)
    if evaluate is None:
        outcome = Outcome(
            met=False,
            reason="InvalidInput",
            message=f"distill_jobs.evaluate runs {' and '.join(STAGES)}, not {stage_input.stage}",
        )
        return outcome.result(stage_input)
    meter = SpendMeter()
    try:
        outcome = evaluate(stage_input, meter)
    except StageFailure as failure:
        outcome = Outcome(
            met=False, reason=failure.reason, message=str(failure), metrics=failure.metrics
        )
    # What the attempt spent, passed or failed, for the cost ledger (status.cost).
    spent = {**outcome.metrics, **meter.spend().metrics()}
    return replace(outcome, metrics=spent).result(stage_input)


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
