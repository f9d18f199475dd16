"""One raw traffic record to a prompt: its messages, text, id, slice and signature.

Pure functions, run inside Ray Data tasks and in unit tests alike.

Decisions, so that every reader of ``train.jsonl`` can rely on them:

- The prompt is the record's ``messages`` up to and including the last user turn (later
  turns are the production model's answer, not part of the prompt). A record without
  ``messages`` uses its ``promptField`` as a single user turn.
- ``prompt_text`` is the system (or developer) and user contents of the prompt, in order,
  one per line. Its :func:`~distill_jobs.records.prompt_hash` is the prompt's id, so two
  conversations with the same system and user text are the same prompt.
- ``reference`` comes only from ``referenceField``. A trailing assistant message is what
  the production model said, not a known-good answer, so it is never used as one.
- Near-duplicates are judged on word shingles of the *user* text, and only between
  prompts with the same system text: a long shared system prompt would otherwise make
  every prompt look like every other.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from datasketch import MinHash

from distill_jobs.records import UNSLICED, normalise, prompt_hash
from distill_jobs.sourcing.settings import CompiledRule

SHINGLE_WORDS = 3
NUM_PERM = 128
# Fixed, not spec.source.seed: which prompts are near-duplicates must not change with
# the seed of the split.
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"
HASH_DTYPE = np.uint32
SYSTEM_ROLES = frozenset({"system", "developer"})
_WORDS = re.compile(r"\w+")
GZIP_MAGIC = b"\x1f\x8b"
# Longest prompt_text kept, in characters. At about 4 characters a token this is the
# largest training.maxSequenceLength the API accepts (131072 tokens): no student could
# train on a longer prompt, and such a row is almost always a log or a file pasted into
# a chat. Source has no spec field for it (it knows no tokenizer), so it is a constant.
MAX_PROMPT_CHARS = 4 * 131_072
# A ``\uD800``-``\uDFFF`` escape: JSON may spell a lone surrogate, which no UTF-8 file
# (nor Arrow string) can hold, so such a row is dropped rather than failing its file.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class Drop(StrEnum):
    """Why a row did not become a prompt (the report counts each)."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    BAD_MESSAGES = "bad_messages"
    PROMPT_NOT_TEXT = "prompt_not_text"
    NO_PROMPT = "no_prompt"
    NO_USER_TURN = "no_user_turn"
    EMPTY_PROMPT = "empty_prompt"
    BAD_GZIP = "bad_gzip"
    LONE_SURROGATE = "lone_surrogate"
    TOO_DEEP = "too_deep"
    PROMPT_TOO_LONG = "prompt_too_long"

    @property
    def malformed(self) -> bool:
        """True for rows that are broken, False for well-formed rows (with or without a
        prompt)."""
        return not self.no_prompt and self is not Drop.PROMPT_TOO_LONG

    @property
    def no_prompt(self) -> bool:
        """True for well-formed rows without a prompt."""
        return self in {Drop.NO_PROMPT, Drop.NO_USER_TURN, Drop.EMPTY_PROMPT}


DROP_MEANINGS: Mapping[Drop, str] = {
    Drop.NOT_UTF8: "line is not UTF-8",
    Drop.NOT_JSON: "line is not JSON",
    Drop.NOT_OBJECT: "JSON value is not an object",
    Drop.BAD_MESSAGES: "messages is not a list of {role, content} objects",
    Drop.PROMPT_NOT_TEXT: "the prompt field is not a string",
    Drop.NO_PROMPT: "neither messages nor the prompt field",
    Drop.NO_USER_TURN: "messages has no user turn",
    Drop.EMPTY_PROMPT: "the user text is empty",
    Drop.BAD_GZIP: "file starts as gzip but does not decompress",
    Drop.LONE_SURROGATE: "a string escapes half a surrogate pair (\\ud800-\\udfff): not text",
    Drop.TOO_DEEP: "JSON nested too deep to parse",
    Drop.PROMPT_TOO_LONG: f"the prompt is over {MAX_PROMPT_CHARS} characters",
}


@dataclass(frozen=True)
class Prompt:
    """A record's prompt, before slicing and de-duplication."""

    messages: list[dict[str, Any]]
    prompt_text: str
    user_text: str
    system_text: str
    reference: str | None


