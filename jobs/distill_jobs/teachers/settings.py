"""A teacher's settings, read from the spec excerpts a workload receives.

The operator hands the workload ``spec.teacher`` and ``spec.teach`` as camelCase JSON
(``distill_operator.api.spec.Teacher`` / ``Teach``). This package does not import the
operator's models (workloads stay independent of it), so the few fields a teacher uses
are read here, with the same defaults as the API.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distill_jobs.teachers.errors import TeacherConfigError

BACKENDS = ("hf", "openai", "anthropic")


@dataclass(frozen=True)
class TeacherSettings:
    """What a teacher needs from ``spec.teacher`` and ``spec.teach``.

    Attributes:
        backend: ``hf``, ``openai`` or ``anthropic``.
        model: model name, directory or ``hf://`` name.
        endpoint: base URL of an API teacher.
        top_logprobs: top-k logprobs per output position (0: none).
        max_output_tokens: generation limit per prompt.
        temperature: sampling temperature (0: greedy).
        batch_size: prompts per generate call of a local teacher.
        concurrency: requests in flight to an API teacher.
        max_request_retries: retries of a request answered 429, 5xx or not at all.
        request_timeout_seconds: limit of one request.
    """

    backend: str
    model: str
    endpoint: str | None = None
    top_logprobs: int = 20
    max_output_tokens: int = 512
    temperature: float = 0.0
    batch_size: int = 16
    concurrency: int = 8
    max_request_retries: int = 5
    request_timeout_seconds: float = 120.0

    @property
    def name(self) -> str:
        """``backend:model``, what TeacherRecord.teacher says answered."""
        return f"{self.backend}:{self.model}"

    @classmethod
    def from_spec(cls, *, teacher: Mapping[str, Any], teach: Mapping[str, Any]) -> TeacherSettings:
        """Read the camelCase spec excerpts; fields a teacher does not use are ignored.

        Raises:
            TeacherConfigError: the backend is unknown, or the model or endpoint missing.
        """
        backend = str(teacher.get("backend", ""))
        if backend not in BACKENDS:
            raise TeacherConfigError(
                f"spec.teacher.backend {backend!r} is not one of {', '.join(BACKENDS)}"
            )
        if not teacher.get("model"):
            raise TeacherConfigError("spec.teacher.model is empty: name the teacher model")
        if backend == "openai" and not teacher.get("endpoint"):
            raise TeacherConfigError("backend openai needs spec.teacher.endpoint (API base URL)")
        defaults = cls(backend=backend, model=str(teacher["model"]))
        return cls(
            backend=backend,
            model=str(teacher["model"]),
            endpoint=teacher.get("endpoint"),
            top_logprobs=int(teacher.get("topLogprobs", defaults.top_logprobs)),
            max_output_tokens=int(teach.get("maxOutputTokens", defaults.max_output_tokens)),
            temperature=float(teach.get("temperature", defaults.temperature)),
            batch_size=int(teach.get("batchSize", defaults.batch_size)),
            concurrency=int(teach.get("concurrency", defaults.concurrency)),
            max_request_retries=int(teach.get("maxRequestRetries", defaults.max_request_retries)),
            request_timeout_seconds=float(
                teach.get("requestTimeoutSeconds", defaults.request_timeout_seconds)
            ),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded; a server's Retry-After wins.

    The base and caps are settings (not constants) so tests can make waits short
    without touching what production uses.

    Attributes:
        base_seconds: the first retry waits up to this long.
        max_seconds: no backoff wait is longer.
        max_retry_after_seconds: a server's Retry-After is honoured up to this long.
    """

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0

    def delay(self, *, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_seconds)
        # Full jitter: clients that failed together do not retry together.
        return rng.uniform(0.0, min(self.max_seconds, self.base_seconds * 2 ** (retry - 1)))
