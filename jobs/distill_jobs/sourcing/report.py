"""The report artifact, the result's metrics and its messages.

The report (``report.json``) keeps everything a user needs to judge the data: which
files were read or skipped, every dropped row's reason with examples, and the slice
table: how each slice's share of the kept set compares with its share of the raw
traffic, before and after de-duplication, and how it was split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from distill_jobs.sourcing.files import TrafficListing
from distill_jobs.sourcing.prompts import DROP_MEANINGS, Drop
from distill_jobs.sourcing.selection import Deduplicated, Shortfall, SliceSplit
from distill_jobs.sourcing.settings import SourceSettings
from distill_jobs.sourcing.tally import Tally

MAX_FILES_LISTED = 1000
MAX_SLICE_METRICS = 19  # with the 12 headline numbers, under the operator's 32


def _share(count: int, total: int) -> float:
    return round(count / total, 4) if total else 0.0


def files_section(listing: TrafficListing) -> dict[str, Any]:
    """Files read, files skipped (with why), and URIs that matched nothing or could not
    be listed."""
    return {
        "read": len(listing.files),
        "read_uris": [item.uri for item in listing.files[:MAX_FILES_LISTED]],
        "skipped": [
            {"uri": item.uri, "kind": item.kind.value, "detail": item.detail}
            for item in listing.skipped[:MAX_FILES_LISTED]
        ],
        "unmatched": list(listing.unmatched),
        "unlistable": [{"uri": uri, "error": error} for uri, error in listing.unlistable],
    }


def rows_section(tally: Tally, deduplicated: Deduplicated | None) -> dict[str, Any]:
    """Row counts from read to kept, and every drop reason with examples."""
    section: dict[str, Any] = {
        "read": tally.rows,
        "malformed": tally.malformed,
        "no_prompt": tally.no_prompt,
        "too_long": tally.too_long,
        "prompts": tally.raw,
        "with_reference": tally.with_reference,
        "dropped": {
            reason: {
                "count": count,
                "meaning": DROP_MEANINGS[Drop(reason)],
                "examples": tally.examples.get(reason, []),
            }
            for reason, count in sorted(tally.dropped.items())
        },
        "slice_tagged_by": dict(sorted(tally.tagged_by.items())),
    }
    if deduplicated is not None:
        section["exact_duplicates"] = deduplicated.exact_duplicates
        section["near_duplicates"] = deduplicated.near_duplicates
        section["kept"] = len(deduplicated.kept)
    return section


def _slice_order(raw: Mapping[str, int], min_counts: Mapping[str, int]) -> list[str]:
    """Critical slices first (spec order), then the others, largest first."""
    others = sorted((name for name in raw if name not in min_counts), key=lambda n: (-raw[n], n))
    return [*min_counts, *others]


def slice_table(
    *,
    raw: Mapping[str, int],
    splits: Mapping[str, SliceSplit] | None,
    copies: Mapping[str, int],
    min_counts: Mapping[str, int],
) -> dict[str, dict[str, Any]]:
    """Per slice: raw and kept counts and shares, the split, copies, and critical status.

    Args:
        raw: slice to prompts before de-duplication.
        splits: slice to its split after de-duplication, or None before there is one.
        copies: slice to its oversampled copies.
        min_counts: critical slice to its ``minCount``.
    """
    raw_total = sum(raw.values())
    kept = Counter({name: split.size for name, split in (splits or {}).items()})
    kept_total = sum(kept.values())
    table = {}
    for name in _slice_order(raw, min_counts):
        count = raw.get(name, 0)
        row: dict[str, Any] = {"raw": count, "raw_share": _share(count, raw_total)}
        if splits is not None:
            split = splits.get(name, SliceSplit(train=(), held_out=()))
            row |= {
                "kept": kept[name],
                "kept_share": _share(kept[name], kept_total),
                "train": len(split.train) + copies.get(name, 0),
                "oversampled": copies.get(name, 0),
                "held_out": len(split.held_out),
            }
        row |= {"critical": name in min_counts, "min_count": min_counts.get(name)}
        table[name] = row
    return table


def headline_metrics(
    *,
    tally: Tally,
    deduplicated: Deduplicated | None,
    table: Mapping[str, Mapping[str, Any]],
    min_counts: Mapping[str, int],
) -> dict[str, Any]:
    """The result's numbers (the operator copies the top-level ones into status) and the
    slice table under ``slices``."""
    metrics: dict[str, Any] = {
        "rows": tally.rows,
        "raw": tally.raw,
        "malformed": tally.malformed,
        "no_prompt": tally.no_prompt,
        "too_long": tally.too_long,
        "slice_count": sum(1 for row in table.values() if row["raw"]),
        # A table, so the operator leaves it out of status; report.json has examples.
        "dropped_by_reason": dict(sorted(tally.dropped.items())),
    }
    if deduplicated is not None:
        metrics |= {
            "exact_duplicates": deduplicated.exact_duplicates,
            "near_duplicates": deduplicated.near_duplicates,
            "kept": len(deduplicated.kept),
        }
    if table and "train" in next(iter(table.values())):
        metrics |= {
            "train": sum(row["train"] for row in table.values()),
            "held_out": sum(row["held_out"] for row in table.values()),
            "oversampled": sum(row["oversampled"] for row in table.values()),
        }
        for name in list(min_counts)[:MAX_SLICE_METRICS]:
            metrics[f"train_{name}"] = table[name]["train"]
    metrics["slices"] = {name: dict(row) for name, row in table.items()}
    return metrics


def under_covered_message(short: Sequence[Shortfall], *, allow_oversampling: bool) -> str:
    """Every short critical slice with its training count and its minimum, and the fixes."""
    parts = [
        f"{item.slice} has {item.train} training example(s), minCount {item.min_count}"
        for item in short
    ]
    fixes = "add traffic for them or lower minCount"
    if allow_oversampling:
        fixes += " (oversampling needs at least one training example to copy)"
    else:
        fixes += ", or set spec.source.allowOversampling"
    return (
        f"critical slices below spec.source.criticalSlices[].minCount: {'; '.join(parts)}; {fixes}"
    )


def lonely_message(lonely: Sequence[str], *, fraction: float) -> str:
    """Critical slices too small to give both a training and a held-out example."""
    names = ", ".join(lonely)
    return (
        f"critical slice(s) {names} have a single prompt after de-duplication: "
        f"spec.source.heldOutFraction {fraction} would leave the held-out share empty "
        "(a critical slice needs at least 2 prompts: one held out, one to train on); "
        "add traffic for them or remove them from spec.source.criticalSlices"
    )


def success_message(
    table: Mapping[str, Mapping[str, Any]], *, min_counts: Mapping[str, int]
) -> str:
    """``<n> train / <m> held out across <k> slices; critical: ...``."""
    train = sum(row["train"] for row in table.values())
    held_out = sum(row["held_out"] for row in table.values())
    present = sum(1 for row in table.values() if row["kept"])
    critical = [
        f"{name} {table[name]['train']} train"
        + (f" ({table[name]['oversampled']} oversampled)" if table[name]["oversampled"] else "")
        + f", {table[name]['held_out']} held out (minCount {min_count})"
        for name, min_count in min_counts.items()
    ]
    return (
        f"{train} train / {held_out} held out across {present} slices; "
        f"critical: {'; '.join(critical) if critical else 'none'}"
    )


def settings_section(settings: SourceSettings) -> dict[str, Any]:
    """The settings the report was made with (camelCase, as in the spec)."""
    return settings.model_dump(mode="json", by_alias=True)
