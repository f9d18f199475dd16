"""Which model a request goes to, and which student answers are also compared.

A canary request with a key (the OpenAI ``user`` field, else an ``X-Request-Id``
header) is placed by a hash of the key, so the same caller goes the same way on every
request and in every rollout step: a canary that grows from 5% to 25% keeps its first
5%. A request without a key is placed at random.
"""

from __future__ import annotations

import hashlib
import random
from enum import StrEnum

from distill_jobs.contract import Routing, RoutingMode


class Route(StrEnum):
    """TEACHER: the teacher answers alone; SHADOW: the teacher answers and the student
    is asked beside it; STUDENT: the student answers unless it is not confident."""

    TEACHER = "teacher"
    SHADOW = "shadow"
    STUDENT = "student"


def stable_share(key: str, *, purpose: str) -> float:
    """A number in [0, 1) fixed by ``key`` and ``purpose`` (independent per purpose)."""
    digest = hashlib.sha256(f"{purpose}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def route(routing: Routing, *, has_student: bool, key: str | None, rng: random.Random) -> Route:
    """Where a request goes under ``routing``; with no student loaded, to the teacher."""
    if not has_student or routing.mode == RoutingMode.TEACHER:
        return Route.TEACHER
    if routing.mode == RoutingMode.SHADOW:
        return Route.SHADOW
    if routing.mode == RoutingMode.FULL:
        return Route.STUDENT
    draw = stable_share(key, purpose="canary") if key is not None else rng.random()
    in_canary = draw < routing.percent / 100.0
    return Route.STUDENT if in_canary else Route.TEACHER


def sampled(routing: Routing, *, rng: random.Random) -> bool:
    """Whether an answer the student gave is also asked of the teacher and compared.

    Drawn per request, not per key: one busy caller is not always, or never, compared.
    """
    return rng.random() < routing.sample_rate
