"""Filters for teacher outputs: verifiers, length limits, de-duplication, review sampling.

Everything here is a pure function of its arguments (no I/O, no clock, no global
state), so the Teach workload and the unit tests run the very same code.

Each output gets exactly one ruling, checked in this order:

1. length: ``too_short`` / ``too_long`` (characters of the stripped output);
2. verifiers, in spec order; the first that rejects decides the reason;
3. de-duplication of identical (prompt id, output) pairs among the outputs that passed.

Verifier semantics:

- ``exact_match``: the output equals the prompt's ``reference`` after
  :func:`normalise_answer`; it applies only to prompts that have a reference.
- ``regex``: ``re.fullmatch`` on the stripped output. Full match, not search: the
  pattern says what the whole answer looks like (write ``(?s).*word.*`` to search).
- ``json_schema``: the stripped output must parse as JSON (else ``not_json``, a reason
  of its own; prose, a fenced code block, a torn or too deeply nested document all
  count) and validate against the schema (else ``schema_mismatch``).
- ``python``: ``module:function`` called with ``(prompt_record, output)``; a truthy
  return keeps the output. A function that raises drops that output with
  ``verifier_error`` (its message counted): one bad verifier never stops the stage.

Outputs that passed and that no verifier applied to are open-ended; a deterministic,
seeded sample of them (``reviewSampleRate``) is queued for human review.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import jsonschema

from distill_jobs.records import PromptRecord, TeacherRecord, normalise

VERIFIERS_FIELD = "spec.teach.verifiers"
_MAX_ERROR_CHARS = 200


class DropReason(StrEnum):
    """Why an output was dropped."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    WRONG_ANSWER = "wrong_answer"
    REGEX_MISMATCH = "regex_mismatch"
    NOT_JSON = "not_json"
    SCHEMA_MISMATCH = "schema_mismatch"
    REJECTED = "rejected"
    VERIFIER_ERROR = "verifier_error"
    DUPLICATE = "duplicate"

    @property
    def phrase(self) -> str:
        """The reason in a word or two, for result messages ("61 wrong, 27 too long")."""
        return _PHRASES.get(self.value, self.value.replace("_", " "))


_PHRASES = MappingProxyType(
    {
        "wrong_answer": "wrong",
        "regex_mismatch": "not matching the pattern",
        "not_json": "not JSON",
        "schema_mismatch": "against the schema",
        "rejected": "rejected by a verifier",
        "verifier_error": "verifier errors",
        "duplicate": "duplicates",
    }
)


class VerifierError(ValueError):
    """A verifier in the spec cannot be used; a user error that names the field.

    Attributes:
        reason: CamelCase reason for the stage result.
    """

    reason = "VerifierInvalid"


class VerifierNotFound(VerifierError):
    """A python verifier's ``module:function`` cannot be imported."""

    reason = "VerifierNotFound"


@dataclass(frozen=True)
class Ruling:
    """One verifier's decision on one output: None keeps it, a reason drops it."""

    reason: DropReason | None = None
    error: str | None = None


KEEP = Ruling()
Check = Callable[[PromptRecord, str], Ruling]


@dataclass(frozen=True)
class Verifier:
    """A verifier from the spec, ready to run.

    Attributes:
        kind: exact_match, regex, json_schema or python.
        field: where it sits in the spec, e.g. ``spec.teach.verifiers[2]``.
        slices: slices it applies to; empty means every slice.
        needs_reference: whether it applies only to prompts with a reference.
        check: the check itself.
    """

    kind: str
    field: str
    slices: frozenset[str]
    needs_reference: bool
    check: Check

    def applies_to(self, prompt: PromptRecord) -> bool:
        """Whether this verifier judges outputs of ``prompt``."""
        if self.slices and prompt.slice not in self.slices:
            return False
        return prompt.reference is not None or not self.needs_reference


@dataclass(frozen=True)
class FilterSettings:
    """What the filters need from ``spec.teach``, plus the review seed."""

    verifiers: tuple[Verifier, ...] = ()
    min_output_chars: int = 1
    max_output_chars: int = 32768
    review_sample_rate: float = 0.05
    seed: str = "review"


@dataclass(frozen=True)
class Dropped:
    """An output that will not be trained on, and why."""

    id: str
    slice: str
    reason: DropReason
    error: str | None = None


@dataclass
class SliceCounts:
    """Accounting of one slice: collected = kept + sum(dropped)."""

    collected: int = 0
    kept: int = 0
    open_ended: int = 0
    review_queued: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collected": self.collected,
            "kept": self.kept,
            "dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(sorted(self.dropped.items())),
            "open_ended": self.open_ended,
            "review_queued": self.review_queued,
        }


