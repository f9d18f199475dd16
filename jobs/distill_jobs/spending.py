"""What one attempt of a workload spends while it runs, for the operator's cost ledger.

A :class:`SpendMeter` lives for one attempt (the workload makes it and passes it down):
it adds up GPU-seconds around the work that holds GPUs and the tokens a teacher
reports, and its :meth:`SpendMeter.spend` goes into the result's metrics, failed results
included (a failed attempt spent too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from distill_jobs.contract import Spend
from distill_jobs.records import TeacherRecord


def local_accelerators() -> float:
    """GPUs a model loaded in this process takes: one when there is one (the generators
    load onto ``cuda`` by default), else none (CPU work counts no accelerator time)."""
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


@dataclass
class SpendMeter:
    """One attempt's running totals."""

    clock: Callable[[], float] = field(default=time.monotonic)
    accelerator_seconds: float = 0.0
    teacher_input_tokens: int = 0
    teacher_output_tokens: int = 0

    @contextmanager
    def holding(self, accelerators: float) -> Iterator[None]:
        """Count ``accelerators`` GPUs for as long as the block runs, even if it raises."""
        began = self.clock()
        try:
            yield
        finally:
            self.accelerator_seconds += accelerators * (self.clock() - began)

    def asked_teacher(self, records: Iterable[TeacherRecord]) -> None:
        """Add the tokens of the teacher's answers (as it reported them)."""
        for record in records:
            self.teacher_input_tokens += record.input_tokens or 0
            self.teacher_output_tokens += record.output_tokens or 0

    def spend(self) -> Spend:
        return Spend(
            accelerator_seconds=self.accelerator_seconds,
            teacher_input_tokens=self.teacher_input_tokens,
            teacher_output_tokens=self.teacher_output_tokens,
        )
