"""Source's held-out prompts, the ones the bar's metric can score, and their scores.

Both stages judge models on the same prompts: the originals of ``held_out.jsonl``
(oversampled copies are the same prompt again, so they are skipped), each with the
reference answer Source found in the traffic when the metric needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill_jobs import metrics
from distill_jobs.metrics import REFERENCE_METRICS
from distill_jobs.records import PromptRecord
from distill_jobs.upstream import StageFailure, read_jsonl


def read_held_out_prompts(uri: str) -> list[PromptRecord]:
    """The held-out prompts of Source's ``held_out.jsonl``, oversampled copies skipped.

    Raises:
        StageFailure: the file is missing (``SourceArtifactMissing``) or a row is not a
            PromptRecord (``SourceArtifactUnreadable``).
    """
    rows = read_jsonl(uri, model=PromptRecord, what="Source's held-out")
    return [row for row in rows if row.copy_index == 0]


def scorable_prompts(prompts: Sequence[PromptRecord], *, bar: Any) -> list[PromptRecord]:
    """The prompts ``bar.metric`` can score: those with a reference, when it needs one.

    Raises:
        StageFailure: no held-out prompt at all (``NoHeldOutPrompts``), or none with a
            reference for a metric that needs one (``NoReferences``).
    """
    if not prompts:
        raise StageFailure(
            "NoHeldOutPrompts",
            "Source's held-out set is empty: nothing to evaluate on "
            "(raise spec.source.heldOutFraction, or give Source more traffic)",
        )
    metric = str(bar.metric)
    if metric not in REFERENCE_METRICS:
        return list(prompts)
    scorable = [prompt for prompt in prompts if prompt.reference is not None]
    if not scorable:
        raise StageFailure(
            "NoReferences",
            f"spec.bar.metric {metric} compares answers with a reference, and none of the "
            f"{len(prompts)} held-out prompts has one: set spec.source.referenceField to the "
            "traffic field that holds known-good answers, or choose a metric that needs "
            "none (json_validity, python)",
        )
    return scorable


def check_metric(bar: Any) -> None:
    """Fail before any model is loaded when the bar's metric cannot be computed here.

    Raises:
        StageFailure: ``MetricFailed`` (unknown metric, or a metricFunction that cannot
            be imported).
    """
    metric = str(bar.metric)
    try:
        metrics.scorer(metric=metric, function=bar.metric_function)
    except metrics.MetricError as error:
        raise StageFailure("MetricFailed", f"spec.bar.metric {metric}: {error}") from None


def score_answers(
    *, bar: Any, answers: Sequence[str], references: Sequence[str | None]
) -> list[float]:
    """Each answer's score in [0, 1] by the bar's metric.

    Raises:
        StageFailure: ``MetricFailed`` when the metric cannot score an answer.
    """
    metric = str(bar.metric)
    try:
        scoring = metrics.scorer(metric=metric, function=bar.metric_function)
        return [
            scoring(answer, reference)
            for answer, reference in zip(answers, references, strict=True)
        ]
    except metrics.MetricError as error:
        raise StageFailure("MetricFailed", f"spec.bar.metric {metric}: {error}") from None


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
