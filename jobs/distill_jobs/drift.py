"""How far live traffic has moved from what a student was trained on: pure statistics.

Two numbers, each against a bound from ``spec.lifecycle``:

- the slice shift: the total variation distance between the two slice mixes (half the
  sum of the absolute share differences; 0 for the same mix, 1 for disjoint slices), so
  "0.3" reads as "30% of the traffic would have to change slice to match";
- the length shift: the two-sample Kolmogorov-Smirnov statistic of the prompts' user
  text lengths in characters (the largest gap between the two cumulative
  distributions), which needs no binning and no assumption about the distribution.

No I/O here: the monitor (:mod:`distill_jobs.monitor`) reads both sides and writes the
result; this module compares two :class:`PromptMix` values and words what it found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp  # type: ignore[import-untyped]

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
SLICES_NAMED = 2  # slices named in the message, the ones that moved most
SHARE_DIGITS = 4


@dataclass(frozen=True)
class PromptMix:
    """One side of the comparison: distinct prompts by slice, and their lengths.

    Attributes:
        slices: slice to its number of distinct prompts.
        lengths: every prompt's user text length in characters.
    """

    slices: Mapping[str, int]
    lengths: Sequence[int]

    @property
    def prompts(self) -> int:
        return sum(self.slices.values())


@dataclass(frozen=True)
class Bounds:
    """How far each number may move before the traffic counts as drifted (inclusive)."""

    max_slice_shift: float
    max_length_shift: float


@dataclass(frozen=True)
class SliceChange:
    """One slice's share of each side (a slice missing from a side has share 0)."""

    slice: str
    live: int
    training: int
    live_share: float
    training_share: float

    @property
    def change(self) -> float:
        """Live share minus training share: positive when the slice grew."""
        return self.live_share - self.training_share


@dataclass(frozen=True)
class Drift:
    """What the comparison found.

    Attributes:
        slice_shift: total variation distance of the slice mixes, 0..1.
        length_shift: KS statistic of the prompt lengths, 0..1.
        slices: every slice of either side, the largest absolute change first.
        live_lengths: quantiles (``p10``..``p99``), ``mean`` and ``max`` of live lengths.
        training_lengths: the same for the training prompts.
        bounds: the bounds it was judged against.
    """

    slice_shift: float
    length_shift: float
    slices: tuple[SliceChange, ...]
    live_lengths: Mapping[str, float]
    training_lengths: Mapping[str, float]
    bounds: Bounds

    @property
    def slices_drifted(self) -> bool:
        return self.slice_shift > self.bounds.max_slice_shift

    @property
    def lengths_drifted(self) -> bool:
        return self.length_shift > self.bounds.max_length_shift

    @property
    def drifted(self) -> bool:
        return self.slices_drifted or self.lengths_drifted

    @property
    def largest_change(self) -> SliceChange:
        return self.slices[0]


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Each key's share of the total (all 0 when the total is 0)."""
    total = sum(counts.values())
    return {name: (count / total if total else 0.0) for name, count in counts.items()}


def total_variation(first: Mapping[str, int], second: Mapping[str, int]) -> float:
    """Total variation distance between two count tables' shares, 0..1.

    Raises:
        ValueError: either table counts nothing (a mix of nothing has no shares).
    """
    if sum(first.values()) <= 0 or sum(second.values()) <= 0:
        raise ValueError("total variation needs prompts on both sides")
    first_shares, second_shares = shares(first), shares(second)
    names = first_shares.keys() | second_shares.keys()
    distance = sum(abs(first_shares.get(n, 0.0) - second_shares.get(n, 0.0)) for n in names) / 2
    return min(1.0, distance)  # float sums may pass 1 by a rounding error