@dataclass(frozen=True)
class FilterOutcome:
    """What filtering decided, output by output and in totals.

    Attributes:
        kept: outputs to train on, in input order.
        dropped: outputs dropped, in input order.
        review: the open-ended outputs sampled for review (a subset of ``kept``).
        slices: per-slice accounting.
        verifier_errors: messages of verifiers that raised, with how often.
    """

    kept: tuple[TeacherRecord, ...]
    dropped: tuple[Dropped, ...]
    review: tuple[TeacherRecord, ...]
    slices: Mapping[str, SliceCounts]
    verifier_errors: Mapping[str, int]

    def dropped_by_reason(self) -> Counter[str]:
        """Drop counts over all slices."""
        return Counter(item.reason.value for item in self.dropped)


def normalise_answer(text: str) -> str:
    """What "the same answer" means for exact_match: normalised, end punctuation off."""
    return normalise(text).rstrip(".!?。 ")


def build_verifiers(
    specs: Sequence[Mapping[str, Any]], *, field_path: str = VERIFIERS_FIELD
) -> tuple[Verifier, ...]:
    """Verifiers from their camelCase spec, checked before any teacher is asked.

    Args:
        specs: the ``spec.teach.verifiers`` list.
        field_path: where the list sits in the spec, for error messages.

    Raises:
        VerifierNotFound: a python verifier's function cannot be imported.
        VerifierError: a verifier is incomplete or invalid (bad pattern or schema).
    """
    return tuple(
        _build_verifier(spec, field=f"{field_path}[{index}]") for index, spec in enumerate(specs)
    )


def _build_verifier(spec: Mapping[str, Any], *, field: str) -> Verifier:
    kind = spec.get("kind")
    builders: dict[str, Callable[[Mapping[str, Any], str], Check]] = {
        "exact_match": _exact_match_check,
        "regex": _regex_check,
        "json_schema": _json_schema_check,
        "python": _python_check,
    }
    if not isinstance(kind, str) or kind not in builders:
        raise VerifierError(
            f"{field}.kind: {kind!r} is not a verifier kind (exact_match, regex, "
            "json_schema, python)"
        )
    return Verifier(
        kind=kind,
        field=field,
        slices=frozenset(spec.get("slices") or ()),
        needs_reference=kind == "exact_match",
        check=builders[kind](spec, field),
    )


def _exact_match_check(_spec: Mapping[str, Any], _field: str) -> Check:
    def check(prompt: PromptRecord, output: str) -> Ruling:
        if normalise_answer(output) == normalise_answer(prompt.reference or ""):
            return KEEP
        return Ruling(DropReason.WRONG_ANSWER)

    return check


def _regex_check(spec: Mapping[str, Any], field: str) -> Check:
    pattern = spec.get("pattern")
    if not isinstance(pattern, str):
        raise VerifierError(f"{field}.pattern: kind regex needs pattern")
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise VerifierError(f"{field}.pattern: not a valid regular expression: {error}") from None

    def check(_prompt: PromptRecord, output: str) -> Ruling:
        return KEEP if compiled.fullmatch(output.strip()) else Ruling(DropReason.REGEX_MISMATCH)

    return check


def _json_schema_check(spec: Mapping[str, Any], field: str) -> Check:
    schema = spec.get("schema")
    if not isinstance(schema, Mapping):
        raise VerifierError(f"{field}.schema: kind json_schema needs schema (a JSON Schema)")
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise VerifierError(f"{field}.schema: not a valid JSON Schema: {error.message}") from None
    validator = validator_class(schema)

    def check(_prompt: PromptRecord, output: str) -> Ruling:
        try:
            document = json.loads(output.strip())
        except (ValueError, RecursionError):  # nesting too deep to parse is not JSON to us
            return Ruling(DropReason.NOT_JSON)
        try:
            valid = validator.is_valid(document)
        except RecursionError:  # a document too deep to check cannot be shown to match
            valid = False
        return KEEP if valid else Ruling(DropReason.SCHEMA_MISMATCH)

    return check


def _python_check(spec: Mapping[str, Any], field: str) -> Check:
    function = import_function(spec.get("function"), field=f"{field}.function")

    def check(prompt: PromptRecord, output: str) -> Ruling:
        try:
            verdict = function(prompt, output)
        except Exception as error:  # a user's function: any failure is counted, not raised
            message = f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
            return Ruling(DropReason.VERIFIER_ERROR, error=message)
        return KEEP if verdict else Ruling(DropReason.REJECTED)

    return check


