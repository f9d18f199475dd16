"""A student loaded for serving, and when it may be unloaded.

A request holds the student it started with until it is answered, so a switch to
another student never pulls the model from under a request: the one switched away from
is closed once its last request is done.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distill_jobs.serving.local import LocalModel
from distill_jobs.teachers.generation import Generation, LocalGenerator


def load_generator(*, uri: str, device: str | None) -> LocalGenerator:
    """The student at ``uri`` (a directory, or any fsspec URI: copied here first), loaded.

    Blocking; run it in a thread. Raises whatever loading raises (a missing or
    unreadable directory, a config transformers cannot read).
    """
    from distill_jobs.training.storage import local_copy

    return LocalGenerator.load(model=local_copy(uri), device=device)


def student_name(*, uri: str, name: str | None) -> str:
    """The routing's name for the student, else its directory's name."""
    return name or os.path.basename(uri.rstrip("/")) or uri


class Student:
    """A loaded student (a :class:`LocalModel`) and the requests holding it.

    Attributes:
        uri: where it was loaded from (``Routing.student``).
        model: the model, answering greedily with entropies (for either confidence rule).
    """

    def __init__(self, *, uri: str, model: LocalModel) -> None:
        self.uri = uri
        self.model = model
        self._holders = 0
        self._released = asyncio.Event()
        self._released.set()

    @property
    def name(self) -> str:
        return self.model.name

    @contextmanager
    def held(self) -> Iterator[Student]:
        """Hold the student for one request (synchronous: no switch can come between
        reading the routing in force and holding its student)."""
        self._holders += 1
        self._released.clear()
        try:
            yield self
        finally:
            self._holders -= 1
            if self._holders == 0:
                self._released.set()

    async def generate(self, conversation: list[dict[str, Any]], *, max_tokens: int) -> Generation:
        return await self.model.generate(conversation, max_tokens=max_tokens, entropies=True)

    async def close(self) -> None:
        """Unload once no request holds it."""
        await self._released.wait()
        await self.model.close()
