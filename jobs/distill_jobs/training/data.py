"""Teach's training rows → a validation split and tokenized training examples.

A row is a chat (prompt turns + the teacher's answer) with, when the teacher gave them,
the teacher's top-k logprobs per answer token. Tokenizing applies the student's chat
template to the whole chat and to the prompt alone: the difference is what the student
learns to produce (prompt tokens are masked). Soft labels are used only when the row was
made with the student's very tokenizer and its top-k positions line up one to one with
the answer's tokens; otherwise the row trains on hard labels, and the count says so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from distill_jobs.upstream import StageFailure

Row = dict[str, Any]
IGNORE = -100  # label of a position that is not trained on (prompt, padding)
EMPTY_SLOT = -1  # top-k id of a slot the teacher left empty


@dataclass(frozen=True)
class ValidationExample:
    """A prompt held back from training to score candidates; reference as ground truth."""

    id: str
    slice: str
    conversation: list[dict[str, Any]]
    reference: str
    answer_tokens: int | None = None  # the teacher's answer length in its own tokens


@dataclass(frozen=True)
class Example:
    """One tokenized training row.

    Attributes:
        input_ids: prompt and answer tokens.
        labels: ``input_ids`` with prompt positions set to :data:`IGNORE`.
        soft_start: position of the first answer token that has teacher top-k.
        topk_ids: per answer position from ``soft_start``, the teacher's candidate ids
            (padded with :data:`EMPTY_SLOT`); empty when the row trains on hard labels.
        topk_logprobs: the matching teacher logprobs.
    """

    input_ids: list[int]
    labels: list[int]
    soft_start: int = 0
    topk_ids: list[list[int]] = field(default_factory=list)
    topk_logprobs: list[list[float]] = field(default_factory=list)


@dataclass
class Tokenized:
    examples: list[Example]
    counts: Counter[str] = field(default_factory=Counter)
    top_k: int = 0


def read_rows(uri: str) -> list[Row]:
    """Teach's train.jsonl; a line that is not a chat row is a user-visible failure."""
    try:
        with fsspec.open(uri, "r") as handle:
            rows = [
                _chat_row(line, where=f"Teach's train {uri} line {number}")
                for number, line in enumerate(handle, start=1)
                if line.strip()
            ]
    except FileNotFoundError:
        raise StageFailure("TeachArtifactMissing", f"Teach's train {uri} does not exist") from None
    if not rows:
        raise StageFailure("NoTrainingData", f"Teach's train {uri} has no rows")
    return rows


def _chat_row(line: str, *, where: str) -> Row:
    try:
        row = json.loads(line)
    except ValueError as error:
        raise StageFailure("TeachArtifactUnreadable", f"{where}: not JSON ({error})") from None
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or "id" not in row:
        raise StageFailure(
            "TeachArtifactUnreadable", f"{where}: not a chat row (an object with id and messages)"
        )
    return row


def split_validation(
    rows: Sequence[Row], *, fraction: float, seed: int
) -> tuple[list[Row], list[ValidationExample]]:
    """Hold back ``fraction`` of the distinct prompts (at least one), chosen by hash.

    All copies of a held-back prompt leave training, so the validation score is on
    prompts the student never saw. The choice depends only on the ids and ``seed``.
    """
    ids = sorted({str(row["id"]) for row in rows})
    if len(ids) < 2:
        raise StageFailure(
            "NoTrainingData",
            f"Teach kept {len(ids)} distinct prompt(s); Iterate needs at least 2 (one to "
            "train on, one to score candidates with)",
        )
    count = min(max(1, math.ceil(fraction * len(ids))), len(ids) - 1)
    ranked = sorted(ids, key=lambda prompt_id: _rank(prompt_id, seed=seed))
    held_back = set(ranked[:count])
    train = [row for row in rows if row["id"] not in held_back]
    validation: dict[str, ValidationExample] = {}
    for row in rows:
        if row["id"] in held_back and row["id"] not in validation:
            answer = row["messages"][-1].get("content") or ""
            validation[row["id"]] = ValidationExample(
                id=row["id"],
                slice=str(row.get("slice", "unsliced")),
                conversation=list(row["messages"][:-1]),
                reference=row.get("reference") or answer,
                answer_tokens=len(row["output_token_ids"]) if row.get("output_token_ids") else None,
            )
    return train, [validation[prompt_id] for prompt_id in sorted(validation)]


