"""The rows that flow between workloads: prompts from Source, teacher outputs from Teach.

Every prompt is identified by the hash of its normalised text, so a held-out prompt can
be recognised anywhere downstream (:func:`assert_no_leak`) and collection can resume by
id after a crash.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UNSLICED = "unsliced"
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: what "the same prompt" means."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def prompt_hash(text: str) -> str:
    """Content hash of a prompt's normalised text (hex, 16 characters)."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


class PromptRecord(BaseModel):
    """One prompt of the training or held-out set (a row of Source's JSONL output)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    id: str = Field(description="prompt_hash of prompt_text.")
    messages: list[dict[str, Any]] = Field(
        description="Chat messages up to (and including) the last user turn."
    )
    prompt_text: str = Field(description="The text the id and de-duplication are based on.")
    slice: str = UNSLICED
    reference: str | None = Field(default=None, description="A known-good answer, if any.")
    # "copy" on the wire; not the attribute name, which would shadow BaseModel.copy.
    copy_index: int = Field(
        default=0, ge=0, alias="copy", description="Oversampling copy number (0: original)."
    )


class TokenLogprob(BaseModel):
    """One candidate token at one output position."""

    model_config = ConfigDict(extra="forbid")

    token: str
    token_id: int | None = None
    logprob: float


class TeacherRecord(BaseModel):
    """A prompt with the teacher's answer (a row of Teach's output)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    messages: list[dict[str, Any]]
    slice: str = UNSLICED
    reference: str | None = None
    output: str = Field(description="The teacher's final answer.")
    reasoning: str | None = Field(default=None, description="Reasoning trace, when given.")
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="Tool calls as structured records (name, arguments)."
    )
    top_logprobs: list[list[TokenLogprob]] | None = Field(
        default=None, description="Per output position, the teacher's top-k tokens."
    )
    output_token_ids: list[int] | None = Field(
        default=None,
        description="The output as the teacher's token ids, when known (local teachers): "
        "soft labels line up with these, not with a re-tokenization of the text.",
    )
    teacher: str = Field(description="backend:model that answered.")
    tokenizer: str | None = Field(
        default=None, description="Identity of the teacher's tokenizer (soft labels need a match)."
    )
    finish_reason: str | None = None
    output_tokens: int | None = None
    input_tokens: int | None = Field(
        default=None, description="The prompt in the teacher's tokens, as it counted them."
    )


class LeakError(ValueError):
    """A held-out example reached a training set."""


def assert_no_leak(ids: Iterable[str], held_out: set[str]) -> None:
    """Refuse a training set that contains a held-out prompt."""
    leaked = sorted(set(ids) & held_out)
    if leaked:
        raise LeakError(
            f"{len(leaked)} held-out example(s) found in training data (e.g. {leaked[0]}): "
            "the held-out set must never reach training"
        )
