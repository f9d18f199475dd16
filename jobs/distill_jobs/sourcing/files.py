"""Traffic URIs to the files Ray Data reads: globs and folders expanded, each file probed.

A file that cannot be opened (or a Parquet file whose footer cannot be read) is skipped
and reported here, on the driver, because one unreadable file inside a Ray read fails
the whole read. Probing is I/O-bound, so it runs on a few threads.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import fsspec
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem

PROBE_THREADS = 8  # probing waits on storage, not on the CPU
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
_GLOB_CHARACTERS = frozenset("*?[")


class Format(StrEnum):
    JSON = "json"  # JSON Lines, or one JSON array per file
    PARQUET = "parquet"


class SkipKind(StrEnum):
    """Why a matched file is not read; only ``unreadable`` and ``unsupported`` are faults."""

    EMPTY = "empty"
    HIDDEN = "hidden"
    UNSUPPORTED = "unsupported"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class TrafficFile:
    """One file of traffic to read.

    Attributes:
        uri: the file's full URI, for messages and the report.
        path: the path inside ``fs``.
        fs: the fsspec filesystem that holds it.
        format: how to read it.
        columns: for Parquet, the columns the workload reads (those of the spec's fields
            the file has); files with the same columns and types are read together.
        column_types: for Parquet, the Arrow types of ``columns``.
    """

    uri: str
    path: str
    fs: AbstractFileSystem
    format: Format
    columns: tuple[str, ...] = ()
    column_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    uri: str
    kind: SkipKind
    detail: str


@dataclass(frozen=True)
class TrafficListing:
    """What ``spec.source.traffic`` matched.

    Attributes:
        files: readable files, in spec order (and path order inside a glob or folder).
        skipped: matched files that are not read, with why.
        unmatched: traffic URIs that matched no file.
        unlistable: traffic URIs that could not be listed, with the error.
    """

    files: tuple[TrafficFile, ...]
    skipped: tuple[Skipped, ...]
    unmatched: tuple[str, ...] = ()
    unlistable: tuple[tuple[str, str], ...] = ()


def file_format(path: str) -> Format | None:
    """The format a file name says it has, or None for an unsupported one."""
    lowered = path.lower()
    if lowered.endswith(JSON_SUFFIXES):
        return Format.JSON
    if lowered.endswith(PARQUET_SUFFIXES):
        return Format.PARQUET
    return None


def _matches(fs: AbstractFileSystem, path: str) -> dict[str, dict[str, Any]]:
    if _GLOB_CHARACTERS & set(path):
        found: dict[str, dict[str, Any]] = fs.glob(path, detail=True)
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        found = {}
    return {name: info for name, info in found.items() if info.get("type") == "file"}


def _classify(fs: AbstractFileSystem, path: str, info: dict[str, Any]) -> TrafficFile | Skipped:
    uri = fs.unstrip_protocol(path)
    name = posixpath.basename(path)
    fmt = file_format(name)
    if name.startswith((".", "_")):
        return Skipped(uri, SkipKind.HIDDEN, "hidden file (name starts with . or _)")
    if fmt is None:
        expected = ", ".join(JSON_SUFFIXES + PARQUET_SUFFIXES)
        return Skipped(uri, SkipKind.UNSUPPORTED, f"unsupported extension (expected {expected})")
    if info.get("size") == 0:
        return Skipped(uri, SkipKind.EMPTY, "empty file")
    return TrafficFile(uri=uri, path=path, fs=fs, format=fmt)


def list_traffic(uris: Sequence[str]) -> TrafficListing:
    """Expand each traffic URI (a file, a glob or a folder) into files, in spec order.

    A file matched by two URIs is read once, where it is first matched.

    Args:
        uris: ``spec.source.traffic``.
    """
    files: list[TrafficFile] = []
    skipped: list[Skipped] = []
    unmatched: list[str] = []
    unlistable: list[tuple[str, str]] = []
    seen: set[str] = set()
    for uri in uris:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            found = _matches(fs, path)
        except (ImportError, ValueError, OSError) as error:
            unlistable.append((uri, f"{type(error).__name__}: {error}"))
            continue
        if not found:
            unmatched.append(uri)
        for name in sorted(found):
            outcome = _classify(fs, name, found[name])
            if outcome.uri in seen:
                continue
            seen.add(outcome.uri)
            if isinstance(outcome, TrafficFile):
                files.append(outcome)
            else:
                skipped.append(outcome)
    return TrafficListing(
        files=tuple(files),
        skipped=tuple(skipped),
        unmatched=tuple(unmatched),
        unlistable=tuple(unlistable),
    )


def _probe(traffic_file: TrafficFile, wanted: Sequence[str]) -> TrafficFile | Skipped:
    """The file with its Parquet columns filled in, or why it cannot be read."""
    try:
        with traffic_file.fs.open(traffic_file.path, "rb") as handle:
            if traffic_file.format is Format.JSON:
                handle.read(1)
                return traffic_file
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            rows = parquet.metadata.num_rows
    except Exception as error:  # any failure to open or parse means: not readable
        return Skipped(traffic_file.uri, SkipKind.UNREADABLE, f"{type(error).__name__}: {error}")
    if rows == 0:
        return Skipped(traffic_file.uri, SkipKind.EMPTY, "Parquet file with no rows")
    # Without any column the workload reads, read the first one: every row is then
    # counted as a row without a prompt, which is what it is.
    columns = tuple(name for name in wanted if name in schema.names) or (schema.names[0],)
    types = tuple(str(schema.field(name).type) for name in columns)
    return replace(traffic_file, columns=columns, column_types=types)


def probe_traffic(listing: TrafficListing, *, wanted_columns: Sequence[str]) -> TrafficListing:
    """Open every file once: unreadable ones move to ``skipped``.

    Args:
        listing: what :func:`list_traffic` found.
        wanted_columns: the record fields the workload reads, for Parquet projection.
    """
    wanted = list(dict.fromkeys(wanted_columns))
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        outcomes = list(pool.map(lambda item: _probe(item, wanted), listing.files))
    return TrafficListing(
        files=tuple(item for item in outcomes if isinstance(item, TrafficFile)),
        skipped=listing.skipped + tuple(item for item in outcomes if isinstance(item, Skipped)),
        unmatched=listing.unmatched,
        unlistable=listing.unlistable,
    )
