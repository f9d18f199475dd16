"""Source workload (``python -m distill_jobs.source --input URI``).

Production traffic (chat JSONL or Parquet, any fsspec URI or glob) becomes a
de-duplicated, slice-tagged training set and a held-out set that never reaches training.
Reading and parsing run on Ray Data (:mod:`distill_jobs.sourcing.reading`); the
decisions (which duplicate to keep, the split, critical-slice coverage) run on the
driver over light columns (:mod:`distill_jobs.sourcing.selection`).

Artifacts, under the stage directory:

- ``train.jsonl``, ``held_out.jsonl``: :class:`~distill_jobs.records.PromptRecord` rows,
  in the order the traffic was read; an oversampled prompt's copies (``copy`` 1..n, the
  same ``id``) follow it.
- ``held_out_hashes.json``: a JSON list of the held-out prompts' ids (sorted), each the
  :func:`~distill_jobs.records.prompt_hash` of its ``prompt_text``, for
  :func:`~distill_jobs.records.assert_no_leak` downstream.
- ``report.json``: the files read and skipped, every dropped row's reason, and the
  slice table (raw against kept shares, the split, oversampling).

A user's mistake (no traffic, unreadable traffic, a slice field no record has, a
critical slice too small) is a failed result with a reason and a message naming the
field or file, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import ray

from distill_jobs.contract import StageInput, StageResult
from distill_jobs.raycluster import connect
from distill_jobs.records import PromptRecord, assert_no_leak
from distill_jobs.runner import stage_main
from distill_jobs.sourcing.files import SkipKind, TrafficListing, list_traffic, probe_traffic
from distill_jobs.sourcing.prompts import MAX_PROMPT_CHARS, Drop, FieldNames
from distill_jobs.sourcing.reading import (
    ParseContext,
    ordered_reads,
    prompt_rows,
    read_traffic,
    scan_rows,
)
from distill_jobs.sourcing.report import (
    files_section,
    headline_metrics,
    lonely_message,
    rows_section,
    settings_section,
    slice_table,
    success_message,
    under_covered_message,
)
from distill_jobs.sourcing.selection import (
    Candidate,
    Coverage,
    Deduplicated,
    SliceSplit,
    check_coverage,
    copies_per_prompt,
    deduplicate,
    split_by_slice,
)
from distill_jobs.sourcing.settings import (
    CompiledRule,
    CriticalSliceUnderCovered,
    HeldOutEmptiesSlice,
    NoPrompts,
    NoTraffic,
    SliceFieldMissing,
    SourceSettings,
    SourcingError,
    UnreadableTraffic,
    compile_rules,
    read_settings,
)
from distill_jobs.sourcing.tally import Tally, tally_rows
from distill_jobs.store import write_json

ARTIFACT_FILES = {
    "train": "train.jsonl",
    "held_out": "held_out.jsonl",
    "held_out_hashes": "held_out_hashes.json",
    "report": "report.json",
}
LISTED_IN_MESSAGES = 5
QUIET = (SkipKind.EMPTY, SkipKind.HIDDEN)  # skipped files that are no fault


@dataclass
class Findings:
    """What one attempt has found so far: enough for the report even when it fails."""

    settings: SourceSettings
    listing: TrafficListing | None = None
    tally: Tally | None = None
    deduplicated: Deduplicated | None = None
    splits: dict[str, SliceSplit] | None = None
    coverage: Coverage = field(default_factory=Coverage)

    def table(self) -> dict[str, dict[str, Any]]:
        return slice_table(
            raw=self.tally.raw_slices if self.tally else {},
            splits=self.splits,
            copies=self.coverage.copies,
            min_counts=self.settings.min_counts(),
        )

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"settings": settings_section(self.settings)}
        if self.listing is not None:
            report["files"] = files_section(self.listing)
        if self.tally is not None:
            report["rows"] = rows_section(self.tally, self.deduplicated)
            report["slices"] = self.table()
        return report

    def metrics(self) -> dict[str, Any]:
        if self.tally is None:
            return {}
        return headline_metrics(
            tally=self.tally,
            deduplicated=self.deduplicated,
            table=self.table(),
            min_counts=self.settings.min_counts(),
        )


def _uris(stage_input: StageInput) -> dict[str, str]:
    root = stage_input.stage_dir()
    return {name: f"{root}/{file_name}" for name, file_name in ARTIFACT_FILES.items()}


def _listed(items: list[str]) -> str:
    more = len(items) - LISTED_IN_MESSAGES
    return "; ".join(items[:LISTED_IN_MESSAGES]) + (f"; and {more} more" if more > 0 else "")


def _list_files(settings: SourceSettings) -> TrafficListing:
    """Every file the traffic URIs match, each probed once."""
    return probe_traffic(
        list_traffic(settings.traffic),
        wanted_columns=[
            "messages",
            settings.prompt_field,
            settings.reference_field,
            *([settings.slice_field] if settings.slice_field else []),
        ],
    )


def _check_listing(listing: TrafficListing) -> None:
    """Refuse a listing with nothing to read.

    Raises:
        NoTraffic: nothing matches, or everything matched is empty.
        UnreadableTraffic: files match (or URIs cannot be listed) but none can be read.
    """
    if listing.files:
        return
    problems = [f"{item.uri}: {item.detail}" for item in listing.skipped if item.kind not in QUIET]
    problems += [f"{uri}: {error}" for uri, error in listing.unlistable]
    if problems:
        raise UnreadableTraffic(f"no file of spec.source.traffic can be read: {_listed(problems)}")
    if listing.skipped:
        empty = [item.uri for item in listing.skipped]
        raise NoTraffic(
            f"every file spec.source.traffic matches is empty or hidden: {_listed(empty)}"
        )
    raise NoTraffic(f"spec.source.traffic matches no file: {_listed(list(listing.unmatched))}")


def _check_rows(tally: Tally, settings: SourceSettings, *, files: int) -> None:
    """Refuse traffic with no usable prompt, or a slice field no record has."""
    if tally.rows == 0:
        raise NoTraffic(f"the {files} file(s) spec.source.traffic matches hold no records")
    if tally.malformed == tally.rows:
        reasons = [
            f"{count} {reason} (e.g. {', '.join(tally.examples.get(reason, [])[:2])})"
            for reason, count in sorted(tally.dropped.items())
        ]
        raise UnreadableTraffic(
            f"none of the {tally.rows} rows in spec.source.traffic is a readable record: "
            f"{_listed(reasons)}"
        )
    if tally.raw == 0 and tally.too_long:
        raise NoPrompts(
            f"none of the {tally.rows} records in spec.source.traffic has a usable prompt: "
            f"{tally.too_long} prompt(s) are over {MAX_PROMPT_CHARS} characters (e.g. "
            f"{', '.join(tally.examples.get(Drop.PROMPT_TOO_LONG.value, [])[:2])}), longer "
            "than any student trains on"
        )
    if tally.raw == 0:
        raise NoPrompts(
            f"none of the {tally.rows} records in spec.source.traffic has a prompt: each "
            "needs a messages list with a user turn, or a string in the field "
            f"spec.source.promptField ({settings.prompt_field!r})"
        )
    if settings.slice_field and tally.slice_field_seen == 0:
        raise SliceFieldMissing(
            f"spec.source.sliceField {settings.slice_field!r} is in none of the "
            f"{tally.rows} records of spec.source.traffic: correct the field name, or "
            "remove sliceField and tag slices with spec.source.sliceRules"
        )


def _read(
    listing: TrafficListing, settings: SourceSettings, rules: tuple[CompiledRule, ...]
) -> ray.data.Dataset:
    context = ParseContext.for_files(
        listing.files,
        fields=FieldNames(
            prompt=settings.prompt_field,
            reference=settings.reference_field,
            slice=settings.slice_field,
        ),
        rules=rules,
        signatures=settings.near_duplicate_threshold < 1.0,
    )
    try:
        return read_traffic(listing.files, context=context)
    except (ray.exceptions.RayError, OSError, pa.ArrowException) as error:
        # A file that changed or vanished after it was probed.
        raise UnreadableTraffic(f"reading spec.source.traffic failed: {error}") from None


def _placements(splits: Mapping[str, SliceSplit], coverage: Coverage) -> dict[int, tuple[str, int]]:
    """Parsed-row position to (``train`` or ``held_out``, number of oversampled copies)."""
    placements = {}
    for name, split in splits.items():
        copies = copies_per_prompt(split.train, coverage.copies.get(name, 0))
        for candidate in split.train:
            placements[candidate.position] = ("train", copies.get(candidate.id, 0))
        for candidate in split.held_out:
            placements[candidate.position] = ("held_out", 0)
    return placements


def _write_prompts(
    parsed: ray.data.Dataset, *, placements: Mapping[int, tuple[str, int]], uris: Mapping[str, str]
) -> None:
    """Second scan: the kept rows' content into train.jsonl and held_out.jsonl."""
    with (
        fsspec.open(uris["train"], "w", auto_mkdir=True) as train,
        fsspec.open(uris["held_out"], "w", auto_mkdir=True) as held_out,
    ):
        handles = {"train": train, "held_out": held_out}
        for position, row in enumerate(prompt_rows(parsed)):
            placement = placements.get(position)
            if placement is None:
                continue
            target, copies = placement
            record = PromptRecord(
                id=row["id"],
                messages=json.loads(row["messages"]),
                prompt_text=row["prompt_text"],
                slice=row["slice"],
                reference=row["reference"],
            )
            for copy in range(copies + 1):
                handles[target].write(
                    record.model_copy(update={"copy_index": copy}).model_dump_json()
                )
                handles[target].write("\n")


