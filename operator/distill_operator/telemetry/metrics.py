"""The operator's Prometheus metrics, in a registry of its own, served over HTTP.

Label values come from closed sets (phases, stages, launcher modes, the machine's
reasons), never from project or candidate names, so the number of series stays small
however many projects there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from distill_operator.api import ProjectStatus
from distill_operator.telemetry.book import ProjectBook
from distill_operator.telemetry.transitions import UnitKind, changes

# Stages and training candidates run from seconds (a refused launch) to hours (training).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
# One pass: reading the project, observing its jobs, writing status, carrying out actions.
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _ProjectsCollector(Collector):
    """``distill_projects``: counted from the book at scrape time, so a project that goes
    leaves no stale series behind."""

    def __init__(self, book: ProjectBook) -> None:
        self._book = book

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "distill_projects",
            "DistillationProjects this operator runs, by phase and current stage "
            '(stage "" before the first stage).',
            labels=["phase", "stage"],
        )
        for (phase, stage), count in sorted(self._book.counts().items()):
            gauge.add_metric([phase, stage], count)
        yield gauge

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("distill_projects", "", labels=["phase", "stage"])]


class OperatorMetrics:
    """Every metric the operator exports, and what the reconciler tells it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.projects = ProjectBook()
        self.registry.register(_ProjectsCollector(self.projects))
        self.stage_seconds = Histogram(
            "distill_stage_duration_seconds",
            "Stages from start to their terminal state, observed when the operator sees the "
            "change (outcome: Succeeded or Failed).",
            ["stage", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.candidate_seconds = Histogram(
            "distill_candidate_duration_seconds",
            "Investigate's alternatives and Iterate's student candidates, each run by its "
            "own job, from start to their terminal state.",
            ["stage", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.job_launches = Counter(
            "distill_job_launches",
            "Jobs submitted and accepted (mode: submit, rayjob or deployment).",
            ["stage", "mode"],
            registry=self.registry,
        )
        self.job_failures = Counter(
            "distill_job_failures",
            "Job attempts that failed, retried or given up (reason: LaunchRefused, JobFailed, "
            "DeadlineExceeded, or the reason of a result that failed the exit condition).",
            ["stage", "reason"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "distill_reconcile_duration_seconds",
            "One reconcile pass of one project: read, observe, decide, write status, act.",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )

    def saw(self, project: str, *, uid: str, status: ProjectStatus) -> None:
        """``project`` (``namespace/name``, with ``uid``) is now as ``status`` says."""
        stage = status.stage.value if status.stage else None
        self.projects.see(project, uid=uid, phase=status.phase.value, stage=stage)

    def passed(
        self, project: str, *, uid: str, before: ProjectStatus, after: ProjectStatus
    ) -> None:
        """A pass wrote ``after`` over ``before``: count what finished and what failed."""
        seen = changes(before, after)
        for unit in seen.finished:
            by_kind = self.stage_seconds if unit.kind == UnitKind.STAGE else self.candidate_seconds
            by_kind.labels(stage=unit.stage, outcome=unit.outcome).observe(unit.seconds)
        for attempt in seen.failed_attempts:
            self.job_failures.labels(stage=attempt.stage, reason=attempt.reason).inc()
        self.saw(project, uid=uid, status=after)

    def launched(self, *, stage: str, mode: str) -> None:
        """A job was submitted and the platform accepted it."""
        self.job_launches.labels(stage=stage, mode=mode).inc()

    @contextmanager
    def tracking(self, project: str) -> Iterator[None]:
        """While the operator runs ``project``'s loop; afterwards it counts no more."""
        try:
            yield
        finally:
            self.projects.forget(project)

    def serve(self, *, host: str, port: int) -> WSGIServer:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread.

        Raises:
            OSError: The address cannot be bound (in use, or not this host's).
        """
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server
