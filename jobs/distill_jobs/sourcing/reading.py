"""Traffic files to one materialised Ray dataset of parsed rows, and the two scans of it.

JSON files are read with ``ray.data.read_binary_files`` and split into lines by
:func:`~distill_jobs.sourcing.prompts.json_records`, not with ``read_json`` or
``read_text``: Arrow's JSON reader fails a whole block on one malformed line and infers
one schema for every record (chat messages carry optional keys), and ``read_text``
fails a whole file on one byte that is not UTF-8 and splits lines on U+2028. Parquet
files are read with ``ray.data.read_parquet``, projected to the columns the spec names.
Both go through the traffic's own fsspec filesystem, so any store fsspec reaches works
and the reads spread over the cluster's nodes.

A JSON file is parsed whole by one task, so traffic is best sharded into files of up to
a few hundred megabytes (as log exporters write it).

Every row, good or bad, becomes one row of :data:`ROW_SCHEMA`; the dataset is read with
Ray Data's ``preserve_order`` so that iterating it twice yields the same rows in the
same order (the driver's decisions from the first scan are applied by position in the
second).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
from pyarrow.fs import FSSpecHandler, PyFileSystem
from ray.data import DataContext, Dataset

from distill_jobs.records import prompt_hash
from distill_jobs.sourcing.files import Format, TrafficFile
from distill_jobs.sourcing.prompts import (
    Drop,
    FieldNames,
    Signer,
    extract_prompt,
    field_slice,
    json_records,
    near_group,
    tag_slice,
)
from distill_jobs.sourcing.settings import CompiledRule
from distill_jobs.sourcing.tally import ScannedRow

ROW_SCHEMA = pa.schema(
    [
        ("file_index", pa.int32()),
        ("location", pa.string()),  # only for dropped rows: where to look
        ("drop", pa.string()),  # a Drop value, or "" for a prompt
        ("slice_field_seen", pa.bool_()),
        ("id", pa.string()),
        ("prompt_text", pa.string()),
        ("messages", pa.string()),  # JSON
        ("slice", pa.string()),
        ("tagged_by", pa.string()),  # field | rule | none
        ("reference", pa.string()),
        ("group", pa.string()),
        ("signature", pa.binary()),
    ]
)
SCAN_COLUMNS = (
    "file_index",
    "location",
    "drop",
    "slice_field_seen",
    "id",
    "slice",
    "tagged_by",
    "reference",
    "group",
    "signature",
)
PROMPT_COLUMNS = ("id", "messages", "prompt_text", "slice", "reference")
PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class ParseContext:
    """What a parsing task needs (pickled into each Ray task).

    Attributes:
        fields: record fields named in the spec.
        rules: compiled slice rules, first match wins.
        signatures: whether to compute near-duplicate signatures (threshold below 1).
        file_index: each file's path (as :func:`path_key` spells it) to its position in
            the traffic listing.
        uris: each file's URI, by position.
    """

    fields: FieldNames
    rules: tuple[CompiledRule, ...]
    signatures: bool
    file_index: Mapping[str, int]
    uris: tuple[str, ...]

    @classmethod
    def for_files(
        cls,
        files: Sequence[TrafficFile],
        *,
        fields: FieldNames,
        rules: tuple[CompiledRule, ...],
        signatures: bool,
    ) -> ParseContext:
        """The context for reading ``files`` (in listing order)."""
        return cls(
            fields=fields,
            rules=rules,
            signatures=signatures,
            file_index={path_key(item.path): index for index, item in enumerate(files)},
            uris=tuple(item.uri for item in files),
        )

    def index_of(self, path: str) -> int:
        """The listing position of the file a reader names ``path``."""
        return self.file_index[path_key(path)]


def path_key(path: str) -> str:
    """A file's path without protocol or leading slash: readers may spell it either way."""
    return path.split("://", 1)[-1].lstrip("/")


def _dropped(reason: Drop, *, file_index: int, location: str, seen: bool) -> dict[str, Any]:
    return {
        "file_index": file_index,
        "location": location,
        "drop": reason.value,
        "slice_field_seen": seen,
    }


def parse_record(
    record: Mapping[str, Any] | Drop,
    *,
    file_index: int,
    location: str,
    context: ParseContext,
    signer: Signer | None,
) -> dict[str, Any]:
    """One row of :data:`ROW_SCHEMA` for one record (or the reason it is not a record)."""
    if isinstance(record, Drop):
        return _dropped(record, file_index=file_index, location=location, seen=False)
    prompt = extract_prompt(record, fields=context.fields)
    if isinstance(prompt, Drop):
        seen = field_slice(record, context.fields.slice) is not None
        return _dropped(prompt, file_index=file_index, location=location, seen=seen)
    slice_name, tagged_by = tag_slice(
        record, prompt.prompt_text, slice_field=context.fields.slice, rules=context.rules
    )
    return {
        "file_index": file_index,
        "drop": "",
        "slice_field_seen": tagged_by == "field",
        "id": prompt_hash(prompt.prompt_text),
        "prompt_text": prompt.prompt_text,
        "messages": json.dumps(prompt.messages, ensure_ascii=False),
        "slice": slice_name,
        "tagged_by": tagged_by,
        "reference": prompt.reference,
        "group": near_group(prompt.system_text),
        "signature": signer.sign(prompt.user_text) if signer else None,
    }


