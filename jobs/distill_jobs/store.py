"""Writing JSON documents and JSONL rows to the artifact store (any fsspec URI)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import fsspec


def write_json(uri: str, document: Any) -> None:
    """One JSON document, indented, keys in the order given."""
    with fsspec.open(uri, "w", auto_mkdir=True) as handle:
        json.dump(document, handle, indent=2)


def write_jsonl(uri: str, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line."""
    with fsspec.open(uri, "w", auto_mkdir=True) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
