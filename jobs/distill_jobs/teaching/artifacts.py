"""Teach's artifacts: the training set (chat JSONL and Parquet), drops, the review
queue (JSONL and CSV) and the per-slice report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from distill_jobs.filters import Dropped, FilterOutcome
from distill_jobs.records import PromptRecord, TeacherRecord
from distill_jobs.store import write_json, write_jsonl

Row = dict[str, Any]


def write_artifacts(
    outcome: FilterOutcome,
    *,
    prompts: Mapping[str, PromptRecord],
    copies: Mapping[str, int],
    files: Mapping[str, str],
) -> int:
    """Write the training set, drops, review queue and report; return the train rows."""
    rows = list(train_rows(outcome.kept, copies=copies))
    write_jsonl(files["train"], rows)
    write_parquet(files["train_parquet"], rows)
    write_jsonl(files["dropped"], (dropped_row(item) for item in outcome.dropped))
    review = [review_row(record, prompt=prompts[record.id]) for record in outcome.review]
    write_jsonl(files["review"], review)
    write_review_csv(files["review_csv"], review)
    write_json(files["report"], report(outcome, train_rows=len(rows)))
    return len(rows)


def train_rows(kept: Sequence[TeacherRecord], *, copies: Mapping[str, int]) -> Iterable[Row]:
    """Chat rows; a prompt Source gave n rows keeps n rows (its answers, cycled)."""
    by_id: dict[str, list[TeacherRecord]] = {}
    for record in kept:
        by_id.setdefault(record.id, []).append(record)
    for prompt_id, answers in by_id.items():
        for copy in range(max(copies.get(prompt_id, 1), len(answers))):
            yield chat_row(answers[copy % len(answers)], copy=copy)


def chat_row(record: TeacherRecord, *, copy: int) -> Row:
    """The prompt's messages with the teacher's answer appended, soft labels alongside."""
    answer: Row = {"role": "assistant", "content": record.output}
    if record.reasoning is not None:
        answer["reasoning"] = record.reasoning
    if record.tool_calls:
        answer["tool_calls"] = record.tool_calls
    row: Row = {
        "id": record.id,
        "slice": record.slice,
        "copy": copy,
        "messages": [*record.messages, answer],
        # Ground truth travels with the row: Iterate scores candidates against it.
        "reference": record.reference,
        "teacher": record.teacher,
        "tokenizer": record.tokenizer,
    }
    if record.output_token_ids is not None:
        row["output_token_ids"] = record.output_token_ids
    if record.top_logprobs is not None:
        row["top_logprobs"] = [
            [candidate.model_dump() for candidate in position] for position in record.top_logprobs
        ]
    return row


def dropped_row(item: Dropped) -> Row:
    row: Row = {"id": item.id, "slice": item.slice, "reason": item.reason.value}
    if item.error:
        row["error"] = item.error
    return row


def review_row(record: TeacherRecord, *, prompt: PromptRecord) -> Row:
    return {
        "id": record.id,
        "slice": record.slice,
        "prompt": prompt.prompt_text,
        "output": record.output,
        "reasoning": record.reasoning,
        "teacher": record.teacher,
    }


_MESSAGE_TYPE = pa.struct(
    [(name, pa.string()) for name in ("role", "content", "reasoning", "tool_calls", "name")]
    + [("tool_call_id", pa.string())]
)
_CANDIDATE_TYPE = pa.struct(
    [("token", pa.string()), ("token_id", pa.int64()), ("logprob", pa.float64())]
)
TRAIN_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("slice", pa.string()),
        ("copy", pa.int32()),
        ("messages", pa.list_(_MESSAGE_TYPE)),
        ("reference", pa.string()),
        ("teacher", pa.string()),
        ("tokenizer", pa.string()),
        ("top_logprobs", pa.list_(pa.list_(_CANDIDATE_TYPE))),
        ("output_token_ids", pa.list_(pa.int64())),
    ]
)


def parquet_message(message: Mapping[str, Any]) -> Row:
    """A chat message in the Parquet schema: anything not a string is JSON text."""
    return {
        name: value if value is None or isinstance(value, str) else json.dumps(value)
        for name in _MESSAGE_TYPE.names
        for value in [message.get(name)]
    }


def write_parquet(uri: str, rows: Sequence[Row]) -> None:
    """The training rows as Parquet, with a fixed schema (tool calls as JSON text)."""
    columns = [
        {**row, "messages": [parquet_message(message) for message in row["messages"]]}
        for row in rows
    ]
    table = pa.Table.from_pylist(columns, schema=TRAIN_SCHEMA)
    with fsspec.open(uri, "wb", auto_mkdir=True) as handle:
        pq.write_table(table, handle)


def write_review_csv(uri: str, rows: Sequence[Row]) -> None:
    """The review queue for a spreadsheet: empty verdict and note columns to fill in."""
    buffer = io.StringIO()
    fields = ["id", "slice", "prompt", "output", "verdict", "note"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, "verdict": "", "note": ""} for row in rows)
    with fsspec.open(uri, "w", auto_mkdir=True, newline="") as handle:
        handle.write(buffer.getvalue())


def report(outcome: FilterOutcome, *, train_rows: int) -> Row:
    """The full tables: per slice collected, kept, dropped by reason, review queued."""
    kept = len(outcome.kept)
    return {
        "collected": kept + len(outcome.dropped),
        "kept": kept,
        "train_rows": train_rows,
        "dropped_by_reason": dict(sorted(outcome.dropped_by_reason().items())),
        "review_queued": len(outcome.review),
        "verifier_errors": dict(outcome.verifier_errors),
        "slices": {name: counts.as_dict() for name, counts in sorted(outcome.slices.items())},
    }


# --- the result ---------------------------------------------------------------------------
