"""Look's report: the disagreements kept for inspection and the ConfigMap summary.

The summary is ConfigMap data (a JSON object of strings) the operator publishes as is,
so ``kubectl get configmap <project>-look -o yaml`` shows the slice table. ConfigMaps
hold 1 MiB and the operator refuses more than half of that; the summary is kept under
:data:`MAX_SUMMARY_BYTES` by showing fewer slices (critical ones first) and pointing at
the full table in the artifact store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from distill_jobs.evaluation.slices import SliceRow

MAX_SUMMARY_BYTES = 200 * 1024
EXAMPLES_PER_SLICE = 3
MAX_EXAMPLE_CHARS = 200
MAX_LINE_CHARS = 2000  # the one-line entries (overall, diagnosis)
EXAMPLE_TEXTS = ("prompt", "reference", "student", "teacher")
COLUMNS = (
    ("SLICE", "slice"),
    ("HELD-OUT", "held_out"),
    ("STUDENT", "student_score"),
    ("TEACHER", "teacher_score"),
    ("AGREEMENT", "agreement"),
    ("THRESHOLD", "threshold"),
    ("CRITICAL", "critical"),
    ("PASSES", "passes"),
    ("TRAINING-ROWS", "training_rows"),
    ("DISAGREEMENTS", "disagreements"),
)


def kept_disagreements(
    disagreements: Sequence[Mapping[str, Any]], *, per_slice: int
) -> list[dict[str, Any]]:
    """The first ``per_slice`` disagreements of each slice, in their order."""
    kept: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in disagreements:
        name = str(row["slice"])
        if seen.get(name, 0) < per_slice:
            seen[name] = seen.get(name, 0) + 1
            kept.append(dict(row))
    return kept


def slices_text(rows: Sequence[SliceRow]) -> str:
    """The slice table as aligned text, the way ``kubectl get`` prints a list."""
    table = [[header for header, _ in COLUMNS]]
    for row in rows:
        values = row.as_dict()
        table.append([_cell(values[key]) for _, key in COLUMNS])
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def summary(
    *,
    rows: Sequence[SliceRow],
    disagreements: Sequence[Mapping[str, Any]],
    overall: str,
    diagnosis: str | None,
    table_uri: str,
    limit: int = MAX_SUMMARY_BYTES,
) -> dict[str, str]:
    """The ConfigMap data: ``slices.txt``, ``slices.json``, ``disagreements.json``,
    ``overall``, ``diagnosis`` (when there is one) and, when not every slice fits in
    ``limit`` bytes, ``truncated`` (how many are shown, and where the full table is)."""
    shown = len(rows)
    while True:
        data = _summary(rows[:shown], disagreements, overall=overall, diagnosis=diagnosis)
        if shown < len(rows):
            data["truncated"] = (
                f"{shown} of {len(rows)} slices shown (critical slices first); "
                f"the full table is {table_uri}"
            )
        if size_of(data) <= limit or shown == 0:
            return data
        shown //= 2


def size_of(data: Mapping[str, str]) -> int:
    """Bytes of ConfigMap data, keys included."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in data.items())


def _summary(
    rows: Sequence[SliceRow],
    disagreements: Sequence[Mapping[str, Any]],
    *,
    overall: str,
    diagnosis: str | None,
) -> dict[str, str]:
    examples: dict[str, dict[str, Any]] = {
        row.slice: {"count": row.disagreements, "examples": []} for row in rows
    }
    for disagreement in disagreements:
        shown = examples.get(str(disagreement["slice"]))
        if shown is not None and len(shown["examples"]) < EXAMPLES_PER_SLICE:
            shown["examples"].append(_example(disagreement))
    data = {
        "overall": _line(overall),
        "slices.txt": slices_text(rows),
        "slices.json": json.dumps([row.as_dict() for row in rows], indent=1),
        "disagreements.json": json.dumps(examples, indent=1, ensure_ascii=False),
    }
    if diagnosis is not None:
        data["diagnosis"] = _line(diagnosis)
    return data


def _example(disagreement: Mapping[str, Any]) -> dict[str, Any]:
    example = {key: value for key, value in disagreement.items() if key != "slice"}
    for key in EXAMPLE_TEXTS:
        if isinstance(example.get(key), str):
            example[key] = cut(example[key], MAX_EXAMPLE_CHARS)
    return example


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line(text: str) -> str:
    return cut(" ".join(text.split()), MAX_LINE_CHARS)


def _cell(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
