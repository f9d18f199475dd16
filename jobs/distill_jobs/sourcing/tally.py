"""The first scan of the parsed rows: what was dropped and why, and the prompts in order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from distill_jobs.sourcing.prompts import Drop
from distill_jobs.sourcing.selection import Candidate

EXAMPLES_PER_REASON = 5


class ScannedRow(NamedTuple):
    """The light columns of one parsed row: what the driver decides on."""

    file_index: int
    location: str | None
    drop: str
    slice_field_seen: bool
    id: str | None
    slice: str | None
    tagged_by: str | None
    reference: str | None
    group: str | None
    signature: bytes | None


@dataclass
class Tally:
    """Counts over every row read (built by :func:`tally_rows`, then only read).

    Attributes:
        rows: rows (lines, array items, Parquet rows) read.
        dropped: drop reason to count.
        examples: drop reason to a few locations (``uri:line``) to look at.
        raw_slices: slice to prompts before de-duplication.
        tagged_by: how prompts got their slice (field, rule, none) to count.
        slice_field_seen: records that carry the slice field.
        with_reference: prompts with a reference answer.
    """

    rows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    raw_slices: Counter[str] = field(default_factory=Counter)
    tagged_by: Counter[str] = field(default_factory=Counter)
    slice_field_seen: int = 0
    with_reference: int = 0

    @property
    def malformed(self) -> int:
        return sum(n for reason, n in self.dropped.items() if Drop(reason).malformed)

    @property
    def no_prompt(self) -> int:
        return sum(n for reason, n in self.dropped.items() if Drop(reason).no_prompt)

    @property
    def too_long(self) -> int:
        return self.dropped[Drop.PROMPT_TOO_LONG.value]

    @property
    def raw(self) -> int:
        """Rows that are prompts: the raw traffic the kept set is compared with."""
        return self.rows - sum(self.dropped.values())

    def add(self, row: ScannedRow) -> None:
        self.rows += 1
        self.slice_field_seen += row.slice_field_seen
        if row.drop:
            self.dropped[row.drop] += 1
            examples = self.examples.setdefault(row.drop, [])
            if len(examples) < EXAMPLES_PER_REASON and row.location:
                examples.append(row.location)
            return
        self.raw_slices[row.slice or ""] += 1
        self.tagged_by[row.tagged_by or ""] += 1
        self.with_reference += row.reference is not None


def tally_rows(rows: Iterable[ScannedRow]) -> tuple[Tally, list[Candidate]]:
    """Count every row, and list the prompts in traffic order.

    Traffic order is the order of the files in the listing (``file_index``), then the
    order of rows inside a file; the sort is stable, and the dataset yields a file's
    rows in order.

    Args:
        rows: the scanned rows, in dataset order (their position is their index).
    """
    tally = Tally()
    prompts: list[tuple[int, Candidate]] = []
    for position, row in enumerate(rows):
        tally.add(row)
        if not row.drop:
            candidate = Candidate(
                position=position,
                id=row.id or "",
                slice=row.slice or "",
                group=row.group or "",
                signature=row.signature,
            )
            prompts.append((row.file_index, candidate))
    prompts.sort(key=lambda item: item[0])
    return tally, [candidate for _, candidate in prompts]
