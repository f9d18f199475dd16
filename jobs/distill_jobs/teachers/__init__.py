"""Teachers: one interface, three backends (``hf``, ``openai``, ``anthropic``).

A :class:`Teacher` answers a batch of :class:`~distill_jobs.records.PromptRecord` with
:class:`~distill_jobs.records.TeacherRecord`. Prompts it could not answer (after its
retries) raise :class:`TeacherBatchError`, which carries both the answers that arrived
and an :class:`AnswerFailure` (id, reason, message) per unanswered prompt.

Backends are imported on demand: a workload that uses an API teacher never imports
torch, and one with a local teacher never imports the API SDKs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from distill_jobs.records import PromptRecord, TeacherRecord
from distill_jobs.teachers.errors import (
    AnswerFailure,
    FailureReason,
    ModelNotAvailableError,
    TeacherBatchError,
    TeacherConfigError,
    TeacherError,
)
from distill_jobs.teachers.settings import RetryPolicy, TeacherSettings

__all__ = [
    "AnswerFailure",
    "FailureReason",
    "ModelNotAvailableError",
    "RetryPolicy",
    "Teacher",
    "TeacherBatchError",
    "TeacherConfigError",
    "TeacherError",
    "TeacherSettings",
    "make_teacher",
]


class Teacher(Protocol):
    """What every backend provides.

    Attributes:
        name: ``backend:model``, written to every record it answers.
        tokenizer_id: identity of its tokenizer (soft labels need a student with the
            same one), or None when unknown.
        retries: requests retried so far (always 0 for a local model).
    """

    name: str
    tokenizer_id: str | None
    retries: int

    def answer(self, records: Sequence[PromptRecord]) -> list[TeacherRecord]:
        """Answer a batch, in input order.

        Raises:
            TeacherBatchError: some prompts were not answered; it carries the rest.
        """
        ...

    def close(self) -> None:
        """Release clients, event loops and models."""
        ...


def make_teacher(
    *,
    teacher: Mapping[str, Any],
    teach: Mapping[str, Any],
    api_key: str | None,
    retry: RetryPolicy | None = None,
    device: str | None = None,
) -> Teacher:
    """The teacher that ``spec.teacher`` and ``spec.teach`` describe.

    Args:
        teacher: ``spec.teacher`` as camelCase JSON.
        teach: ``spec.teach`` as camelCase JSON.
        api_key: the key read from the teacher's Secret (API backends).
        retry: backoff of API retries (their count is ``teach.maxRequestRetries``).
        device: where a local teacher runs; by default a GPU when there is one.

    Raises:
        TeacherConfigError: the spec names an unknown backend or lacks a field.
        ModelNotAvailableError: a local teacher's model cannot be found.
    """
    settings = TeacherSettings.from_spec(teacher=teacher, teach=teach)
    if settings.backend == "hf":
        from distill_jobs.teachers.hf import HFTeacher

        return HFTeacher(settings=settings, device=device)
    if settings.backend == "openai":
        from distill_jobs.teachers.openai_chat import OpenAITeacher

        return OpenAITeacher(settings=settings, api_key=api_key, retry=retry)
    from distill_jobs.teachers.anthropic_messages import AnthropicTeacher

    return AnthropicTeacher(settings=settings, api_key=api_key, retry=retry)
