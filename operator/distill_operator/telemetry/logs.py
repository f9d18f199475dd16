"""Log lines: JSON (one object per line) for log pipelines, or text for a terminal.

Every line about a project carries ``project`` (``namespace/name``) and ``stage`` (its
stage when last seen): kopf's own per-object lines through the ``k8s_ref`` its object
logger attaches, and any other line logged while a project's loop runs through a
context variable (it follows the loop's task into the threads it starts).
"""

from __future__ import annotations

import contextvars
import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from distill_operator.telemetry.book import ProjectBook

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(where)s%(message)s"
# kopf's extras: the object reference (read into ``project``), its event-posting flag,
# and its settings object (not JSON).
KOPF_EXTRAS = ("k8s_ref", "k8s_skip", "settings")

# Task-local, not shared: each project's loop runs in its own task.
_project: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "distill_project", default=None
)


@contextmanager
def about_project(project: str, *, uid: str) -> Iterator[None]:
    """Lines logged inside (in this task and the threads it starts) are about ``project``
    (``namespace/name``), the one with ``uid``."""
    token = _project.set((project, uid))
    try:
        yield
    finally:
        _project.reset(token)


def _referenced(ref: object) -> tuple[str, str] | None:
    """(``namespace/name``, uid) of a kopf object reference."""
    if not isinstance(ref, Mapping) or not ref.get("name"):
        return None
    namespace, name = ref.get("namespace"), ref["name"]
    return (f"{namespace}/{name}" if namespace else str(name)), str(ref.get("uid") or "")


class ProjectFields(logging.Filter):
    """Sets ``project`` and ``stage`` on each record (None when it is about no project).

    A ``stage`` passed as an extra wins; otherwise the project's stage when last seen.
    """

    def __init__(self, book: ProjectBook) -> None:
        super().__init__()
        self._book = book

    def filter(self, record: logging.LogRecord) -> bool:
        project, uid = _referenced(getattr(record, "k8s_ref", None)) or _project.get() or (None, "")
        record.project = project
        stage = getattr(record, "stage", None)
        record.stage = stage or (self._book.stage_of(uid) if uid else None)
        return True


class JsonLogFormatter(JsonFormatter):
    """``{"time", "level", "logger", "message"}``, with ``project`` and ``stage`` on lines
    about a project, ``exc_info`` with a traceback, and any other extras as given."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, *KOPF_EXTRAS, "project", "stage"],
        )

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        project = getattr(record, "project", None)
        if project:
            log_record["project"] = project
            log_record["stage"] = getattr(record, "stage", None)


class TextLogFormatter(logging.Formatter):
    """``<time> INFO kopf.objects [ns/name Stage] message``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        project, stage = getattr(record, "project", None), getattr(record, "stage", None)
        record = copy.copy(record)  # shallow: other handlers see the record unchanged
        record.where = f"[{project}{f' {stage}' if stage else ''}] " if project else ""
        return super().formatMessage(record)


def configure_logging(
    *, log_format: str, verbose: bool, book: ProjectBook, stream: TextIO | None = None
) -> logging.Handler:
    """One handler on the root logger, writing ``log_format`` lines to ``stream`` (stderr).

    Args:
        log_format: ``json`` or ``text``.
        verbose: Debug lines too.
        book: Where the stage of a project's lines comes from.
        stream: Where lines go; stderr when None.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else TextLogFormatter())
    handler.addFilter(ProjectFields(book))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    return handler
