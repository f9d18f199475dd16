"""The router's Prometheus metrics, in a registry of its own.

Names are the contract's ``METRIC_*``. Counters carry the routing revision they were
counted under, so the operator reads one rollout step's numbers without deltas:

- requests ``{revision, served_by="student"|"teacher"}``: answered requests, by who
  answered (a fallback is the teacher's);
- fallbacks ``{revision}``: requests the student was asked and was not confident about
  (or could not answer);
- comparisons ``{revision, agree="true"|"false"}``: student answers scored against the
  teacher's;
- request seconds ``{model="student"|"teacher"}``: each model call's wall time;
- revision: the routing revision in force (its student loaded).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from distill_jobs.contract import (
    METRIC_COMPARISONS,
    METRIC_FALLBACKS,
    METRIC_LATENCY,
    METRIC_REQUESTS,
    METRIC_REVISION,
)

STUDENT, TEACHER = "student", "teacher"
# Up to two minutes: an API teacher's retries can take that long.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class RouterMetrics:
    """The router's counters, histogram and gauge, and their exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # Its own registry: nothing else of the process (or another router in a test)
        # is mixed in.
        self.registry = CollectorRegistry()
        self._requests = Counter(
            METRIC_REQUESTS,
            "Requests answered, by routing revision and the model that answered.",
            ["revision", "served_by"],
            registry=self.registry,
        )
        self._fallbacks = Counter(
            METRIC_FALLBACKS,
            "Requests the student was asked and was not confident about (the teacher's).",
            ["revision"],
            registry=self.registry,
        )
        self._comparisons = Counter(
            METRIC_COMPARISONS,
            "Student answers scored against the teacher's, by whether they agree.",
            ["revision", "agree"],
            registry=self.registry,
        )
        self._latency = Histogram(
            METRIC_LATENCY,
            "Wall time of one model call, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._revision = Gauge(
            METRIC_REVISION, "The routing revision in force.", registry=self.registry
        )

    def served(self, *, revision: int, by: str) -> None:
        self._requests.labels(revision=str(revision), served_by=by).inc()

    def fell_back(self, *, revision: int) -> None:
        self._fallbacks.labels(revision=str(revision)).inc()

    def compared(self, *, revision: int, agree: bool) -> None:
        self._comparisons.labels(revision=str(revision), agree=str(agree).lower()).inc()

    def timed(self, *, model: str, seconds: float) -> None:
        self._latency.labels(model=model).observe(seconds)

    def in_force(self, revision: int) -> None:
        self._revision.set(revision)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