def parse_json_batch(batch: pa.Table, *, context: ParseContext) -> pa.Table:
    """Rows of ``read_binary_files`` (whole files) to parsed rows, one per line."""
    rows = []
    signer = Signer() if context.signatures else None
    for data, path in zip(batch["bytes"].to_pylist(), batch["path"].to_pylist(), strict=True):
        index = context.index_of(path)
        for number, record in json_records(data, path=path):
            location = f"{context.uris[index]}:{number}"
            rows.append(
                parse_record(
                    record, file_index=index, location=location, context=context, signer=signer
                )
            )
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def parse_parquet_batch(batch: pa.Table, *, context: ParseContext) -> pa.Table:
    """Rows of ``read_parquet`` (with their ``path``) to parsed rows."""
    rows = []
    signer = Signer() if context.signatures else None
    for record in batch.to_pylist():
        index = context.index_of(record.pop("path"))
        location = context.uris[index]
        rows.append(
            parse_record(
                record, file_index=index, location=location, context=context, signer=signer
            )
        )
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _by_filesystem(files: Sequence[TrafficFile]) -> dict[Any, list[TrafficFile]]:
    """Files grouped by what one Ray read can take: the filesystem, the format and, for
    Parquet, the columns and their types."""
    groups: dict[Any, list[TrafficFile]] = {}
    for traffic_file in files:
        key = (
            traffic_file.fs,
            traffic_file.format,
            traffic_file.columns,
            traffic_file.column_types,
        )
        groups.setdefault(key, []).append(traffic_file)
    return groups


def _read_group(group: list[TrafficFile], *, context: ParseContext) -> Dataset:
    first = group[0]
    filesystem = PyFileSystem(FSSpecHandler(first.fs))
    paths = [traffic_file.path for traffic_file in group]
    if first.format is Format.JSON:
        files = ray.data.read_binary_files(paths, filesystem=filesystem, include_paths=True)
        # One file per batch: a file is parsed in one piece, so bound what a task holds.
        return files.map_batches(
            parse_json_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"context": context}
        )
    records = ray.data.read_parquet(
        paths, filesystem=filesystem, include_paths=True, file_extensions=None
    ).select_columns([*first.columns, "path"])  # pushed down into the read
    return records.map_batches(
        parse_parquet_batch,
        batch_size=PARQUET_BATCH_ROWS,
        batch_format="pyarrow",
        fn_kwargs={"context": context},
    )


@contextlib.contextmanager
def ordered_reads() -> Iterator[None]:
    """Ray Data settings for the block, restored afterwards.

    ``preserve_order``: the same rows, in the same order, every time a dataset is
    iterated. ``use_datasource_v2`` off: Ray 2.60's V2 Parquet reader starts a pool of
    footer-reading actors for every read (10-20 s on a small cluster, seen here), where
    the V1 reader samples a few footers with plain tasks.
    """
    context = DataContext.get_current()
    before = (context.execution_options.preserve_order, context.use_datasource_v2)
    context.execution_options.preserve_order = True
    context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.use_datasource_v2 = before


def read_traffic(files: Sequence[TrafficFile], *, context: ParseContext) -> Dataset:
    """Read and parse every file into one materialised dataset of :data:`ROW_SCHEMA`.

    Call it inside :func:`ordered_reads`.
    """
    datasets = [_read_group(group, context=context) for group in _by_filesystem(files).values()]
    combined = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
    return combined.materialize()


def scan_rows(parsed: Dataset) -> Iterator[ScannedRow]:
    """The light columns of every parsed row, in dataset order."""
    for batch in parsed.select_columns(list(SCAN_COLUMNS)).iter_batches(batch_format="pyarrow"):
        columns = [batch[name].to_pylist() for name in SCAN_COLUMNS]
        for values in zip(*columns, strict=True):
            yield ScannedRow(*values)


def prompt_rows(parsed: Dataset) -> Iterator[dict[str, Any]]:
    """The prompt columns of every parsed row, in dataset order (the same as scan_rows)."""
    for batch in parsed.select_columns(list(PROMPT_COLUMNS)).iter_batches(batch_format="pyarrow"):
        yield from batch.to_pylist()
