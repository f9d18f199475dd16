"""One request, from the routing decision to its answer, counted.

- teacher: the teacher answers.
- shadow: the teacher and the student are asked together; the teacher answers; the
  student's answer is compared with the teacher's, and counted as a fallback when the
  student was not confident.
- student (canary share, full): the student answers when it is confident; otherwise
  (or when it cannot answer at all) the teacher answers and it is a fallback. A
  ``sample_rate`` share of the student's answers is also asked of the teacher after the
  response has gone, and compared.

Every count carries the revision of the routing the request started under.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from distill_jobs.metrics import MetricError
from distill_jobs.serving.chat import Answer, ChatRequest
from distill_jobs.serving.confidence import confidence, is_confident
from distill_jobs.serving.decisions import Route, route, sampled
from distill_jobs.serving.live import InForce
from distill_jobs.serving.local import PromptTooLong
from distill_jobs.serving.metrics import STUDENT, TEACHER, RouterMetrics
from distill_jobs.serving.students import Student
from distill_jobs.serving.teacher import RouterTeacher, TeacherFailure

log = logging.getLogger(__name__)
AGREES_AT = 0.5  # the bar's metric: a student answer scoring this against the teacher's
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class Served:
    """A request's answer and how it came about (the completion's ``distill`` object)."""

    answer: Answer
    served_by: str
    confidence: float | None
    fallback: bool
    revision: int

    def distill_json(self) -> dict[str, Any]:
        return {
            "servedBy": self.served_by,
            "confidence": self.confidence,
            "fallback": self.fallback,
            "revision": self.revision,
        }


@dataclass(frozen=True)
class StudentAttempt:
    """The student's answer (None when it could not answer) and its confidence."""

    answer: Answer | None
    confidence: float | None
    confident: bool


class Dispatcher:
    """Answers requests under the routing they started with.

    Args:
        teacher: the project's teacher.
        metrics: where requests, fallbacks, comparisons and latencies are counted.
        rng: draws canary places (requests without a key) and comparison samples.
    """

    def __init__(
        self, *, teacher: RouterTeacher, metrics: RouterMetrics, rng: random.Random
    ) -> None:
        self._teacher = teacher
        self._metrics = metrics
        self._rng = rng
        self._comparing: set[asyncio.Task[None]] = set()

    async def complete(self, request: ChatRequest, in_force: InForce) -> Served:
        """Answer ``request``.

        Raises:
            TeacherFailure: the teacher was needed and did not answer.
            PromptTooLong: the teacher was needed and the prompt does not fit it.
        """
        student = in_force.student
        revision = in_force.routing.revision
        chosen = route(
            in_force.routing, has_student=student is not None, key=request.key, rng=self._rng
        )
        if chosen is Route.TEACHER or student is None:
            answer = await self._ask_teacher(request)
            return self._served(answer, TEACHER, revision=revision, confidence=None, fallback=False)
        if chosen is Route.SHADOW:
            return await self._shadow(request, in_force, student)
        return await self._student_first(request, in_force, student)

    async def _shadow(self, request: ChatRequest, in_force: InForce, student: Student) -> Served:
        revision = in_force.routing.revision
        answer, attempt = await asyncio.gather(
            self._ask_teacher(request), self._ask_student(request, in_force, student)
        )
        if not attempt.confident:
            self._metrics.fell_back(revision=revision)
        if attempt.answer is not None:
            await self._compare(in_force, student=attempt.answer.text, teacher=answer.text)
        return self._served(
            answer,
            TEACHER,
            revision=revision,
            confidence=attempt.confidence,
            fallback=not attempt.confident,
        )

    async def _student_first(
        self, request: ChatRequest, in_force: InForce, student: Student
    ) -> Served:
        revision = in_force.routing.revision
        attempt = await self._ask_student(request, in_force, student)
        if attempt.confident and attempt.answer is not None:
            if sampled(in_force.routing, rng=self._rng):
                self._compare_later(request, in_force, student_answer=attempt.answer)
            return self._served(
                attempt.answer,
                STUDENT,
                revision=revision,
                confidence=attempt.confidence,
                fallback=False,
            )
        self._metrics.fell_back(revision=revision)
        answer = await self._ask_teacher(request)
        return self._served(
            answer, TEACHER, revision=revision, confidence=attempt.confidence, fallback=True
        )

    def _served(
        self, answer: Answer, by: str, *, revision: int, confidence: float | None, fallback: bool
    ) -> Served:
        self._metrics.served(revision=revision, by=by)
        return Served(
            answer=answer, served_by=by, confidence=confidence, fallback=fallback, revision=revision
        )

    async def _ask_teacher(self, request: ChatRequest) -> Answer:
        return await self._timed(
            TEACHER,
            self._teacher.answer(request.conversation, max_tokens=request.max_tokens),
        )

    async def _ask_student(
        self, request: ChatRequest, in_force: InForce, student: Student
    ) -> StudentAttempt:
        """The student's answer and confidence; one it cannot give is not confident."""
        routing = in_force.routing
        try:
            generation = await self._timed(
                STUDENT, student.generate(request.conversation, max_tokens=request.max_tokens)
            )
        except PromptTooLong as error:
            log.info("the student cannot take the request: %s", error)
            return StudentAttempt(answer=None, confidence=None, confident=False)
        except Exception:  # the student failing must not fail the request: the teacher answers
            log.exception("the student %s failed to answer", student.name)
            return StudentAttempt(answer=None, confidence=None, confident=False)
        value = confidence(generation, rule=routing.confidence_rule)
        confident = is_confident(
            value, rule=routing.confidence_rule, threshold=routing.confidence_threshold
        )
        return StudentAttempt(
            answer=student.model.answer_of(generation), confidence=value, confident=confident
        )

    async def _timed(self, model: str, call: Awaitable[_Result]) -> _Result:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await call
        self._metrics.timed(model=model, seconds=loop.time() - started)
        return result

    async def _compare(self, in_force: InForce, *, student: str, teacher: str) -> None:
        """Count whether the student's answer agrees with the teacher's (the bar's metric,
        the teacher's answer as the reference)."""
        if in_force.agreement is None:
            return  # the metric cannot be made; /healthz says why
        try:
            # A python metric is the user's code: off the event loop.
            score = await asyncio.to_thread(in_force.agreement, student, teacher)
        except MetricError as error:
            log.warning("revision %d: not compared: %s", in_force.routing.revision, error)
            return
        self._metrics.compared(revision=in_force.routing.revision, agree=score >= AGREES_AT)

    def _compare_later(
        self, request: ChatRequest, in_force: InForce, *, student_answer: Answer
    ) -> None:
        task = asyncio.create_task(self._ask_and_compare(request, in_force, student_answer))
        self._comparing.add(task)
        task.add_done_callback(self._comparing.discard)

    async def _ask_and_compare(
        self, request: ChatRequest, in_force: InForce, student_answer: Answer
    ) -> None:
        try:
            answer = await self._ask_teacher(request)
        except (TeacherFailure, PromptTooLong) as error:
            log.warning("revision %d: not compared: %s", in_force.routing.revision, error)
            return
        await self._compare(in_force, student=student_answer.text, teacher=answer.text)

    async def close(self) -> None:
        """Drop the comparisons still waiting for the teacher."""
        for task in self._comparing:
            task.cancel()
        await asyncio.gather(*self._comparing, return_exceptions=True)
