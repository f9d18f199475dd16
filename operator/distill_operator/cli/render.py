"""Output shared by the commands: a rich console (recorded for ``--svg``), JSON for
scripts, times and durations in words."""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

PIPE_WIDTH = 160
"""Columns when stdout is not a terminal (a pipe, a file, a test): wide enough that job
ids and URLs stay on one line."""

STATE_STYLES = {
    "Succeeded": "green",
    "Running": "yellow",
    "Failed": "bold red",
    "Skipped": "dim",
    "Pending": "dim",
}


def console(*, record: bool = False, quiet: bool = False) -> Console:
    """A console on stdout (or nowhere, with ``quiet``), recording when asked."""
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    file = io.StringIO() if quiet else None
    return Console(width=width, record=record, file=file, highlight=False)


def save_svg(recorded: Console, path: str, *, title: str) -> None:
    """What ``recorded`` printed, as an SVG terminal picture."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recorded.save_svg(str(target), title=title)


def print_json(value: Any) -> None:
    """JSON for scripts: indented, keys in a stable order, non-ASCII kept."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def plain(value: Any) -> Text:
    """A table cell taken literally: text from status or a model is never rich markup."""
    return Text("" if value is None else str(value))


def styled_state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from status, or None when absent or malformed."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def short_time(value: str | None) -> str:
    """``11-23 12:00:03`` (UTC, as status holds it)."""
    moment = parse_time(value)
    return moment.strftime("%m-%d %H:%M:%S") if moment else ""


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h03m``."""
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def number(value: Any) -> str:
    """A score or count as people read it: 3 significant digits, never an exponent."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)
