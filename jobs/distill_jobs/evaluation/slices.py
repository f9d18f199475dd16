"""Look's slice table: the student against the teacher on each slice of the held-out set,
and whether the student passes (overall, and on every critical slice).

Pure: per-prompt judgements in, rows and a verdict out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UNJUDGED = "no held-out prompts: cannot be judged"


def normalise_answer(text: str) -> str:
    """What "the same answer" means for agreement: whitespace collapsed, ends stripped."""
    return " ".join(text.split())


@dataclass(frozen=True)
class CriticalBar:
    """A critical slice's bar in Look.

    Attributes:
        name: the slice.
        threshold: its own threshold, or the bar's when it has none.
        min_count: the fewest training rows Source should give it.
    """

    name: str
    threshold: float
    min_count: int


@dataclass(frozen=True)
class Judgement:
    """One held-out prompt, answered by both models and scored.

    Attributes:
        id: the prompt's id.
        slice: its slice.
        student_score: the student's answer's score by the bar's metric.
        teacher_score: the teacher's answer's score.
        agrees: the two answers are equal after :func:`normalise_answer`.
    """

    id: str
    slice: str
    student_score: float
    teacher_score: float
    agrees: bool


@dataclass(frozen=True)
class SliceRow:
    """One row of the slice table (see :meth:`as_dict` for the columns shown).

    ``min_count`` (a critical slice's ``minCount``) is kept for the diagnosis, not shown.
    """

    slice: str
    held_out: int
    student_score: float | None
    teacher_score: float | None
    agreement: float | None
    threshold: float | None
    critical: bool
    passes: bool | None
    training_rows: int
    disagreements: int
    min_count: int | None = None

    def target(self, bar_threshold: float) -> float:
        """The score this slice is held to: its own threshold, or the bar's."""
        return self.threshold if self.threshold is not None else bar_threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "slice": self.slice,
            "held_out": self.held_out,
            "student_score": _rounded(self.student_score),
            "teacher_score": _rounded(self.teacher_score),
            "agreement": _rounded(self.agreement),
            "threshold": self.threshold,
            "critical": self.critical,
            "passes": self.passes,
            "training_rows": self.training_rows,
            "disagreements": self.disagreements,
        }


def slice_table(
    judgements: Sequence[Judgement],
    *,
    critical: Sequence[CriticalBar],
    training_rows: Mapping[str, int],
) -> list[SliceRow]:
    """One row per slice that has held-out prompts or is critical: critical slices first
    (by name), then the others by name."""
    by_slice: dict[str, list[Judgement]] = {}
    for judgement in judgements:
        by_slice.setdefault(judgement.slice, []).append(judgement)
    bars = {bar.name: bar for bar in critical}
    names = sorted(set(by_slice) | set(bars), key=lambda name: (name not in bars, name))
    return [
        _row(name, by_slice.get(name, []), bar=bars.get(name), training=training_rows.get(name, 0))
        for name in names
    ]


def _row(
    name: str, judged: Sequence[Judgement], *, bar: CriticalBar | None, training: int
) -> SliceRow:
    count = len(judged)
    student = _mean([j.student_score for j in judged])
    passes = None if bar is None else student is not None and student >= bar.threshold
    return SliceRow(
        slice=name,
        held_out=count,
        student_score=student,
        teacher_score=_mean([j.teacher_score for j in judged]),
        agreement=_mean([float(j.agrees) for j in judged]),
        threshold=None if bar is None else bar.threshold,
        critical=bar is not None,
        passes=passes,
        training_rows=training,
        disagreements=sum(1 for j in judged if not j.agrees),
        min_count=None if bar is None else bar.min_count,
    )


def shortfall(name: str, value: float, target: float) -> str:
    """``name 0.4 < 0.85 (short by 0.45)``."""
    return f"{name} {value:.4g} < {target:.4g} (short by {target - value:.4g})"


def judge(
    rows: Sequence[SliceRow], *, overall: float, bar_threshold: float
) -> tuple[bool, list[str]]:
    """Whether the student passes, and every failure in words: each critical slice below
    its threshold (or with no held-out prompt), then the overall score below the bar."""
    failures = []
    for row in rows:
        if not row.critical or row.passes:
            continue
        if row.student_score is None:
            failures.append(f"{row.slice}: {UNJUDGED}")
        else:
            failures.append(shortfall(row.slice, row.student_score, row.target(bar_threshold)))
    if overall < bar_threshold:
        failures.append(shortfall("overall", overall, bar_threshold))
    return not failures, failures


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
