"""Serving latency and cost of a student: the tiny model for real, a fake clock for exact
numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from distill_jobs.training.measure import (
    cost_per_1k_requests,
    measure_serving,
    nearest_rank,
    validation_answers,
)

CONVERSATIONS = [[{"role": "user", "content": f"What is {n} plus {n}?"}] for n in range(5)]


@dataclass
class Answer:
    text: str


class TimedEcho:
    """A generator that answers with each prompt and takes a scripted time per batch."""

    def __init__(self, batch_seconds: list[float]) -> None:
        self.now = 0.0
        self.batch_seconds = batch_seconds
        self.batch_sizes: list[int] = []

    def clock(self) -> float:
        return self.now

    def generate(
        self, *, conversations: Sequence[list[dict[str, Any]]], **settings: Any
    ) -> list[Answer]:
        assert settings["temperature"] == 0.0  # validation and serving are greedy
        self.now += self.batch_seconds.pop(0)
        self.batch_sizes.append(len(conversations))
        return [Answer(text=c[-1]["content"]) for c in conversations]


def test_cost_per_1k_requests_by_hand() -> None:
    # 1000 requests at 2/s take 500 s = 500/3600 h; at 3.6 per hour that is 0.5.
    assert cost_per_1k_requests(
        requests_per_second=2.0, price_per_accelerator_hour=3.6, accelerators=1.0
    ) == pytest.approx(0.5)
    assert cost_per_1k_requests(
        requests_per_second=2.0, price_per_accelerator_hour=3.6, accelerators=0.5
    ) == pytest.approx(0.25)


def test_cost_of_no_throughput_is_refused() -> None:
    with pytest.raises(ValueError, match="requests_per_second"):
        cost_per_1k_requests(requests_per_second=0.0, price_per_accelerator_hour=1, accelerators=1)


def test_nearest_rank_picks_an_observed_value() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert nearest_rank(values, percent=50) == 3.0  # ceil(2.5) = 3rd smallest
    assert nearest_rank(values, percent=95) == 5.0  # ceil(4.75) = 5th smallest
    assert nearest_rank([7.0], percent=95) == 7.0


def test_latency_is_the_batch_time_and_warm_up_is_not_timed() -> None:
    # Warm-up (100 s, untimed), then batches of 2, 2, 1 taking 1, 2 and 4 seconds.
    fake = TimedEcho(batch_seconds=[100.0, 1.0, 2.0, 4.0])
    cost = measure_serving(
        generator=fake,  # type: ignore[arg-type]
        conversations=CONVERSATIONS,
        batch_size=2,
        max_new_tokens=4,
        price_per_accelerator_hour=3.6,
        clock=fake.clock,
    )
    assert fake.batch_sizes == [2, 2, 2, 1]
    assert (cost.requests, cost.batches, cost.batch_size) == (5, 3, 2)
    # Request latencies 1, 1, 2, 2, 4 s: nearest-rank p50 is the 3rd, p95 the 5th.
    assert cost.latency_p50_ms == pytest.approx(2000.0)
    assert cost.latency_p95_ms == pytest.approx(4000.0)
    assert cost.requests_per_second == pytest.approx(5 / 7)
    # 1000 requests at 5/7 per second: 1400 s = 7/18 h, at 3.6 per hour = 1.4.
    assert cost.cost_per_1k_requests == pytest.approx(1.4)


def test_validation_answers_keep_the_order_across_batches() -> None:
    fake = TimedEcho(batch_seconds=[0.0] * 3)
    answers = validation_answers(
        generator=fake,  # type: ignore[arg-type]
        conversations=CONVERSATIONS,
        max_new_tokens=4,
        batch_size=2,
    )
    assert answers == [c[0]["content"] for c in CONVERSATIONS]
    assert fake.batch_sizes == [2, 2, 1]


def test_no_conversations_is_refused() -> None:
    with pytest.raises(ValueError, match="no conversations"):
        measure_serving(
            generator=TimedEcho(batch_seconds=[]),  # type: ignore[arg-type]
            conversations=[],
            batch_size=2,
            max_new_tokens=4,
            price_per_accelerator_hour=1.0,
        )


def test_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        validation_answers(
            generator=TimedEcho(batch_seconds=[]),  # type: ignore[arg-type]
            conversations=CONVERSATIONS,
            max_new_tokens=4,
            batch_size=0,
        )


@pytest.mark.parametrize(("batch_size", "batches"), [(2, 3), (5, 1)])
def test_tiny_student_serving_is_measured(
    tiny_generator: Any, batch_size: int, batches: int
) -> None:
    cost = measure_serving(
        generator=tiny_generator,
        conversations=CONVERSATIONS,
        batch_size=batch_size,
        max_new_tokens=4,
        price_per_accelerator_hour=3.6,
        accelerators=2.0,
    )
    assert (cost.requests, cost.batches, cost.batch_size) == (5, batches, batch_size)
    assert 0 < cost.latency_p50_ms <= cost.latency_p95_ms
    assert cost.requests_per_second > 0
    # 1000 / rps seconds of 2 accelerators at 3.6 per hour each: 2 * (1000 / rps) / 1000.
    assert cost.cost_per_1k_requests == pytest.approx(2.0 / cost.requests_per_second)
    assert cost.accelerators == 2.0


def test_tiny_student_validation_answers_are_deterministic(tiny_generator: Any) -> None:
    first = validation_answers(
        generator=tiny_generator, conversations=CONVERSATIONS, max_new_tokens=6, batch_size=2
    )
    second = validation_answers(
        generator=tiny_generator, conversations=CONVERSATIONS, max_new_tokens=6, batch_size=2
    )
    assert len(first) == len(CONVERSATIONS)
    assert all(isinstance(answer, str) for answer in first)
    assert first == second
