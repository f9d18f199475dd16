"""The ``spec.source`` excerpt the Source workload reads, and the user errors it reports.

The operator's API models (``distill_operator.api.spec.Source``) are the source of truth;
this mirror parses the camelCase JSON the workload receives, with the same defaults and
bounds, without importing the operator package (``distill_jobs`` runs inside Ray).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class SourceSpecModel(BaseModel):
    """Shared configuration: camelCase on the wire, unknown keys ignored (newer operator)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class CriticalSliceSettings(SourceSpecModel):
    """A slice that must have at least ``min_count`` training examples."""

    name: str
    min_count: int = Field(default=50, ge=1)


class SliceRuleSettings(SourceSpecModel):
    """Prompts whose text matches ``pattern`` (``re.search``) belong to ``slice``."""

    slice: str
    pattern: str = Field(min_length=1)


class SourceSettings(SourceSpecModel):
    """Where the traffic is and how it becomes a training and a held-out set."""

    traffic: list[str] = Field(min_length=1)
    slice_field: str | None = None
    slice_rules: list[SliceRuleSettings] = Field(default_factory=list)
    critical_slices: list[CriticalSliceSettings] = Field(default_factory=list)
    allow_oversampling: bool = False
    held_out_fraction: float = Field(default=0.1, gt=0.0, le=0.5)
    seed: int = Field(default=0, ge=0)
    near_duplicate_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    prompt_field: str = "prompt"
    reference_field: str = "reference"

    def min_counts(self) -> dict[str, int]:
        """Critical slice name to its minimum number of training examples, in spec order."""
        return {critical.name: critical.min_count for critical in self.critical_slices}


class SourcingError(Exception):
    """A problem with the user's traffic or settings: reported as a result, never raised on.

    Attributes:
        reason: the CamelCase reason of the failed StageResult.
    """

    reason: ClassVar[str] = "SourceFailed"


class InvalidSourceSpec(SourcingError):
    reason = "InvalidSourceSpec"


class InvalidSliceRule(SourcingError):
    reason = "InvalidSliceRule"


class NoTraffic(SourcingError):
    reason = "NoTraffic"


class UnreadableTraffic(SourcingError):
    reason = "UnreadableTraffic"


class NoPrompts(SourcingError):
    reason = "NoPrompts"


class SliceFieldMissing(SourcingError):
    reason = "SliceFieldMissing"


class HeldOutEmptiesSlice(SourcingError):
    reason = "HeldOutEmptiesSlice"


class CriticalSliceUnderCovered(SourcingError):
    reason = "CriticalSliceUnderCovered"


@dataclass(frozen=True)
class CompiledRule:
    """A slice rule with its pattern compiled (compiled patterns pickle, for Ray tasks)."""

    slice: str
    pattern: re.Pattern[str]


def read_settings(spec: dict[str, Any]) -> SourceSettings:
    """The source settings of a stage input's spec excerpt.

    Raises:
        InvalidSourceSpec: the excerpt has no ``source`` or a field is out of bounds.
    """
    if not isinstance(spec.get("source"), dict):
        raise InvalidSourceSpec("the stage input has no spec.source: set spec.source.traffic")
    try:
        return SourceSettings.model_validate(spec["source"])
    except ValidationError as error:
        problems = "; ".join(
            f"spec.source.{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()
        )
        raise InvalidSourceSpec(problems) from None


def compile_rules(settings: SourceSettings) -> tuple[CompiledRule, ...]:
    """The slice rules with their patterns compiled, in spec order (the first match wins).

    Raises:
        InvalidSliceRule: a pattern is not a valid Python regular expression.
    """
    compiled = []
    for index, rule in enumerate(settings.slice_rules):
        try:
            compiled.append(CompiledRule(slice=rule.slice, pattern=re.compile(rule.pattern)))
        except re.error as error:
            raise InvalidSliceRule(
                f"spec.source.sliceRules[{index}] (slice {rule.slice!r}): pattern "
                f"{rule.pattern!r} is not a valid regular expression: {error}"
            ) from None
    return tuple(compiled)
