"""The routing in force: ``routing.json`` polled, and switched to without a restart.

A routing whose student is already loaded (the one serving, or the one before it, kept
so that a rollback is immediate) is in force at once. A new student is loaded in a
thread while the routing before keeps answering; the new routing is in force only once
its student is loaded, and the revision gauge says so. A student that cannot be loaded
leaves the routing before in force (the teacher, and whatever student was serving); it
is logged, shown by ``/healthz``, and tried again when the routing changes or after
``retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from distill_jobs import metrics as quality
from distill_jobs.contract import Routing, RoutingMode, read_model
from distill_jobs.serving.local import LocalModel
from distill_jobs.serving.metrics import RouterMetrics
from distill_jobs.serving.students import Student, student_name
from distill_jobs.teachers.generation import LocalGenerator
from distill_jobs.upstream import first_line

log = logging.getLogger(__name__)

# Before the operator writes a routing: the teacher answers everything.
NO_ROUTING = Routing(revision=0, mode=RoutingMode.TEACHER)
LoadStudent = Callable[[str], LocalGenerator]


@dataclass(frozen=True)
class InForce:
    """A routing and what it needs, ready.

    Attributes:
        routing: the routing.
        student: its student, loaded (None in teacher mode).
        agreement: the bar's metric as ``(student answer, teacher answer) -> score``;
            None when it cannot be made (then nothing is compared).
        problem: why ``agreement`` is None, for ``/healthz``.
    """

    routing: Routing
    student: Student | None = None
    agreement: quality.Scorer | None = None
    problem: str | None = None


@dataclass(frozen=True)
class LoadFailure:
    """A student that could not be loaded, for the routing that named it."""

    routing: Routing
    message: str
    at: float


def read_routing(uri: str) -> Routing | None:
    """The routing at ``uri``; :data:`NO_ROUTING` when there is no file; None while it
    is half-written or unreadable (the routing in force stays). Blocking."""
    routing = read_model(uri, Routing)
    if routing is not None:
        return routing
    fs, path = fsspec.core.url_to_fs(uri)
    return None if fs.exists(path) else NO_ROUTING


def agreement_of(routing: Routing) -> tuple[quality.Scorer | None, str | None]:
    """The routing's agreement metric, or why there is none."""
    try:
        return quality.scorer(metric=routing.metric, function=routing.metric_function), None
    except quality.MetricError as error:
        return None, f"metric {routing.metric}: {first_line(error)}; nothing is compared"


class LiveRouting:
    """Polls ``routing.json`` and keeps the routing in force.

    Args:
        uri: the project's routing file.
        metrics: where the revision in force is shown.
        load: loads a student's generator from a ``Routing.student`` URI (blocking).
        poll_seconds: how often the file is read.
        retry_seconds: how long a student that failed to load is not tried again (for
            the same routing).
        max_batch: most student requests in one generate call.
        window_seconds: how long a student request waits for others to batch with.
    """

    def __init__(
        self,
        *,
        uri: str,
        metrics: RouterMetrics,
        load: LoadStudent,
        poll_seconds: float,
        retry_seconds: float,
        max_batch: int,
        window_seconds: float,
    ) -> None:
        self.uri = uri
        self.in_force = InForce(routing=NO_ROUTING)
        self.latest: Routing | None = None  # the last routing read
        self.loading: str | None = None
        self.failure: LoadFailure | None = None
        self._metrics = metrics
        self._load = load
        self._poll, self._retry = poll_seconds, retry_seconds
        self._max_batch, self._window = max_batch, window_seconds
        self._spare: Student | None = None  # the student before, kept for a rollback
        self._closing: set[asyncio.Task[None]] = set()
        metrics.in_force(NO_ROUTING.revision)

    @contextlib.contextmanager
    def hold(self) -> Iterator[InForce]:
        """The routing in force, its student held until the request is answered."""
        in_force = self.in_force
        if in_force.student is None:
            yield in_force
            return
        with in_force.student.held():
            yield in_force

    async def run(self) -> None:
        """Poll until cancelled; a poll that fails is logged and the next one tried."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a store hiccup or a bug must not stop the serving
                log.exception("reading the routing %s failed", self.uri)
            await asyncio.sleep(self._poll)

    async def refresh(self) -> None:
        """Read the routing once and put it in force (loading its student if needed)."""
        routing = await asyncio.to_thread(read_routing, self.uri)
        if routing is None:
            return
        self.latest = routing
        if routing != self.in_force.routing:
            await self.apply(routing)

    async def apply(self, routing: Routing) -> None:
        """Put ``routing`` in force once its student is loaded."""
        wanted = routing.student if routing.mode != RoutingMode.TEACHER else None
        loaded = [s for s in (self.in_force.student, self._spare) if s is not None]
        if wanted is None:
            self._switch(routing, None)
            return
        ready = next((s for s in loaded if s.uri == wanted), None)
        if ready is not None:
            self._switch(routing, ready)
            return
        student = await self._load_student(routing, wanted)
        if student is not None:
            self._switch(routing, student)

    async def _load_student(self, routing: Routing, uri: str) -> Student | None:
        loop = asyncio.get_running_loop()
        failed = self.failure
        if failed and failed.routing == routing and loop.time() < failed.at + self._retry:
            return None
        self.loading = uri
        log.info("revision %d: loading the student %s", routing.revision, uri)
        try:
            generator = await asyncio.to_thread(self._load, uri)
        except Exception as error:  # any reason a student cannot serve: the teacher does
            message = f"routing revision {routing.revision}: the student {uri} cannot be loaded: "
            message += first_line(error)
            log.warning("%s; revision %d stays in force", message, self.in_force.routing.revision)
            self.failure = LoadFailure(routing=routing, message=message, at=loop.time())
            return None
        finally:
            self.loading = None
        model = LocalModel(
            generator=generator,
            name=student_name(uri=uri, name=routing.student_name),
            max_batch=self._max_batch,
            window_seconds=self._window,
        )
        return Student(uri=uri, model=model)

    def _switch(self, routing: Routing, student: Student | None) -> None:
        before, spare = self.in_force.student, self._spare
        agreement, problem = agreement_of(routing)
        self.in_force = InForce(
            routing=routing, student=student, agreement=agreement, problem=problem
        )
        self.failure = None
        self._metrics.in_force(routing.revision)
        # The student before stays loaded as the spare (a rollback goes back to it at
        # once); with none before, the spare stays. Any other student is closed.
        keep = before if before is not None and before is not student else spare
        keep = keep if keep is not student else None
        for unused in (before, spare):
            if unused is not None and unused is not student and unused is not keep:
                self._close_later(unused)
        self._spare = keep
        log.info(
            "revision %d in force: %s%s",
            routing.revision,
            routing.mode.value,
            f", student {student.name}" if student else "",
        )

    def _close_later(self, student: Student) -> None:
        task = asyncio.create_task(student.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows of the routing."""
        in_force = self.in_force
        problems = [p for p in (self.failure and self.failure.message, in_force.problem) if p]
        student = in_force.student
        return {
            "revision": in_force.routing.revision,
            "mode": in_force.routing.mode.value,
            "percent": in_force.routing.percent,
            "student": {"name": student.name, "uri": student.uri} if student else None,
            "latestRevision": self.latest.revision if self.latest else None,
            "loading": self.loading,
            "problems": problems,
        }

    async def close(self) -> None:
        """Close every loaded student (after its last request)."""
        for student in (self.in_force.student, self._spare):
            if student is not None:
                self._close_later(student)
        await asyncio.gather(*self._closing, return_exceptions=True)
