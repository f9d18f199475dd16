"""What a workload reads from the stages before it, and how it says it cannot pass.

A stage's inputs are earlier stages' results (named in ``StageInput.upstream``) and the
artifacts they list. A missing or failed upstream result, or a held-out prompt that
reached training data, is a :class:`StageFailure`: the stage ends with its reason and
message instead of a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import fsspec
from pydantic import BaseModel, ValidationError

from distill_jobs.contract import TEACHER_API_KEY_ENV, StageInput, StageResult, read_result
from distill_jobs.records import LeakError, assert_no_leak

KEYED_BACKENDS = frozenset({"openai", "anthropic"})
Model = TypeVar("Model", bound=BaseModel)


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

    def result(self, stage_input: StageInput) -> StageResult:
        """The failed result of ``stage_input`` that says why."""
        return StageResult(
            stage=stage_input.stage,
            input_hash=stage_input.input_hash(),
            exitConditionMet=False,
            reason=self.reason,
            message=str(self),
            metrics=self.metrics,
        )


def first_line(error: Exception, *, skip: int = 0) -> str:
    """The gist of an error's text: its first two non-empty lines (after ``skip``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[skip : skip + 2]) or type(error).__name__


def upstream_artifacts(
    stage_input: StageInput, *, stage: str, names: Sequence[str]
) -> Mapping[str, str]:
    """The artifact URIs of an earlier stage's passed result, checked to list ``names``."""
    return upstream_result(stage_input, stage=stage, names=names).artifacts


def upstream_result(stage_input: StageInput, *, stage: str, names: Sequence[str]) -> StageResult:
    """An earlier stage's passed result, checked to list the artifacts ``names``."""
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
    return result


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


def read_jsonl(uri: str, *, model: type[Model], what: str) -> list[Model]:
    """Every row of an upstream JSONL file, validated; a bad row is a user error naming
    its line (``SourceArtifactMissing`` / ``SourceArtifactUnreadable``)."""
    rows: list[Model] = []
    try:
        with fsspec.open(uri, "r") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    rows.append(_parse_row(line, model=model, where=f"{what} {uri} line {number}"))
    except FileNotFoundError:
        raise StageFailure("SourceArtifactMissing", f"{what} {uri} does not exist") from None
    return rows


def _parse_row(line: str, *, model: type[Model], where: str) -> Model:
    try:
        return model.model_validate_json(line)
    except ValidationError as error:
        raise StageFailure(
            "SourceArtifactUnreadable",
            f"{where}: not a {model.__name__}: {first_line(error, skip=1)}",
        ) from None


def teacher_api_key(teacher: Mapping[str, Any], *, environ: Mapping[str, str]) -> str | None:
    """The API key from the environment; an API teacher without one is a user error."""
    key = environ.get(TEACHER_API_KEY_ENV) or None
    if key is None and teacher.get("backend") in KEYED_BACKENDS:
        raise StageFailure(
            "ApiKeyMissing",
            f"spec.teacher.apiKeySecretRef: backend {teacher.get('backend')} needs an API "
            f"key, and the job has none ({TEACHER_API_KEY_ENV} is not set); point "
            "apiKeySecretRef at a Secret key that holds it",
        )
    return key
