"""Launch's drift monitor (``python -m distill_jobs.monitor --input URI``).

The operator runs it every so often while a student is live. It compares the traffic as
it is now (``spec.source.traffic``) with the prompts the live student was trained on
(``train.jsonl`` of the Source result in ``upstream.Source``) and says whether the slice
mix or the prompt lengths moved past ``spec.lifecycle``'s bounds
(:mod:`distill_jobs.drift` has the statistics).

Both sides are counted in distinct prompts, tagged and measured the same way:

- training: each prompt id of Source's ``train.jsonl`` once (an oversampled prompt's
  copies share its id, so a rare slice Source copied up to ``minCount`` counts at its
  real size), with the slice Source gave it;
- live: a seeded sample of at most ``sampleRows`` rows
  (:func:`~distill_jobs.sourcing.sampling.sample_traffic`, seeded by
  ``spec.source.seed``), parsed and tagged by Source's own functions (the record's
  ``sliceField``, else the first matching ``sliceRules`` pattern, else ``unsliced``) and
  de-duplicated as Source de-duplicates (exact, and near-duplicates at
  ``nearDuplicateThreshold``), so repeats that Source folded into one training prompt
  do not read as drift;
- a prompt's length is the length in characters of its user text.

Malformed rows and rows without a prompt are counted and skipped. Reasons: ``NoDrift``
(exit condition met), ``Drifted``, ``NoTraffic`` (no live prompt could be read), and the
failures of a bad input: ``InvalidSourceSpec``, ``InvalidSliceRule``,
``InvalidLifecycleSpec``, and Source's result missing or unreadable (``SourceResult…``,
``SourceArtifact…``). The artifact ``drift.json`` (beside the result) holds the
per-slice table, the length quantiles of both sides and what was read.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
from pydantic import Field, ValidationError

from distill_jobs import drift
from distill_jobs.contract import StageInput, StageResult
from distill_jobs.records import PromptRecord, prompt_hash
from distill_jobs.runner import stage_main
from distill_jobs.sourcing.files import TrafficListing, list_traffic
from distill_jobs.sourcing.prompts import (
    DROP_MEANINGS,
    Drop,
    FieldNames,
    Signer,
    extract_prompt,
    near_group,
    tag_slice,
)
from distill_jobs.sourcing.sampling import TrafficSample, sample_traffic
from distill_jobs.sourcing.selection import Candidate, deduplicate
from distill_jobs.sourcing.settings import (
    CompiledRule,
    SourceSettings,
    SourceSpecModel,
    SourcingError,
    compile_rules,
    read_settings,
)
from distill_jobs.store import write_json
from distill_jobs.upstream import StageFailure, read_jsonl, upstream_result

SOURCE_STAGE = "Source"
DRIFT_FILE = "drift.json"
LISTED_IN_MESSAGES = 5
EXAMPLES_PER_REASON = 5


class LifecycleSettings(SourceSpecModel):
    """``spec.lifecycle``: the bounds of drift and the size of the live sample."""

    max_slice_shift: float = Field(default=0.2, ge=0.0, le=1.0)
    max_length_shift: float = Field(default=0.3, ge=0.0, le=1.0)
    sample_rows: int = Field(default=5000, ge=1)


@dataclass(frozen=True)
class TrainingMix:
    """The live student's training prompts.

    Attributes:
        mix: distinct prompts by slice, and their lengths.
        rows: rows of ``train.jsonl`` (oversampled copies included).
        train_uri: where they were read.
        tagging_changed: whether ``sliceField`` or ``sliceRules`` differ from those
            Source tagged them with (None when Source's report does not say).
    """

    mix: drift.PromptMix
    rows: int
    train_uri: str
    tagging_changed: bool | None


@dataclass(frozen=True)
class LiveMix:
    """The live traffic's sample, and what reading it found.

    Attributes:
        mix: distinct prompts of the sample by slice, and their lengths.
        listing: what ``spec.source.traffic`` matched.
        sample: the sampled rows, the rows read and the files that failed.
        dropped: drop reason to its count among the sampled rows.
        examples: drop reason to a few ``uri:line`` locations.
        duplicates: sampled prompts folded into another (exact or near).
    """

    mix: drift.PromptMix
    listing: TrafficListing
    sample: TrafficSample
    dropped: Mapping[Drop, int]
    examples: Mapping[Drop, list[str]]
    duplicates: int

    @property
    def malformed(self) -> int:
        return sum(count for reason, count in self.dropped.items() if reason.malformed)

    @property
    def no_prompt(self) -> int:
        return sum(count for reason, count in self.dropped.items() if not reason.malformed)


def _listed(items: list[str]) -> str:
    more = len(items) - LISTED_IN_MESSAGES
    return "; ".join(items[:LISTED_IN_MESSAGES]) + (f"; and {more} more" if more > 0 else "")


def read_lifecycle(spec: Mapping[str, Any]) -> LifecycleSettings:
    """``spec.lifecycle`` with its defaults for missing keys.

    Raises:
        StageFailure: ``InvalidLifecycleSpec``, naming the field out of bounds.
    """
    try:
        return LifecycleSettings.model_validate(spec.get("lifecycle") or {})
    except ValidationError as error:
        problems = "; ".join(
            f"spec.lifecycle.{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()
        )
        raise StageFailure("InvalidLifecycleSpec", problems) from None


def _fields(settings: SourceSettings) -> FieldNames:
    return FieldNames(
        prompt=settings.prompt_field,
        reference=settings.reference_field,
        slice=settings.slice_field,
    )


def _tagging_changed(report_uri: str | None, settings: SourceSettings) -> bool | None:
    """Whether the slice tagging in force differs from the one in Source's report."""
    if report_uri is None:
        return None
    try:
        with fsspec.open(report_uri, "r") as handle:
            then = json.load(handle)["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(then, dict):
        return None
    now = settings.model_dump(mode="json", by_alias=True)
    return any(then.get(key) != now[key] for key in ("sliceField", "sliceRules"))


def read_training(stage_input: StageInput, *, settings: SourceSettings) -> TrainingMix:
    """The distinct prompts of the Source result the live student was built from.

    Raises:
        StageFailure: Source's result or its ``train.jsonl`` is missing or unreadable.
    """
    source = upstream_result(stage_input, stage=SOURCE_STAGE, names=("train",))
    train_uri = source.artifacts["train"]
    rows = read_jsonl(train_uri, model=PromptRecord, what="Source's train")
    fields = _fields(settings)
    seen: set[str] = set()
    slices: Counter[str] = Counter()
    lengths: list[int] = []
    for row in rows:
        if row.id in seen:  # an oversampled copy
            continue
        seen.add(row.id)
        # Source wrote only prompts with user text, so this is never a Drop in practice.
        prompt = extract_prompt({"messages": row.messages}, fields=fields)
        if isinstance(prompt, Drop):
            continue
        slices[row.slice] += 1
        lengths.append(len(prompt.user_text))
    if not lengths:
        raise StageFailure(
            "SourceArtifactUnreadable", f"Source's train {train_uri} holds no training prompt"
        )
    return TrainingMix(
        mix=drift.PromptMix(slices=slices, lengths=lengths),
        rows=len(rows),
        train_uri=train_uri,
        tagging_changed=_tagging_changed(source.artifacts.get("report"), settings),
    )


def _no_files(listing: TrafficListing) -> StageFailure:
    """Why a listing without a readable file has no traffic."""
    if listing.skipped:
        skipped = [f"{item.uri} ({item.detail})" for item in listing.skipped]
        message = f"no file spec.source.traffic matches can be read: {_listed(skipped)}"
    else:
        missing = list(listing.unmatched) + [f"{uri} ({err})" for uri, err in listing.unlistable]
        message = f"spec.source.traffic matches no file: {_listed(missing)}"
    return StageFailure("NoTraffic", message)


def _no_prompts(live: LiveMix) -> StageFailure:
    """Why a sample without a prompt has no traffic, with the counts known."""
    files = len(live.listing.files) - len(live.sample.unreadable)
    metrics = {"trafficRows": live.sample.seen, "sampledRows": len(live.sample.rows)}
    metrics |= {"malformedRows": live.malformed, "noPromptRows": live.no_prompt}
    if not files:
        problems = [f"{item.uri} ({item.detail})" for item in live.sample.unreadable]
        message = f"no file of spec.source.traffic can be read: {_listed(problems)}"
    elif not live.sample.rows:
        message = f"the {files} file(s) spec.source.traffic matches hold no records"
    else:
        reasons = [
            f"{count} {reason.value} ({DROP_MEANINGS[reason]}; "
            f"e.g. {', '.join(live.examples[reason][:2])})"
            for reason, count in sorted(live.dropped.items())
        ]
        message = (
            f"none of the {len(live.sample.rows)} sampled rows of spec.source.traffic is a "
            f"readable prompt: {_listed(reasons)}"
        )
    return StageFailure("NoTraffic", message, metrics=metrics)


@dataclass
class _Parsed:
    """The sampled rows as Source would see them: prompts, or why not."""

    candidates: list[Candidate] = field(default_factory=list)
    lengths: dict[int, int] = field(default_factory=dict)  # by position
    dropped: Counter[Drop] = field(default_factory=Counter)
    examples: dict[Drop, list[str]] = field(default_factory=dict)

    def drop(self, reason: Drop, location: str) -> None:
        self.dropped[reason] += 1
        found = self.examples.setdefault(reason, [])
        if len(found) < EXAMPLES_PER_REASON:
            found.append(location)


def _parse(
    sample: TrafficSample, settings: SourceSettings, rules: tuple[CompiledRule, ...]
) -> _Parsed:
    """Each sampled row parsed and tagged by Source's functions (as
    :func:`~distill_jobs.sourcing.reading.parse_record` does, plus the user text length)."""
    parsed = _Parsed()
    fields = _fields(settings)
    signer = Signer() if settings.near_duplicate_threshold < 1.0 else None
    for row in sample.rows:
        if isinstance(row.record, Drop):
            parsed.drop(row.record, row.location)
            continue
        prompt = extract_prompt(row.record, fields=fields)
        if isinstance(prompt, Drop):
            parsed.drop(prompt, row.location)
            continue
        slice_name, _ = tag_slice(
            row.record, prompt.prompt_text, slice_field=settings.slice_field, rules=rules
        )
        parsed.candidates.append(
            Candidate(
                position=row.position,
                id=prompt_hash(prompt.prompt_text),
                slice=slice_name,
                group=near_group(prompt.system_text),
                signature=signer.sign(prompt.user_text) if signer else None,
            )
        )
        parsed.lengths[row.position] = len(prompt.user_text)
    return parsed


def read_live(
    settings: SourceSettings, rules: tuple[CompiledRule, ...], *, sample_rows: int
) -> LiveMix:
    """A sample of the traffic as it is now, parsed, tagged and de-duplicated as Source
    does it.

    Raises:
        StageFailure: ``NoTraffic``: no file, no row or no prompt in the sample.
    """
    listing = list_traffic(settings.traffic)
    if not listing.files:
        raise _no_files(listing)
    columns = ["messages", settings.prompt_field, *filter(None, [settings.slice_field])]
    sample = sample_traffic(listing.files, size=sample_rows, seed=settings.seed, columns=columns)
    parsed = _parse(sample, settings, rules)
    kept = deduplicate(parsed.candidates, threshold=settings.near_duplicate_threshold).kept
    live = LiveMix(
        mix=drift.PromptMix(
            slices=Counter(candidate.slice for candidate in kept),
            lengths=[parsed.lengths[candidate.position] for candidate in kept],
        ),
        listing=listing,
        sample=sample,
        dropped=parsed.dropped,
        examples=parsed.examples,
        duplicates=len(parsed.candidates) - len(kept),
    )
    if not kept:
        raise _no_prompts(live)
    return live


# --- the result ---------------------------------------------------------------------------


def _metrics(found: drift.Drift, *, live: LiveMix, training: TrainingMix) -> dict[str, Any]:
    """The result's numbers; the operator copies the top-level numbers into status."""
    largest = found.largest_change
    return {
        "sliceShift": round(found.slice_shift, 4),
        "lengthShift": round(found.length_shift, 4),
        "maxSliceShift": found.bounds.max_slice_shift,
        "maxLengthShift": found.bounds.max_length_shift,
        "largestSliceChange": round(largest.change, 4),
        "largestSliceChangeSlice": largest.slice,
        "liveRows": live.mix.prompts,
        "trainingRows": training.mix.prompts,
        "trafficRows": live.sample.seen,
        "sampledRows": len(live.sample.rows),
        "malformedRows": live.malformed,
        "noPromptRows": live.no_prompt,
        "duplicateRows": live.duplicates,
        "unreadableFiles": len(live.sample.unreadable),
        "trainingFileRows": training.rows,
    }


def _drift_document(
    found: drift.Drift, *, live: LiveMix, training: TrainingMix, sample_rows: int, seed: int
) -> dict[str, Any]:
    """``drift.json``: the per-slice table, the length quantiles and what was read."""
    skipped = live.listing.skipped + live.sample.unreadable
    return {
        "slice_shift": found.slice_shift,
        "length_shift": found.length_shift,
        "bounds": {
            "maxSliceShift": found.bounds.max_slice_shift,
            "maxLengthShift": found.bounds.max_length_shift,
        },
        "slices": drift.table(found),
        "lengths": {"live": found.live_lengths, "training": found.training_lengths},
        "live": {
            "files_read": len(live.listing.files) - len(live.sample.unreadable),
            "files_skipped": [
                {"uri": item.uri, "kind": item.kind.value, "detail": item.detail}
                for item in skipped
            ],
            "unmatched": list(live.listing.unmatched),
            "rows_read": live.sample.seen,
            "sample": {"limit": sample_rows, "seed": seed, "rows": len(live.sample.rows)},
            "dropped": {
                reason.value: {
                    "count": count,
                    "meaning": DROP_MEANINGS[reason],
                    "examples": live.examples.get(reason, []),
                }
                for reason, count in sorted(live.dropped.items())
            },
            "duplicates": live.duplicates,
            "prompts": live.mix.prompts,
        },
        "training": {
            "train": training.train_uri,
            "rows": training.rows,
            "prompts": training.mix.prompts,
            "tagging_changed": training.tagging_changed,
        },
    }


def _message(found: drift.Drift, *, live: LiveMix, training: TrainingMix) -> str:
    """What was found, then what it was measured on."""
    skipped = []
    if live.malformed:
        skipped.append(f"{live.malformed} malformed")
    if live.no_prompt:
        skipped.append(f"{live.no_prompt} without a prompt")
    if live.sample.unreadable:
        skipped.append(f"{len(live.sample.unreadable)} unreadable file(s)")
    read = f"{len(live.sample.rows)} sampled of {live.sample.seen} rows read"
    read += f", {' and '.join(skipped)} skipped" if skipped else ""
    message = (
        f"{drift.describe(found)}; {live.mix.prompts} live prompts ({read}) against "
        f"{training.mix.prompts} training prompts"
    )
    if training.tagging_changed:
        message += (
            "; note: spec.source.sliceField or sliceRules changed since the student's data "
            "was sourced, so live slices are tagged differently from the training slices"
        )
    return message


def _monitor(stage_input: StageInput) -> StageResult:
    try:
        settings = read_settings(stage_input.spec)
        rules = compile_rules(settings)
    except SourcingError as error:
        raise StageFailure(error.reason, str(error)) from None
    lifecycle = read_lifecycle(stage_input.spec)
    training = read_training(stage_input, settings=settings)
    try:
        live = read_live(settings, rules, sample_rows=lifecycle.sample_rows)
    except StageFailure as failure:
        failure.metrics["trainingRows"] = training.mix.prompts
        raise
    bounds = drift.Bounds(
        max_slice_shift=lifecycle.max_slice_shift, max_length_shift=lifecycle.max_length_shift
    )
    found = drift.compare(live=live.mix, training=training.mix, bounds=bounds)
    drift_uri = f"{stage_input.stage_dir()}/{DRIFT_FILE}"
    write_json(
        drift_uri,
        _drift_document(
            found,
            live=live,
            training=training,
            sample_rows=lifecycle.sample_rows,
            seed=settings.seed,
        ),
    )
    return StageResult(
        stage=stage_input.stage,
        input_hash=stage_input.input_hash(),
        exit_condition_met=not found.drifted,
        reason="Drifted" if found.drifted else "NoDrift",
        message=_message(found, live=live, training=training),
        metrics=_metrics(found, live=live, training=training),
        artifacts={"drift": drift_uri},
    )


def work(stage_input: StageInput) -> StageResult:
    """Launch's drift monitor: has live traffic moved from what the student was
    trained on?"""
    try:
        return _monitor(stage_input)
    except StageFailure as failure:
        return failure.result(stage_input)


def main() -> int:
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
