"""The project's teacher, asked one request at a time from the router's event loop.

- ``hf``: the teacher's model loaded the way the ``hf`` backend loads it, answering
  greedily through a :class:`~distill_jobs.serving.local.LocalModel` (concurrent requests
  share one ``generate``, each with its own ``max_tokens``).
- ``openai`` and ``anthropic``: the backends of :func:`distill_jobs.teachers.make_teacher`
  (their retries, backoff and error handling), greedy and without logprobs as Look asks
  a teacher (:func:`distill_jobs.evaluation.answering.open_teacher`). A backend's
  ``answer`` blocks and answers with one output limit, so each call runs on a worker
  thread with an instance made for that request's ``max_tokens``; idle instances are
  kept for reuse, at most ``concurrency`` of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from distill_jobs.apiserver import text_of
from distill_jobs.records import PromptRecord
from distill_jobs.serving.chat import Answer
from distill_jobs.serving.local import LocalModel
from distill_jobs.teachers import (
    ModelNotAvailableError,
    Teacher,
    TeacherBatchError,
    TeacherConfigError,
    TeacherSettings,
    make_teacher,
)
from distill_jobs.teachers.generation import LocalGenerator
from distill_jobs.upstream import StageFailure, first_line, teacher_api_key

# Anthropic's stop reasons in OpenAI's words.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def openai_finish_reason(reason: str | None) -> str:
    """A backend's finish reason as OpenAI says it (``stop`` when it says none)."""
    return FINISH_REASONS.get(reason or "", reason) or "stop"


class TeacherFailure(Exception):
    """The teacher did not answer (after its backend's retries)."""


class RouterTeacher(Protocol):
    """The teacher as the router asks it.

    Attributes:
        name: ``backend:model``, what a completion's ``model`` says answered.
    """

    name: str

    async def answer(self, conversation: list[dict[str, Any]], *, max_tokens: int) -> Answer:
        """The teacher's greedy answer.

        Raises:
            TeacherFailure: it did not answer.
            PromptTooLong: (a local teacher) the prompt does not fit its context.
        """
        ...

    async def close(self) -> None: ...


class LocalTeacher:
    """An ``hf`` teacher: a local model answering greedily, requests batched."""

    def __init__(self, model: LocalModel) -> None:
        self.model = model
        self.name = model.name

    async def answer(self, conversation: list[dict[str, Any]], *, max_tokens: int) -> Answer:
        try:
            generation = await self.model.generate(conversation, max_tokens=max_tokens)
        except (RuntimeError, IndexError) as error:  # what generate raises on a bad batch
            raise TeacherFailure(f"{self.name}: {type(error).__name__}: {error}") from error
        return self.model.answer_of(generation)

    async def close(self) -> None:
        await self.model.close()


class ApiTeacher:
    """An API teacher: each request one ``answer`` call on a worker thread.

    Args:
        make: a backend instance answering up to the given number of tokens.
        name: ``backend:model``.
        concurrency: most requests in flight (and most idle instances kept).
    """

    def __init__(self, *, make: Callable[[int], Teacher], name: str, concurrency: int) -> None:
        self.name = name
        self._make = make
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._idle: dict[int, list[Teacher]] = {}
        # A backend instance drives its own event loop: it must not run on this one.
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher")

    async def answer(self, conversation: list[dict[str, Any]], *, max_tokens: int) -> Answer:
        record = PromptRecord(
            id=uuid.uuid4().hex[:16],
            messages=conversation,
            prompt_text=text_of(conversation[-1].get("content")),
        )
        loop = asyncio.get_running_loop()
        async with self._slots:
            idle = self._idle.get(max_tokens)
            # Made on a worker thread too: the first one imports its SDK.
            teacher = (
                idle.pop()
                if idle
                else await loop.run_in_executor(self._threads, self._make, max_tokens)
            )
            try:
                answered = await loop.run_in_executor(self._threads, teacher.answer, [record])
            except TeacherBatchError as error:
                raise TeacherFailure(f"{self.name}: {first_line(error)}") from None
            finally:
                await self._keep_or_close(max_tokens, teacher)
        output = answered[0]
        return Answer(
            text=output.output,
            finish_reason=openai_finish_reason(output.finish_reason),
            prompt_tokens=output.input_tokens or 0,
            output_tokens=output.output_tokens or 0,
            model=self.name,
        )

    async def _keep_or_close(self, max_tokens: int, teacher: Teacher) -> None:
        if sum(len(kept) for kept in self._idle.values()) < self._concurrency:
            self._idle.setdefault(max_tokens, []).append(teacher)
            return
        await asyncio.get_running_loop().run_in_executor(self._threads, teacher.close)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for kept in self._idle.values():
            for teacher in kept:
                await loop.run_in_executor(self._threads, teacher.close)
        self._idle.clear()
        self._threads.shutdown(wait=True)


def open_router_teacher(
    teacher: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    device: str | None = None,
    max_batch: int = 16,
    window_seconds: float = 0.005,
    concurrency: int = 8,
) -> RouterTeacher:
    """The teacher of ``spec.teacher`` (camelCase JSON), ready to answer.

    Blocking (a local teacher is loaded here).

    Raises:
        StageFailure: ``InvalidInput`` (the spec cannot make a teacher), ``ApiKeyMissing``
            or ``TeacherUnavailable`` (its model cannot be loaded).
    """
    try:
        settings = TeacherSettings.from_spec(teacher=teacher, teach={})
    except TeacherConfigError as error:
        raise StageFailure("InvalidInput", str(error)) from None
    api_key = teacher_api_key(teacher, environ=environ)
    if settings.backend == "hf":
        try:
            generator = LocalGenerator.load(model=settings.model, device=device)
        except ModelNotAvailableError as error:
            raise StageFailure(
                "TeacherUnavailable",
                f"spec.teacher.model: {first_line(error)}; the router answers with the "
                "teacher, so it cannot start without it",
            ) from None
        model = LocalModel(
            generator=generator,
            name=settings.name,
            max_batch=max_batch,
            window_seconds=window_seconds,
        )
        return LocalTeacher(model)
    # Greedy and without logprobs, as Look asks a teacher; one request per call.
    greedy = {**teacher, "topLogprobs": 0}

    def make(max_tokens: int) -> Teacher:
        teach = {"temperature": 0.0, "maxOutputTokens": max_tokens, "concurrency": 1}
        return make_teacher(teacher=greedy, teach=teach, api_key=api_key)

    return ApiTeacher(make=make, name=settings.name, concurrency=concurrency)
