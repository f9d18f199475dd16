"""A seeded sample of traffic rows, read on the driver without Ray.

For a reader that needs a bounded, representative look at the traffic as it is now (the
drift monitor), not every row. Each file is streamed once and a reservoir keeps ``size``
rows (Algorithm R with a seeded generator), so memory is bounded by the sample, every
row has the same chance whatever file it is in, and the same files and seed give the
same sample. A JSON Lines row is kept as its bytes and decoded only once chosen, so a
huge file costs a read, not a parse; a Parquet file is read in batches of the columns
asked for. Rows are parsed as Source parses them (:mod:`.prompts`).
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]

from distill_jobs.sourcing.files import Format, SkipKind, Skipped, TrafficFile
from distill_jobs.sourcing.prompts import GZIP_MAGIC, Drop, decode_line, json_records

UTF8_BOM = b"\xef\xbb\xbf"
PARQUET_BATCH_ROWS = 4096


@dataclass(frozen=True)
class SampledRow:
    """One chosen row.

    Attributes:
        position: its place among every row read, in traffic order (files in listing
            order, rows in file order).
        location: ``uri:line`` (JSON Lines), ``uri:item`` (a JSON array) or ``uri:row``
            (Parquet), 1-based.
        record: the record, or why the row is not one.
    """

    position: int
    location: str
    record: dict[str, Any] | Drop


@dataclass(frozen=True)
class TrafficSample:
    """What :func:`sample_traffic` read.

    Attributes:
        rows: the chosen rows, in traffic order.
        seen: rows read in all (blank lines are not rows).
        unreadable: files that failed while being read; rows chosen from one before it
            failed stay in the sample.
    """

    rows: tuple[SampledRow, ...]
    seen: int
    unreadable: tuple[Skipped, ...]


class _Reservoir:
    """Algorithm R: after ``seen`` offers, each offered row is kept with chance
    ``size / seen``, whatever its position."""

    def __init__(self, *, size: int, seed: int) -> None:
        self._size = size
        self._random = random.Random(seed)
        self._kept: list[tuple[int, str, bytes | dict[str, Any] | Drop]] = []
        self.seen = 0

    def next_slot(self) -> int | None:
        """Count one more row read: the slot it goes to, or None when it is not kept.
        A reader builds the row only when it is kept (then calls :meth:`put`)."""
        position = self.seen
        self.seen += 1
        if position < self._size:
            return position
        slot = self._random.randrange(self.seen)
        return slot if slot < self._size else None

    def put(self, slot: int, *, location: str, payload: bytes | dict[str, Any] | Drop) -> None:
        """Keep the row just counted in ``slot``."""
        entry = (self.seen - 1, location, payload)
        if slot == len(self._kept):
            self._kept.append(entry)
        else:
            self._kept[slot] = entry

    def offer(self, location: str, payload: bytes | dict[str, Any] | Drop) -> None:
        slot = self.next_slot()
        if slot is not None:
            self.put(slot, location=location, payload=payload)

    def rows(self) -> tuple[SampledRow, ...]:
        return tuple(
            SampledRow(
                position=position,
                location=location,
                record=decode_line(payload) if isinstance(payload, bytes) else payload,
            )
            for position, location, payload in sorted(self._kept, key=lambda entry: entry[0])
        )


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines (split on ``\\n`` only, as :func:`.json_records` splits them),
    gzip decompressed by content, a leading byte-order mark dropped."""
    gzipped = handle.read(2) == GZIP_MAGIC
    handle.seek(0)
    stream: Iterable[bytes] = gzip.GzipFile(fileobj=handle) if gzipped else handle
    for number, line in enumerate(stream, start=1):
        text = line.removeprefix(UTF8_BOM) if number == 1 else line
        text = text.rstrip(b"\n").rstrip(b"\r")
        if text.strip():
            yield number, text


def _offer_json(reservoir: _Reservoir, traffic_file: TrafficFile) -> None:
    with traffic_file.fs.open(traffic_file.path, "rb") as handle:
        if traffic_file.path.lower().removesuffix(".gz").endswith(".json"):
            # A .json file may be one array: it is parsed whole, as Source parses it.
            for number, record in json_records(handle.read(), path=traffic_file.path):
                reservoir.offer(f"{traffic_file.uri}:{number}", record)
            return
        for number, line in _lines(handle):
            reservoir.offer(f"{traffic_file.uri}:{number}", line)


def _offer_parquet(
    reservoir: _Reservoir, traffic_file: TrafficFile, *, columns: Sequence[str]
) -> None:
    with traffic_file.fs.open(traffic_file.path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        present = [name for name in dict.fromkeys(columns) if name in names]
        row = 0
        # Without any column asked for, rows are still counted (as rows without a prompt).
        for batch in parquet.iter_batches(
            batch_size=PARQUET_BATCH_ROWS, columns=present or names[:1]
        ):
            for index in range(batch.num_rows):
                slot = reservoir.next_slot()
                if slot is not None:
                    record = batch.slice(index, 1).to_pylist()[0] if present else {}
                    reservoir.put(
                        slot, location=f"{traffic_file.uri}:{row + index + 1}", payload=record
                    )
            row += batch.num_rows


def sample_traffic(
    files: Sequence[TrafficFile], *, size: int, seed: int, columns: Sequence[str]
) -> TrafficSample:
    """Read every file once and keep a seeded sample of at most ``size`` rows.

    Args:
        files: the files to read, in listing order (:func:`.files.list_traffic`).
        size: the most rows kept.
        seed: the sample's seed.
        columns: the record fields read from Parquet files (those a file lacks are
            left out).
    """
    reservoir = _Reservoir(size=size, seed=seed)
    unreadable = []
    for traffic_file in files:
        try:
            if traffic_file.format is Format.PARQUET:
                _offer_parquet(reservoir, traffic_file, columns=columns)
            else:
                _offer_json(reservoir, traffic_file)
        except Exception as error:  # any failure to open, decompress or parse a file
            detail = f"{type(error).__name__}: {error}"
            unreadable.append(Skipped(traffic_file.uri, SkipKind.UNREADABLE, detail))
    return TrafficSample(rows=reservoir.rows(), seen=reservoir.seen, unreadable=tuple(unreadable))
