"""What an evaluation found, before it becomes the stage attempt's StageResult."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distill_jobs.contract import Diagnosis, StageInput, StageResult


@dataclass(frozen=True)
class Outcome:
    """Whether the stage's exit condition holds, why, and what it measured and wrote.

    Attributes:
        met: the exit condition holds.
        reason: CamelCase reason, e.g. ``BarCleared``.
        message: the evidence, in words.
        metrics: numbers (None values are left out of the result).
        artifacts: URIs by artifact name.
        diagnosis: the stage at fault, when the evidence names one.
    """

    met: bool
    reason: str
    message: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)
    diagnosis: Diagnosis | None = None

    def result(self, stage_input: StageInput) -> StageResult:
        return StageResult(
            stage=stage_input.stage,
            input_hash=stage_input.input_hash(),
            exitConditionMet=self.met,
            reason=self.reason,
            message=self.message,
            metrics={key: value for key, value in self.metrics.items() if value is not None},
            artifacts=dict(self.artifacts),
            diagnosis=self.diagnosis,
        )