def import_function(reference: object, *, field: str) -> Callable[..., Any]:
    """The function a ``module:function`` reference names.

    Raises:
        VerifierNotFound: the reference is malformed, or its module or function is missing.
    """
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise VerifierNotFound(f"{field}: expected module:function, got {reference!r}")
    module_name, _, function_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or the module itself failing on import
        raise VerifierNotFound(
            f"{field}: cannot import module {module_name!r} ({type(error).__name__}: {error}); "
            "install it in the job's environment or fix the name"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise VerifierNotFound(f"{field}: module {module_name!r} has no function {function_name!r}")
    return function  # type: ignore[no-any-return]


def length_ruling(output: str, *, settings: FilterSettings) -> Ruling:
    """``too_short`` / ``too_long`` by the stripped output's length in characters."""
    length = len(output.strip())
    if length < settings.min_output_chars:
        return Ruling(DropReason.TOO_SHORT)
    if length > settings.max_output_chars:
        return Ruling(DropReason.TOO_LONG)
    return KEEP


def verify(
    prompt: PromptRecord, output: str, *, verifiers: Sequence[Verifier]
) -> tuple[Ruling, bool]:
    """Run the applicable verifiers; the first rejection decides.

    Returns:
        The ruling, and whether any verifier applied (False: the output is open-ended).
    """
    applied = False
    for verifier in verifiers:
        if not verifier.applies_to(prompt):
            continue
        applied = True
        ruling = verifier.check(prompt, output)
        if ruling.reason is not None:
            return ruling, True
    return KEEP, applied


def review_key(record: TeacherRecord, *, seed: str) -> str:
    """A seeded, order-independent sort key: the review sample is its smallest keys."""
    return hashlib.sha256(f"{seed}\0{record.id}\0{record.output}".encode()).hexdigest()


def review_sample(
    open_ended: Sequence[TeacherRecord], *, rate: float, seed: str
) -> tuple[TeacherRecord, ...]:
    """The open-ended outputs queued for review: ``ceil(rate * n)`` of them, by seed.

    The same outputs and seed always give the same sample, whatever their order;
    ``ceil`` means a non-zero rate reviews at least one output of a non-empty set.
    """
    count = min(len(open_ended), math.ceil(rate * len(open_ended)))
    keys = [review_key(record, seed=seed) for record in open_ended]
    chosen = set(sorted(range(len(open_ended)), key=keys.__getitem__)[:count])
    return tuple(record for index, record in enumerate(open_ended) if index in chosen)


def filter_outputs(
    outputs: Iterable[TeacherRecord],
    *,
    prompts: Mapping[str, PromptRecord],
    settings: FilterSettings,
) -> FilterOutcome:
    """Keep the outputs worth training on; account for every one of the rest.

    Args:
        outputs: the teacher's outputs (several per prompt id are allowed).
        prompts: training prompts by id; outputs of other ids are ignored (a stale
            output never reaches training).
        settings: verifiers, length limits and review sampling.
    """
    slices: dict[str, SliceCounts] = {}
    kept: list[TeacherRecord] = []
    dropped: list[Dropped] = []
    open_ended: list[TeacherRecord] = []
    errors: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    for record in outputs:
        prompt = prompts.get(record.id)
        if prompt is None:
            continue
        counts = slices.setdefault(prompt.slice, SliceCounts())
        counts.collected += 1
        ruling, verified = _rule(record, prompt=prompt, settings=settings, seen=seen)
        if ruling.reason is not None:
            counts.dropped[ruling.reason.value] += 1
            dropped.append(Dropped(record.id, prompt.slice, ruling.reason, ruling.error))
            if ruling.error:
                errors[ruling.error] += 1
            continue
        counts.kept += 1
        kept.append(record)
        if not verified:
            counts.open_ended += 1
            open_ended.append(record)
    review = review_sample(open_ended, rate=settings.review_sample_rate, seed=settings.seed)
    for record in review:
        slices[prompts[record.id].slice].review_queued += 1
    return FilterOutcome(tuple(kept), tuple(dropped), review, slices, dict(errors))


def _rule(
    record: TeacherRecord,
    *,
    prompt: PromptRecord,
    settings: FilterSettings,
    seen: set[tuple[str, str]],
) -> tuple[Ruling, bool]:
    ruling = length_ruling(record.output, settings=settings)
    if ruling.reason is not None:
        return ruling, False
    ruling, verified = verify(prompt, record.output, verifiers=settings.verifiers)
    if ruling.reason is not None:
        return ruling, verified
    pair = (record.id, record.output.strip())
    if pair in seen:
        return Ruling(DropReason.DUPLICATE), verified
    seen.add(pair)
    return KEEP, verified


def settings_from_spec(teach: Mapping[str, Any], *, seed: str) -> FilterSettings:
    """FilterSettings from the camelCase ``spec.teach`` dict (defaults as in the API).

    Raises:
        VerifierNotFound: a python verifier cannot be imported.
        VerifierError: a verifier is incomplete or invalid.
    """
    defaults = FilterSettings()
    return FilterSettings(
        verifiers=build_verifiers(teach.get("verifiers") or ()),
        min_output_chars=int(teach.get("minOutputChars", defaults.min_output_chars)),
        max_output_chars=int(teach.get("maxOutputChars", defaults.max_output_chars)),
        review_sample_rate=float(teach.get("reviewSampleRate", defaults.review_sample_rate)),
        seed=seed,
    )
