"""What can go wrong when a teacher answers, as specific types a caller can act on.

A prompt that could not be answered is not an exception on its own: it is an
:class:`AnswerFailure` (which prompt, why, after how many attempts). A batch with any
failures raises :class:`TeacherBatchError`, which carries the answers that did arrive, so
nothing collected is lost and the caller decides what to retry or record.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from distill_jobs.records import TeacherRecord


class FailureReason(StrEnum):
    """Why a prompt went unanswered; the keys of a collection's ``failed_by_reason``."""

    RATE_LIMITED = "rate_limited"  # 429 after every retry
    SERVER_ERROR = "server_error"  # 5xx after every retry
    CONNECTION_ERROR = "connection_error"  # nothing answered (down, refused, reset)
    TIMEOUT = "timeout"  # no answer within requestTimeoutSeconds, after every retry
    AUTH_ERROR = "auth_error"  # 401/403: the key is missing or wrong
    BAD_REQUEST = "bad_request"  # other 4xx: the request itself is refused
    BAD_RESPONSE = "bad_response"  # an answer that could not be parsed
    PROMPT_TOO_LONG = "prompt_too_long"  # prompt + maxOutputTokens exceed the context
    GENERATION_ERROR = "generation_error"  # a local model raised while generating
    TEACHER_ERROR = "teacher_error"  # the teacher itself failed (load, unexpected error)


@dataclass(frozen=True)
class AnswerFailure:
    """One prompt the teacher did not answer.

    Attributes:
        id: the prompt's id.
        reason: the kind of failure.
        message: what happened, for a person.
        attempts: requests made for it (1 plus retries).
    """

    id: str
    reason: FailureReason
    message: str
    attempts: int = 1


class TeacherError(Exception):
    """Base of the errors of this package."""


class TeacherConfigError(TeacherError, ValueError):
    """The spec cannot make a teacher (unknown backend, missing endpoint or key)."""


class ModelNotAvailableError(TeacherError):
    """A local teacher's model is neither a directory nor in the local hub cache."""


class TeacherBatchError(TeacherError):
    """Some prompts of a batch were not answered.

    Attributes:
        answered: the answers that did arrive, in input order.
        failures: one entry per unanswered prompt.
    """

    def __init__(self, *, answered: list[TeacherRecord], failures: list[AnswerFailure]) -> None:
        self.answered = answered
        self.failures = failures
        reasons = sorted({failure.reason.value for failure in failures})
        first = failures[0] if failures else None
        detail = f"; e.g. {first.id}: {first.message}" if first else ""
        super().__init__(
            f"{len(failures)} of {len(answered) + len(failures)} prompt(s) unanswered "
            f"({', '.join(reasons)}){detail}"
        )

    @property
    def failed_ids(self) -> list[str]:
        """The ids of the unanswered prompts."""
        return [failure.id for failure in self.failures]
