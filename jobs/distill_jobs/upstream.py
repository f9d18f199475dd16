"""What a workload reads from the stages before it, and how it says it cannot pass.

A stage's inputs are earlier stages' results (named in ``StageInput.upstream``) and the
artifacts they list. A missing or failed upstream result, or a held-out prompt that
reached training data, is a :class:`StageFailure`: the stage ends with its reason and
message instead of a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import fsspec

from distill_jobs.contract import StageInput, read_result
from distill_jobs.records import LeakError, assert_no_leak


class StageFailure(Exception):
    """The stage cannot pass: a user's mistake or a dependency that is not there.

    Attributes:
        reason: CamelCase reason for the stage result.
        metrics: numbers already known when it failed.
    """

    def __init__(self, reason: str, message: str, *, metrics: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.reason = reason
        self.metrics = dict(metrics or {})


def first_line(error: Exception, *, skip: int = 0) -> str:
    """The gist of an error's text: its first two non-empty lines (after ``skip``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[skip : skip + 2]) or type(error).__name__


def upstream_artifacts(
    stage_input: StageInput, *, stage: str, names: Sequence[str]
) -> Mapping[str, str]:
    """The artifact URIs of an earlier stage's passed result, checked to list ``names``."""
    uri = stage_input.upstream.get(stage)
    if not uri:
        raise StageFailure(
            f"{stage}ResultMissing", f"upstream.{stage}: the stage input names no {stage} result"
        )
    try:
        result = read_result(uri)
    except (OSError, ValueError) as error:
        raise StageFailure(
            f"{stage}ResultUnreadable", f"{stage} result {uri} cannot be read: {first_line(error)}"
        ) from None
    if result is None:
        raise StageFailure(f"{stage}ResultMissing", f"{stage} result {uri} does not exist")
    if not result.exit_condition_met:
        raise StageFailure(
            f"{stage}NotPassed", f"{stage} result {uri} did not pass ({result.reason})"
        )
    for name in names:
        if name not in result.artifacts:
            raise StageFailure(
                f"{stage}ArtifactMissing", f"{stage} result {uri} has no artifacts.{name}"
            )
    return result.artifacts


def read_held_out(uri: str) -> set[str]:
    """Source's held-out prompt ids (a JSON list of prompt hashes)."""
    try:
        with fsspec.open(uri, "r") as handle:
            held_out = json.load(handle)
    except FileNotFoundError:
        raise StageFailure(
            "SourceArtifactMissing", f"Source's held-out hashes {uri} do not exist"
        ) from None
    except ValueError as error:
        raise StageFailure(
            "SourceArtifactUnreadable", f"Source's held-out hashes {uri}: not JSON ({error})"
        ) from None
    if not isinstance(held_out, list) or not all(isinstance(item, str) for item in held_out):
        raise StageFailure(
            "SourceArtifactUnreadable",
            f"Source's held-out hashes {uri}: expected a JSON list of prompt ids",
        )
    return set(held_out)


def refuse_leaks(ids: Iterable[str], *, held_out: set[str], where: str) -> None:
    """Stop before any work when a held-out prompt is among the training prompts."""
    try:
        assert_no_leak(ids, held_out)
    except LeakError as error:
        raise StageFailure("HeldOutLeak", f"{where}: {error}") from None