def _select(findings: Findings, candidates: list[Candidate]) -> dict[str, SliceSplit]:
    """De-duplicate, split and check coverage, recording each step in ``findings``.

    Returns:
        Each slice's split.

    Raises:
        HeldOutEmptiesSlice: a critical slice has a single prompt.
        CriticalSliceUnderCovered: a critical slice is below minCount (and may not, or
            cannot, be oversampled).
    """
    settings = findings.settings
    findings.deduplicated = deduplicate(candidates, threshold=settings.near_duplicate_threshold)
    splits = split_by_slice(
        findings.deduplicated.kept, fraction=settings.held_out_fraction, seed=settings.seed
    )
    findings.splits = splits
    coverage = check_coverage(
        splits,
        min_counts=settings.min_counts(),
        allow_oversampling=settings.allow_oversampling,
    )
    if coverage.lonely:
        raise HeldOutEmptiesSlice(
            lonely_message(coverage.lonely, fraction=settings.held_out_fraction)
        )
    if coverage.short:
        raise CriticalSliceUnderCovered(
            under_covered_message(coverage.short, allow_oversampling=settings.allow_oversampling)
        )
    findings.coverage = coverage
    return splits


def _source(
    stage_input: StageInput, findings: Findings, rules: tuple[CompiledRule, ...]
) -> StageResult:
    settings = findings.settings
    findings.listing = _list_files(settings)
    _check_listing(findings.listing)
    connect()
    with ordered_reads():
        parsed = _read(findings.listing, settings, rules)
        findings.tally, candidates = tally_rows(scan_rows(parsed))
        _check_rows(findings.tally, settings, files=len(findings.listing.files))
        splits = _select(findings, candidates)
        held_out = {c.id for split in splits.values() for c in split.held_out}
        assert_no_leak((c.id for split in splits.values() for c in split.train), held_out)
        uris = _uris(stage_input)
        placements = _placements(splits, findings.coverage)
        _write_prompts(parsed, placements=placements, uris=uris)
    write_json(uris["held_out_hashes"], sorted(held_out))
    write_json(uris["report"], findings.report())
    table = findings.table()
    return StageResult(
        stage=stage_input.stage,
        input_hash=stage_input.input_hash(),
        exit_condition_met=True,
        reason="DataSourced",
        message=success_message(table, min_counts=settings.min_counts()),
        metrics=findings.metrics(),
        artifacts=uris,
    )


def _failure(
    stage_input: StageInput, error: SourcingError, findings: Findings | None
) -> StageResult:
    """A failed result for a user's mistake, with the report so far when there is one."""
    artifacts, metrics = {}, {}
    if findings is not None and findings.listing is not None:
        artifacts["report"] = _uris(stage_input)["report"]
        write_json(artifacts["report"], findings.report() | {"problem": str(error)})
        metrics = findings.metrics()
    return StageResult(
        stage=stage_input.stage,
        input_hash=stage_input.input_hash(),
        exit_condition_met=False,
        reason=error.reason,
        message=str(error),
        metrics=metrics,
        artifacts=artifacts,
    )


def work(stage_input: StageInput) -> StageResult:
    """Source: de-duplicated, slice-tagged prompts from production traffic, with a
    held-out set that never reaches training."""
    findings = None
    try:
        settings = read_settings(stage_input.spec)
        rules = compile_rules(settings)
        findings = Findings(settings=settings)
        return _source(stage_input, findings, rules)
    except SourcingError as error:
        return _failure(stage_input, error, findings)


def main() -> int:
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
