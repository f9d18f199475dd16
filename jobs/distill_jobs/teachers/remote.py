"""What API teachers share: bounded concurrency, retries with backoff, failure accounting.

Each backend (:mod:`.openai_chat`, :mod:`.anthropic_messages`) only says how to make one
request and how to classify its SDK's errors. The SDKs' own retries are turned off
(``max_retries=0``) so that every retry goes through here: counted, bounded by
``maxRequestRetries``, honouring Retry-After, and visible as :attr:`RemoteTeacher.retries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distill_jobs.records import PromptRecord, TeacherRecord
from distill_jobs.teachers.errors import AnswerFailure, FailureReason, TeacherBatchError
from distill_jobs.teachers.settings import RetryPolicy, TeacherSettings

# Statuses worth another try: timeouts, conflicts, rate limits, server faults.
RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Verdict:
    """How a failed request is handled.

    Attributes:
        reason: recorded if the prompt ends up unanswered.
        message: what happened.
        retryable: whether another attempt may succeed.
        retry_after: seconds the server asked to wait, if it said.
    """

    reason: FailureReason
    message: str
    retryable: bool
    retry_after: float | None = None


class BadResponseError(Exception):
    """An answer arrived but is not what the API promises (not retried)."""


def sdk_verdict(
    error: Exception,
    *,
    status_error: type[Exception],
    timeout_error: type[Exception],
    connection_error: type[Exception],
) -> Verdict | None:
    """The verdict on an error of an SDK generated the OpenAI/Anthropic way.

    Both SDKs raise ``APIStatusError`` (with ``status_code`` and ``response``),
    ``APITimeoutError`` and ``APIConnectionError``; anything else is not the API's.
    """
    if isinstance(error, BadResponseError):
        return Verdict(reason=FailureReason.BAD_RESPONSE, message=str(error), retryable=False)
    if isinstance(error, status_error):
        response = getattr(error, "response", None)
        return status_verdict(
            status=int(getattr(error, "status_code", 500)),
            message=str(getattr(error, "message", error)),
            headers=dict(response.headers) if response is not None else None,
        )
    if isinstance(error, timeout_error):
        return Verdict(
            reason=FailureReason.TIMEOUT, message=f"no answer in time: {error}", retryable=True
        )
    if isinstance(error, connection_error):
        cause = error.__cause__ or error
        return Verdict(
            reason=FailureReason.CONNECTION_ERROR,
            message=f"{error} ({type(cause).__name__}: {cause})",
            retryable=True,
        )
    return None


def status_verdict(*, status: int, message: str, headers: Mapping[str, str] | None) -> Verdict:
    """The verdict on an HTTP error status, Retry-After read from ``headers``."""
    if status == 429:
        reason, retryable = FailureReason.RATE_LIMITED, True
    elif status == 408:
        reason, retryable = FailureReason.TIMEOUT, True
    elif status >= 500 or status in RETRYABLE_STATUS:
        reason, retryable = FailureReason.SERVER_ERROR, True
    elif status in (401, 403):
        reason, retryable = FailureReason.AUTH_ERROR, False
    else:
        reason, retryable = FailureReason.BAD_REQUEST, False
    return Verdict(
        reason=reason,
        message=f"{status}: {message}",
        retryable=retryable,
        retry_after=parse_retry_after(headers or {}) if retryable else None,
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    with contextlib.suppress(KeyError, ValueError):
        return float(lowered["retry-after-ms"]) / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    return None  # unreadable: the backoff decides


class RemoteTeacher(ABC):
    """An API teacher: every prompt one request, at most ``concurrency`` in flight.

    ``answer`` is synchronous (Ray Data calls it so); it drives its own event loop, kept
    for the teacher's lifetime so the SDK client and its connection pool are reused
    across batches. Call :meth:`close` when done.
    """

    def __init__(
        self,
        *,
        settings: TeacherSettings,
        api_key: str | None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.tokenizer_id: str | None = None
        self.retries = 0
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._rng = random.Random()
        self._runner = asyncio.Runner()
        self._client: Any = None

    @abstractmethod
    def _make_client(self) -> Any:
        """The SDK's async client (made inside the teacher's event loop)."""

    @abstractmethod
    async def _request(self, record: PromptRecord) -> TeacherRecord:
        """One request for ``record``; SDK errors propagate to :meth:`_verdict`."""

    @abstractmethod
    def _verdict(self, error: Exception) -> Verdict | None:
        """How to handle ``error``; None for one that is not the API's (a bug: raised)."""

    def answer(self, records: Sequence[PromptRecord]) -> list[TeacherRecord]:
        """Answer ``records``, ``concurrency`` requests at a time, retrying transients.

        Raises:
            TeacherBatchError: some records were not answered (it carries the others).
        """
        outcomes = self._runner.run(self._answer_all(records))
        answered = [o for o in outcomes if isinstance(o, TeacherRecord)]
        failures = [o for o in outcomes if isinstance(o, AnswerFailure)]
        if failures:
            raise TeacherBatchError(answered=answered, failures=failures)
        return answered

    def close(self) -> None:
        """Close the SDK client and the event loop."""
        if self._client is not None:
            self._runner.run(self._client.close())
            self._client = None
        self._runner.close()

    async def _answer_all(
        self, records: Sequence[PromptRecord]
    ) -> list[TeacherRecord | AnswerFailure]:
        if self._client is None:
            self._client = self._make_client()
        in_flight = asyncio.Semaphore(self.settings.concurrency)
        return await asyncio.gather(*(self._answer_one(r, in_flight) for r in records))

    async def _answer_one(
        self, record: PromptRecord, in_flight: asyncio.Semaphore
    ) -> TeacherRecord | AnswerFailure:
        attempt = 0
        while True:
            attempt += 1
            async with in_flight:
                try:
                    return await self._request(record)
                except Exception as error:
                    verdict = self._verdict(error)
                    if verdict is None:
                        raise
            if not verdict.retryable or attempt > self.settings.max_request_retries:
                return AnswerFailure(
                    id=record.id, reason=verdict.reason, message=verdict.message, attempts=attempt
                )
            self.retries += 1
            # Waiting outside the semaphore: a backing-off prompt holds no request slot.
            await asyncio.sleep(
                self._retry.delay(retry=attempt, retry_after=verdict.retry_after, rng=self._rng)
            )