def _rank(prompt_id: str, *, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()


def soft_label_tokenizers(rows: Iterable[Row]) -> set[str]:
    """Tokenizer identities of the rows that carry usable (id-bearing) top-k logprobs."""
    return {
        str(row.get("tokenizer"))
        for row in rows
        if row.get("top_logprobs") and _has_ids(row["top_logprobs"])
    }


def _has_ids(top_logprobs: Sequence[Sequence[Row]]) -> bool:
    return all(c.get("token_id") is not None for position in top_logprobs for c in position)


def tokenize(
    rows: Iterable[Row], *, tokenizer: Any, tokenizer_id: str, max_length: int, soft: bool
) -> Tokenized:
    """Tokenize chat rows for causal-LM training (see the module docstring).

    Args:
        rows: Teach's chat rows.
        tokenizer: the student's tokenizer (with a chat template).
        tokenizer_id: its identity (``tokenizer_identity``), compared with each row's.
        max_length: longest sequence kept; longer answers are cut, rows whose prompt
            alone does not fit are dropped (counted as ``too_long``).
        soft: whether soft labels are wanted at all (alpha < 1).
    """
    result = Tokenized(examples=[])
    for row in rows:
        example, outcome = _tokenize_row(
            row, tokenizer=tokenizer, tokenizer_id=tokenizer_id, max_length=max_length, soft=soft
        )
        result.counts[outcome] += 1
        if example is not None:
            result.examples.append(example)
            result.top_k = max(result.top_k, *(len(ids) for ids in example.topk_ids), 0)
    return result


def _tokenize_row(
    row: Row, *, tokenizer: Any, tokenizer_id: str, max_length: int, soft: bool
) -> tuple[Example | None, str]:
    messages = row["messages"]
    prompt = _ids(tokenizer, messages[:-1], generation_prompt=True)
    full = _ids(tokenizer, messages, generation_prompt=False)
    if full[: len(prompt)] != prompt:
        return None, "template_mismatch"  # the template rewrites earlier turns
    if len(prompt) >= max_length:
        return None, "too_long"
    text_ids = tokenizer(messages[-1].get("content") or "", add_special_tokens=False)["input_ids"]
    answer_end = len(prompt) + len(text_ids)
    teacher_ids = row.get("output_token_ids")
    top = row.get("top_logprobs") or []
    same_tokenizer = row.get("tokenizer") == tokenizer_id
    # The teacher's own tokens replace a re-tokenization of its text (they can differ),
    # provided the template puts the text verbatim between the prompt and its ending.
    if teacher_ids and same_tokenizer and full[len(prompt) : answer_end] == text_ids:
        full = prompt + [int(i) for i in teacher_ids] + full[answer_end:]
        answer = [int(i) for i in teacher_ids]
    else:
        answer = text_ids
    full = full[:max_length]
    labels = [IGNORE] * len(prompt) + full[len(prompt) :]
    if not soft or not top:
        return Example(input_ids=full, labels=labels), "hard"
    aligned = (
        same_tokenizer
        and _has_ids(top)
        and len(answer) == len(top)
        and full[len(prompt) : len(prompt) + len(answer)] == answer[: len(full) - len(prompt)]
    )
    if not aligned:
        return Example(input_ids=full, labels=labels), "soft_misaligned"
    width = max(len(position) for position in top)
    kept = top[: len(full) - len(prompt)]
    return Example(
        input_ids=full,
        labels=labels,
        soft_start=len(prompt),
        topk_ids=[_pad([c["token_id"] for c in p], width, EMPTY_SLOT) for p in kept],
        topk_logprobs=[_pad([c["logprob"] for c in p], width, 0.0) for p in kept],
    ), "soft"


def _ids(tokenizer: Any, messages: list[dict[str, Any]], *, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    return [int(token) for token in ids]


def _pad(values: list[Any], width: int, filler: Any) -> list[Any]:
    return values + [filler] * (width - len(values))


_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("soft_start", pa.int32()),
        ("topk_ids", pa.list_(pa.list_(pa.int32()))),
        ("topk_logprobs", pa.list_(pa.list_(pa.float32()))),
    ]
)


def write_examples(uri: str, examples: Sequence[Example]) -> None:
    """The tokenized set as Parquet in the artifact store, for every worker to read."""
    columns = {name: [getattr(e, name) for e in examples] for name in _SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=_SCHEMA)
    with fsspec.open(uri, "wb", auto_mkdir=True) as handle:
        pq.write_table(table, handle)


def read_examples(uri: str) -> list[Example]:
    with fsspec.open(uri, "rb") as handle:
        table = pq.read_table(handle)
    return [Example(**row) for row in table.to_pylist()]


def collate(examples: Sequence[Example], *, pad_id: int, top_k: int) -> dict[str, Any]:
    """Right-padded tensors; top-k arrays span every position (empty outside answers)."""
    import torch

    length = max(len(e.input_ids) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    attention = torch.zeros((batch, length), dtype=torch.long)
    width = max(top_k, 1)
    topk_ids = torch.full((batch, length, width), EMPTY_SLOT, dtype=torch.long)
    topk_logprobs = torch.zeros((batch, length, width), dtype=torch.float32)
    for index, example in enumerate(examples):
        size = len(example.input_ids)
        input_ids[index, :size] = torch.tensor(example.input_ids)
        labels[index, :size] = torch.tensor(example.labels)
        attention[index, :size] = 1
        if example.topk_ids:
            end = example.soft_start + len(example.topk_ids)
            span = len(example.topk_ids[0])
            topk_ids[index, example.soft_start : end, :span] = torch.tensor(example.topk_ids)
            topk_logprobs[index, example.soft_start : end, :span] = torch.tensor(
                example.topk_logprobs
            )
    batch_tensors = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
    if top_k:
        batch_tensors |= {"topk_ids": topk_ids, "topk_logprobs": topk_logprobs}
    return batch_tensors