@dataclass(frozen=True)
class FieldNames:
    """The record fields the user named in ``spec.source``."""

    prompt: str
    reference: str
    slice: str | None


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def _clean_messages(raw: Any) -> list[dict[str, Any]] | None:
    """Messages as plain dicts without null keys (Parquet structs fill absent keys with
    None), or None when ``raw`` is not a list of objects with a string role."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            return None
    if not isinstance(raw, list | tuple) or not raw:
        return None
    messages = []
    for message in raw:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            return None
        messages.append({key: value for key, value in message.items() if value is not None})
    return messages


def _prompt_messages(record: Mapping[str, Any], fields: FieldNames) -> list[dict[str, Any]] | Drop:
    if record.get("messages") is not None:
        messages = _clean_messages(record["messages"])
        if messages is None:
            return Drop.BAD_MESSAGES
        users = [index for index, message in enumerate(messages) if message["role"] == "user"]
        return messages[: users[-1] + 1] if users else Drop.NO_USER_TURN
    prompt = record.get(fields.prompt)
    if prompt is None:
        return Drop.NO_PROMPT
    if not isinstance(prompt, str):
        return Drop.PROMPT_NOT_TEXT
    return [{"role": "user", "content": prompt}]


def _reference(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def extract_prompt(record: Mapping[str, Any], *, fields: FieldNames) -> Prompt | Drop:
    """The prompt of one traffic record, or why it has none.

    Args:
        record: one JSON object or Parquet row.
        fields: the prompt and reference field names from the spec.

    Returns:
        The prompt, or the :class:`Drop` reason the record is not one.
    """
    messages = _prompt_messages(record, fields)
    if isinstance(messages, Drop):
        return messages
    user = [content_text(m.get("content")) for m in messages if m["role"] == "user"]
    system = [content_text(m.get("content")) for m in messages if m["role"] in SYSTEM_ROLES]
    user_text = "\n".join(user)
    if not normalise(user_text):
        return Drop.EMPTY_PROMPT
    texts = [
        content_text(m.get("content"))
        for m in messages
        if m["role"] == "user" or m["role"] in SYSTEM_ROLES
    ]
    prompt_text = "\n".join(texts)
    if len(prompt_text) > MAX_PROMPT_CHARS:
        return Drop.PROMPT_TOO_LONG
    return Prompt(
        messages=messages,
        prompt_text=prompt_text,
        user_text=user_text,
        system_text="\n".join(system),
        reference=_reference(record.get(fields.reference)),
    )


def field_slice(record: Mapping[str, Any], slice_field: str | None) -> str | None:
    """The record's own slice value, or None when the field is absent, null or blank."""
    if slice_field is None:
        return None
    value = record.get(slice_field)
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def rule_slice(prompt_text: str, rules: Sequence[CompiledRule]) -> str | None:
    """The slice of the first rule whose pattern is found in ``prompt_text``."""
    for rule in rules:
        if rule.pattern.search(prompt_text):
            return rule.slice
    return None


def tag_slice(
    record: Mapping[str, Any],
    prompt_text: str,
    *,
    slice_field: str | None,
    rules: Sequence[CompiledRule],
) -> tuple[str, str]:
    """The prompt's slice and what decided it: its ``sliceField`` value (``field``), else
    the first matching rule (``rule``), else :data:`~distill_jobs.records.UNSLICED`
    (``none``)."""
    own = field_slice(record, slice_field)
    if own is not None:
        return own, "field"
    by_rule = rule_slice(prompt_text, rules)
    return (by_rule, "rule") if by_rule is not None else (UNSLICED, "none")


def shingles(text: str, *, width: int = SHINGLE_WORDS) -> set[str]:
    """Word shingles of the normalised text (punctuation ignored); a text shorter than
    ``width`` words is one shingle."""
    words = _WORDS.findall(normalise(text)) or [normalise(text)]
    if len(words) <= width:
        return {" ".join(words)}
    return {" ".join(words[start : start + width]) for start in range(len(words) - width + 1)}


class Signer:
    """MinHash signatures of word shingles, all with the same permutations.

    Making the permutations is most of the cost of a MinHash, so one signer makes them
    once and every signature (and every MinHash rebuilt from one) shares them.
    """

    def __init__(self) -> None:
        template = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, scheme=MINHASH_SCHEME)
        self._permutations = template.permutations

    def minhash(self, values: bytes | None = None) -> MinHash:
        """A MinHash: empty, or rebuilt from a signature's bytes."""
        return MinHash(
            num_perm=NUM_PERM,
            seed=MINHASH_SEED,
            hashvalues=None if values is None else np.frombuffer(values, dtype=HASH_DTYPE),
            permutations=self._permutations,
            scheme=MINHASH_SCHEME,
        )

    def sign(self, text: str) -> bytes:
        """The MinHash of ``text``'s shingles, as bytes (NUM_PERM 32-bit values)."""
        minhash = self.minhash()
        minhash.update_batch([shingle.encode() for shingle in sorted(shingles(text))])
        return np.asarray(minhash.hashvalues, dtype=HASH_DTYPE).tobytes()


def near_group(system_text: str) -> str:
    """The group inside which near-duplicates are looked for: prompts sharing a system text."""
    return prompt_hash(system_text)


def _holds_lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value has a string (or key) that is not valid Unicode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _record(value: Any, *, raw: bytes) -> dict[str, Any] | Drop:
    """A decoded JSON value as a record, or why it is not one."""
    if not isinstance(value, dict):
        return Drop.NOT_OBJECT
    # Re-encoding is the only sure test; the escape is rare, so only those rows pay.
    if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(value):
        return Drop.LONE_SURROGATE
    return value


def decode_line(line: bytes) -> dict[str, Any] | Drop:
    """One line of JSON Lines (without its newline) to a record, or why it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Drop.NOT_UTF8
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return Drop.NOT_JSON
    except RecursionError:  # valid JSON, perhaps, but deeper than Python's parser goes
        return Drop.TOO_DEEP
    return _record(value, raw=line)


def _whole_json(data: bytes) -> list[Any] | None:
    """The records of a ``.json`` file holding one array or one object, else None."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else None


def json_records(data: bytes, *, path: str) -> Iterator[tuple[int, dict[str, Any] | Drop]]:
    """The records of a JSON Lines file (or a ``.json`` array), each with its line number.

    Lines are split on ``\\n`` only (JSON strings may hold U+2028, which ``splitlines``
    would break on); blank lines are skipped; a bad line is reported, not raised.

    Args:
        data: the file's bytes (gzip-compressed or not).
        path: the file's path, which decides its format.

    Yields:
        (1-based line or array position, the record or the reason it is not one).
    """
    # By content, not name: Ray's readers already decompress a ``.gz`` file themselves.
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            yield 0, Drop.BAD_GZIP
            return
    data = data.removeprefix(b"\xef\xbb\xbf")
    if path.lower().removesuffix(".gz").endswith(".json"):
        whole = _whole_json(data)
        if whole is not None:
            for position, value in enumerate(whole, start=1):
                yield position, _record(value, raw=data)
            return
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield number, decode_line(line.rstrip(b"\r"))
