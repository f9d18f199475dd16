"""Which stage Look's slice table points to: the DISTILL debugging map, as a function.

1. Broad weakness: the student misses the bar overall and on at least half of the judged
   slices → the data (``Source``, ``BroadWeakness``).

Otherwise each failing slice (a critical slice below its threshold, or any slice far
below the bar) is put to these questions, in order:

2. Is the teacher itself below the slice's threshold? → ``Teach``, ``TeacherWrongOnSlice``
   (a student cannot learn what its teacher gets wrong).
3. Has the slice fewer training rows than its ``minCount`` (none, for a slice that is
   not critical)? → ``Source``, ``SliceUnderCovered``.
4. Has it fewer than :data:`MIN_JUDGEABLE` held-out prompts? → ``Look``,
   ``SliceTooSmallToJudge`` (the score says little either way).
5. Otherwise the teacher is right, the data covers it and the student still fails →
   ``Iterate``, ``StudentTooWeakOnSlice``.

The stage named is that of the first question any failing slice answers yes to; the
message gives every failing slice's evidence in numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from distill_jobs.contract import Diagnosis
from distill_jobs.evaluation.slices import SliceRow, shortfall

MIN_JUDGEABLE = 10  # held-out prompts below which a slice's score is not evidence
FAR_BELOW = 0.1  # a slice that is not critical counts when this far under the bar

ADVICE = MappingProxyType(
    {
        "BroadWeakness": "weak across the board points at the data: check that the traffic "
        "covers the task and how much of it Teach kept",
        "TeacherWrongOnSlice": "fix the teacher there first (another prompt, verifiers for "
        "the slice, or a stronger teacher): the student learns what the teacher says",
        "SliceUnderCovered": "give Source more traffic of the slice, or set "
        "spec.source.allowOversampling",
        "SliceTooSmallToJudge": "hold out more prompts of the slice (more traffic, or a larger "
        "spec.source.heldOutFraction) before judging it",
        "StudentTooWeakOnSlice": "try a larger student candidate or longer training",
    }
)


@dataclass(frozen=True)
class _Cause:
    rule: int
    stage: str
    reason: str
    evidence: str


def diagnose(
    rows: Sequence[SliceRow],
    *,
    overall: float,
    bar_threshold: float,
    min_judgeable: int = MIN_JUDGEABLE,
    far_below: float = FAR_BELOW,
) -> Diagnosis | None:
    """The stage at fault, or None when the student passes and no slice is far below.

    Args:
        rows: the slice table.
        overall: the student's overall held-out score.
        bar_threshold: ``spec.bar.threshold``.
        min_judgeable: fewer held-out prompts than this and a slice cannot be judged.
        far_below: how far under the bar a slice that is not critical must be to count.
    """
    judged = [row for row in rows if row.student_score is not None]
    below = [row for row in judged if _score(row) < row.target(bar_threshold)]
    if overall < bar_threshold and judged and 2 * len(below) >= len(judged):
        names = ", ".join(row.slice for row in below)
        return Diagnosis(
            stage="Source",
            reason="BroadWeakness",
            message=f"{shortfall('overall', overall, bar_threshold)} and {len(below)} of "
            f"{len(judged)} slices below the bar ({names}); {ADVICE['BroadWeakness']}",
        )
    failing = _failing(rows, bar_threshold=bar_threshold, far_below=far_below)
    if not failing and overall < bar_threshold:
        failing = [row for row in judged if _score(row) < bar_threshold]
    if not failing:
        return None
    causes = [
        _cause(row, bar_threshold=bar_threshold, min_judgeable=min_judgeable) for row in failing
    ]
    first = min(causes, key=lambda cause: cause.rule)  # the earliest question answered yes
    others = [cause for cause in causes if cause is not first]
    also = "; also " + "; ".join(f"{c.evidence} ({c.stage})" for c in others) if others else ""
    return Diagnosis(
        stage=first.stage,
        reason=first.reason,
        message=f"{first.evidence}; {ADVICE[first.reason]}{also}",
    )


def _failing(rows: Sequence[SliceRow], *, bar_threshold: float, far_below: float) -> list[SliceRow]:
    return [
        row
        for row in rows
        if (row.critical and row.passes is False)
        or (not row.critical and _score(row) < bar_threshold - far_below)
    ]


def _cause(row: SliceRow, *, bar_threshold: float, min_judgeable: int) -> _Cause:
    target = row.target(bar_threshold)
    name = row.slice
    if row.teacher_score is not None and row.teacher_score < target:
        return _Cause(
            2,
            "Teach",
            "TeacherWrongOnSlice",
            f"{name}: the teacher itself scores {row.teacher_score:.4g} < {target:.4g} "
            f"(student {_score(row):.4g}, {row.held_out} held-out prompts)",
        )
    min_count = row.min_count if row.min_count is not None else 1
    if row.training_rows < min_count:
        return _Cause(
            3,
            "Source",
            "SliceUnderCovered",
            f"{name}: {row.training_rows} training rows < minCount {min_count} "
            f"(student {_scored(row)}, target {target:.4g})",
        )
    if row.held_out < min_judgeable:
        return _Cause(
            4,
            "Look",
            "SliceTooSmallToJudge",
            f"{name}: {row.held_out} held-out prompts < {min_judgeable} "
            f"(student {_scored(row)}, target {target:.4g})",
        )
    return _Cause(
        5,
        "Iterate",
        "StudentTooWeakOnSlice",
        f"{name}: student {_score(row):.4g} < {target:.4g} while the teacher scores "
        f"{row.teacher_score or 0.0:.4g}, with {row.training_rows} training rows and "
        f"{row.held_out} held-out prompts",
    )


def _score(row: SliceRow) -> float:
    """A slice without held-out prompts has no score; for comparisons it has none above 0."""
    return row.student_score if row.student_score is not None else 0.0


def _scored(row: SliceRow) -> str:
    return f"{row.student_score:.4g}" if row.student_score is not None else "unscored"
