"""Latency and cost of a trained student, measured on the hardware it runs on.

Requests are served in batches the way a batching server would group them: every
request of a batch waits for the whole batch, so each request's latency is its batch's
wall time. Percentiles are nearest-rank (the smallest observed latency with at least
q% of requests at or below it), so they are always a latency that was observed, and the
p95 of a few requests is the slowest of them rather than an extrapolation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill_jobs.teachers.generation import LocalGenerator

Conversation = list[dict[str, Any]]
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ServingCost:
    """What serving the student costs, measured.

    Attributes:
        batch_size: requests per batch (the last batch may be smaller).
        requests: requests timed.
        batches: batches timed (warm-up batches excluded).
        latency_p50_ms: median request latency (nearest rank).
        latency_p95_ms: 95th percentile request latency (nearest rank).
        requests_per_second: requests over the total timed seconds.
        cost_per_1k_requests: accelerator cost of 1000 requests at that throughput.
        accelerators: accelerators the student runs on (fractions allowed).
    """

    batch_size: int
    requests: int
    batches: int
    latency_p50_ms: float
    latency_p95_ms: float
    requests_per_second: float
    cost_per_1k_requests: float
    accelerators: float


def cost_per_1k_requests(
    *, requests_per_second: float, price_per_accelerator_hour: float, accelerators: float
) -> float:
    """Cost of 1000 requests: ``1000 / rps`` seconds of ``accelerators`` at the hourly price.

    Raises:
        ValueError: a throughput that is not positive.
    """
    if requests_per_second <= 0:
        raise ValueError(f"requests_per_second must be > 0, got {requests_per_second}")
    hours = 1000.0 / requests_per_second / SECONDS_PER_HOUR
    return hours * accelerators * price_per_accelerator_hour


def measure_serving(
    *,
    generator: LocalGenerator,
    conversations: Sequence[Conversation],
    batch_size: int,
    max_new_tokens: int,
    price_per_accelerator_hour: float,
    accelerators: float = 1.0,
    warmup_batches: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> ServingCost:
    """Serve ``conversations`` greedily in batches and measure latency and throughput.

    Args:
        generator: the student, loaded.
        conversations: the requests, each a chat up to the last user turn.
        batch_size: requests per batch.
        max_new_tokens: generation limit per request.
        price_per_accelerator_hour: what one accelerator costs per hour.
        accelerators: accelerators the student is served on.
        warmup_batches: batches run first and not timed (the first batches of
            ``conversations`` again: they warm caches and kernels, not count).
        clock: seconds, monotonic; a parameter so tests can control it.

    Raises:
        ValueError: no conversations, or a batch size below 1.
    """
    if not conversations:
        raise ValueError("no conversations to measure serving on")
    batches = list(_batches(conversations, batch_size=batch_size))
    for batch in batches[:warmup_batches]:
        _answer(generator, batch, max_new_tokens=max_new_tokens)
    batch_seconds: list[float] = []
    latencies: list[float] = []  # one per request: its batch's time
    for batch in batches:
        start = clock()
        _answer(generator, batch, max_new_tokens=max_new_tokens)
        batch_seconds.append(clock() - start)
        latencies.extend([batch_seconds[-1]] * len(batch))
    # Batches run one after another: the timed seconds are the sum of batch times.
    requests_per_second = len(conversations) / sum(batch_seconds)
    return ServingCost(
        batch_size=batch_size,
        requests=len(conversations),
        batches=len(batches),
        latency_p50_ms=1000.0 * nearest_rank(latencies, percent=50),
        latency_p95_ms=1000.0 * nearest_rank(latencies, percent=95),
        requests_per_second=requests_per_second,
        cost_per_1k_requests=cost_per_1k_requests(
            requests_per_second=requests_per_second,
            price_per_accelerator_hour=price_per_accelerator_hour,
            accelerators=accelerators,
        ),
        accelerators=accelerators,
    )


MIN_LATENCY_REQUESTS = 32


@dataclass(frozen=True)
class BarMeasurement:
    """A model measured the way the bar judges it: its answers, their score, serving."""

    answers: list[str]
    score: float
    serving: ServingCost

    def metrics(self) -> dict[str, float]:
        serving = self.serving
        return {
            "score": round(self.score, 6),
            "latency_p50_ms": round(serving.latency_p50_ms, 3),
            "latency_p95_ms": round(serving.latency_p95_ms, 3),
            "requests_per_second": round(serving.requests_per_second, 3),
            "cost_per_1k_requests": serving.cost_per_1k_requests,
        }


def measure_against_bar(
    *,
    generator: LocalGenerator,
    bar: Mapping[str, Any],
    conversations: Sequence[Conversation],
    references: Sequence[str | None],
    max_new_tokens: int,
    price_per_accelerator_hour: float,
    accelerators: float = 1.0,
) -> BarMeasurement:
    """Answer every conversation greedily, score the answers with the bar's metric, then
    time serving at the bar's batch size (at least :data:`MIN_LATENCY_REQUESTS` requests,
    the conversations cycled).

    Args:
        bar: ``spec.bar`` as snake_case JSON (``metric``, ``metric_function``, ``batch_size``).

    Raises:
        distill_jobs.metrics.MetricError: the metric cannot score these answers.
        ValueError: no conversations.
    """
    from distill_jobs import metrics

    batch_size = int(bar.get("batch_size", 1))
    answers = validation_answers(
        generator=generator,
        conversations=conversations,
        max_new_tokens=max_new_tokens,
        batch_size=max(batch_size, 8),
    )
    score = metrics.score(
        metric=bar["metric"],
        predictions=answers,
        references=list(references),
        function=bar.get("metric_function"),
    )
    requests = max(MIN_LATENCY_REQUESTS, 4 * batch_size)
    cycled = [conversations[i % len(conversations)] for i in range(requests)]
    serving = measure_serving(
        generator=generator,
        conversations=cycled,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        price_per_accelerator_hour=price_per_accelerator_hour,
        accelerators=accelerators,
    )
    return BarMeasurement(answers=answers, score=score, serving=serving)


def validation_answers(
    *,
    generator: LocalGenerator,
    conversations: Sequence[Conversation],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """The student's greedy answer to each conversation, in order.

    Raises:
        ValueError: a batch size below 1.
    """
    answers: list[str] = []
    for batch in _batches(conversations, batch_size=batch_size):
        answers.extend(_answer(generator, batch, max_new_tokens=max_new_tokens))
    return answers


def nearest_rank(values: Sequence[float], *, percent: float) -> float:
    """The nearest-rank percentile: the ``ceil(percent/100 * n)``-th smallest value."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _batches(
    conversations: Sequence[Conversation], *, batch_size: int
) -> Iterator[Sequence[Conversation]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(conversations), batch_size):
        yield conversations[start : start + batch_size]


def _answer(
    generator: LocalGenerator, batch: Sequence[Conversation], *, max_new_tokens: int
) -> list[str]:
    generations = generator.generate(
        conversations=batch, max_new_tokens=max_new_tokens, temperature=0.0, top_k=0
    )
    return [generation.text for generation in generations]
