"""Whether a measured model clears the bar (quality, latency and cost), in words.

One judgement for every model the project measures, a student candidate in Iterate or
a cheaper alternative in Investigate, so that both say the same thing the same way:
``tiny (151,232 parameters) misses the bar: score 0.41 < 0.9 (short by 0.49); ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def verdict(bar: Any, *, name: str, metrics: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether ``metrics`` clear each target of ``bar`` (an API ``Bar``), and by how much
    they miss the others. ``metrics`` has score, latency_p95_ms and cost_per_1k_requests;
    a missing number (e.g. the cost of an API model nobody priced) misses its target."""
    checks = [
        _check("score", metrics.get("score"), bar.threshold, higher_is_better=True, unit=""),
        _check("p95", metrics.get("latency_p95_ms"), bar.latency_p95_ms,
               higher_is_better=False, unit=" ms"),
        _check("cost/1k", metrics.get("cost_per_1k_requests"), bar.cost_per_1k_requests,
               higher_is_better=False, unit=""),
    ]  # fmt: skip
    met = all(ok for ok, _ in checks)
    summary = "; ".join(text for _, text in checks)
    parameters = metrics.get("parameters")
    size = f" ({parameters:,} parameters)" if isinstance(parameters, int) else ""
    outcome = "clears the bar" if met else "misses the bar"
    return met, f"{name}{size} {outcome}: {summary}"


def _check(
    label: str, value: float | None, target: float, *, higher_is_better: bool, unit: str
) -> tuple[bool, str]:
    if value is None:
        return False, f"{label} unknown (target {target:.4g}{unit})"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        sign = "≥" if higher_is_better else "≤"
        return True, f"{label} {value:.4g}{unit} {sign} {target:.4g}{unit}"
    sign = "<" if higher_is_better else ">"
    gap = abs(value - target)
    how = "short by" if higher_is_better else "over by"
    return False, f"{label} {value:.4g}{unit} {sign} {target:.4g}{unit} ({how} {gap:.4g}{unit})"
