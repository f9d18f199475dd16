"""Look: student vs teacher on held-out data, slice by slice, disagreements shown.

Its job (``distill_jobs.evaluate``) writes the slice table, the disagreements and a
ConfigMap-ready summary to the artifact store; the operator publishes the summary as a
ConfigMap before the stage concludes (``report``), so ``kubectl`` shows the slices.
"""

from __future__ import annotations

from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages.base import StageDefinition


def exit_condition(spec: ProjectSpec) -> str:
    bars = [
        f"{c.name}>={c.threshold if c.threshold is not None else spec.bar.threshold:g}"
        for c in spec.source.critical_slices
    ]
    slices = f"; critical slices {', '.join(bars)}" if bars else ""
    return f"student clears {spec.bar.metric}>={spec.bar.threshold:g} on held-out data{slices}"


DEFINITION = StageDefinition(
    stage=Stage.LOOK,
    exit_condition=exit_condition,
    workload="distill_jobs.evaluate",
    reads=("bar", "look", "source", "teacher", "teach"),
    upstream=(Stage.SOURCE, Stage.TEACH, Stage.ITERATE),
    report=True,
)