def ks_statistic(first: Sequence[int], second: Sequence[int]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic, 0..1 (the p-value is not computed:
    with thousands of prompts a trivial shift is "significant", so the bound is on the
    size of the shift, not on its significance).

    Raises:
        ValueError: either sample is empty.
    """
    if not first or not second:
        raise ValueError("the KS statistic needs values on both sides")
    return float(ks_2samp(first, second, method="asymp").statistic)


def length_summary(lengths: Sequence[int]) -> dict[str, float]:
    """Quantiles (``p10`` … ``p99``), ``mean`` and ``max`` of the lengths."""
    values = np.asarray(lengths, dtype=float)
    summary = {
        f"p{round(q * 100)}": float(value)
        for q, value in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)
    }
    return summary | {"mean": round(float(values.mean()), 1), "max": float(values.max())}


def slice_changes(*, live: Mapping[str, int], training: Mapping[str, int]) -> list[SliceChange]:
    """Every slice of either side with both shares, the largest absolute change first
    (ties: larger live share, then by name, so the order is stable)."""
    live_shares, training_shares = shares(live), shares(training)
    changes = [
        SliceChange(
            slice=name,
            live=live.get(name, 0),
            training=training.get(name, 0),
            live_share=live_shares.get(name, 0.0),
            training_share=training_shares.get(name, 0.0),
        )
        for name in live.keys() | training.keys()
    ]
    return sorted(changes, key=lambda c: (-round(abs(c.change), 12), -c.live_share, c.slice))


def compare(*, live: PromptMix, training: PromptMix, bounds: Bounds) -> Drift:
    """Compare the live mix with the training mix.

    Raises:
        ValueError: either side has no prompt.
    """
    return Drift(
        slice_shift=total_variation(live.slices, training.slices),
        length_shift=ks_statistic(live.lengths, training.lengths),
        slices=tuple(slice_changes(live=live.slices, training=training.slices)),
        live_lengths=length_summary(live.lengths),
        training_lengths=length_summary(training.lengths),
        bounds=bounds,
    )


def percent(share: float) -> str:
    """A share as a percentage: whole percents, one decimal below 1% (never a bare 0%
    for a slice that is there)."""
    return f"{share:.1%}" if 0 < share < 0.01 else f"{share:.0%}"


def _against(value: float, bound: float) -> str:
    """``0.34 > 0.2`` or ``0.08 <= 0.3``, with digits enough that the sign is visible."""
    digits = 2
    while digits < 6 and round(value, digits) == round(bound, digits) and value != bound:
        digits += 1
    sign = ">" if value > bound else "<="
    return f"{value:.{digits}f} {sign} {bound:g}"


def describe(drift: Drift) -> str:
    """The finding in words, e.g. ``slice mix moved 0.34 > 0.2 (refund-fraud 3% -> 40%,
    billing 35% -> 10%); prompt length KS 0.08 <= 0.3 (median 212 -> 230 characters)``."""
    moved = [
        c for c in drift.slices[:SLICES_NAMED] if percent(c.live_share) != percent(c.training_share)
    ]
    named = ", ".join(
        f"{c.slice} {percent(c.training_share)} -> {percent(c.live_share)}" for c in moved
    )
    slices = f"slice mix moved {_against(drift.slice_shift, drift.bounds.max_slice_shift)}"
    median_before, median_now = drift.training_lengths["p50"], drift.live_lengths["p50"]
    lengths = (
        f"prompt length KS {_against(drift.length_shift, drift.bounds.max_length_shift)} "
        f"(median {median_before:g} -> {median_now:g} characters)"
    )
    return f"{slices}{f' ({named})' if named else ''}; {lengths}"


def table(drift: Drift) -> dict[str, dict[str, float | int]]:
    """The per-slice table for ``drift.json``: slice to counts and shares, in order of
    the largest change."""
    return {
        change.slice: {
            "live": change.live,
            "training": change.training,
            "live_share": round(change.live_share, SHARE_DIGITS),
            "training_share": round(change.training_share, SHARE_DIGITS),
            "change": round(change.change, SHARE_DIGITS),
        }
        for change in drift.slices
    }
