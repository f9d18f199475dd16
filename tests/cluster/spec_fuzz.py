"""Hypothesis strategies: DistillationProject manifests mutated from the valid example.

Each draw applies one to three mutations to ``examples/intent-classifier.yaml`` at paths
taken from the spec's schema (the example's own paths and every optional field of the
models): a field deleted, a wrong type, a number out of range, a random or very long
string, an enum value that does not exist, an unknown field, or a valid but different
value. Some are aimed at what only the operator can see: Secret references to Secrets
that do not exist, cron schedules, two-sentence tasks, rollouts that shrink, and
whitespace that Go's regular expressions (the API server) and pydantic's disagree on.

Paths are tuples from the manifest root (``("spec", "students", "candidates", 0)``);
:func:`server_form` writes them as the API server names fields (``spec.a[0].b``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from distill_operator import api
from distill_operator.api.spec import ARTIFACT_URI_PATTERN
from distill_operator.crd import openapi_schema
from manifests import example_manifest

Path = tuple[str | int, ...]
DELETE = object()
"""A change whose value is DELETE removes the field."""

SPEC_SCHEMA = openapi_schema(api.ProjectSpec)
SECRET = "fuzz-secret"
"""The one Secret the test creates, with the keys in SECRET_KEYS."""
SECRET_KEYS = ("api-key", "credentials")
STORE = "memory://fuzz"
"""Every URI a draw can make valid is under it: the operator writes stage inputs to the
artifact store even in dry mode, and memory:// keeps them in its own process."""
SECRET_REFS: tuple[Path, ...] = (
    ("spec", "teacher", "apiKeySecretRef"),
    ("spec", "artifacts", "credentialsSecretRef"),
    ("spec", "launch", "router", "tokenSecretRef"),
)
"""Every field of the spec that names a Secret key (the operator checks they exist)."""

# A field path as the API server and the operator write it: spec.a.b[0].c (or .0.c).
_FIELD = re.compile(r"\bspec(?:\.[A-Za-z_][A-Za-z0-9_]*|\.\d+|\[\d+\])*")


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One change to the example; several paths for a change that needs them together."""

    kind: str
    changes: tuple[tuple[Path, Any], ...]
    created: tuple[Path, ...] = ()
    """Objects and lists the change had to create on the way (so their required fields
    are missing by its doing); filled in by :func:`apply`."""

    @property
    def paths(self) -> tuple[Path, ...]:
        return (*(path for path, _ in self.changes), *self.created)

    def __str__(self) -> str:
        shown = ", ".join(
            f"{server_form(path)}={'<deleted>' if value is DELETE else _short(value)}"
            for path, value in self.changes
        )
        return f"{self.kind}: {shown}"


@dataclasses.dataclass(frozen=True)
class Draw:
    """A manifest and the mutations that made it from the example."""

    manifest: dict[str, Any]
    mutations: tuple[Mutation, ...]

    def describe(self) -> str:
        return "; ".join(str(m) for m in self.mutations)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def server_form(path: Path) -> str:
    """``("spec", "a", 0, "b")`` as ``spec.a[0].b``."""
    head, *rest = path
    return str(head) + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest
    )


def named_fields(message: str) -> set[str]:
    """The spec field paths a message names, in the server's form (``.0`` becomes ``[0]``)."""
    return {re.sub(r"\.(\d+)", r"[\1]", found) for found in _FIELD.findall(message)}


def _schema_at(path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The schema of each object from the root down to ``path`` (as far as it goes)."""
    node: dict[str, Any] | None = SPEC_SCHEMA
    for depth in range(1, len(path) + 1):
        if node is None:
            return
        yield path[:depth], node
        if depth == len(path):
            return
        step = path[depth]
        node = node.get("items") if isinstance(step, int) else node.get("properties", {}).get(step)


def _rule_fields(path: Path) -> set[str]:
    """The fields named by the CEL rules of ``path``'s object and every enclosing one."""
    fields = set()
    for where, node in _schema_at(path):
        for rule in node.get("x-kubernetes-validations", ()):
            fields.add(server_form(where) + rule.get("fieldPath", ""))
    return fields


def is_about(field: str, path: Path) -> bool:
    """Whether an error at ``field`` is explained by a change at ``path``: the field
    itself, something inside it, an object that holds it, or what a rule of an object
    that holds it points at."""
    changed = server_form(path)
    if field == changed or field.startswith((f"{changed}.", f"{changed}[")):
        return True
    if field != "spec" and changed.startswith((f"{field}.", f"{field}[")):
        return True
    return field in _rule_fields(path)


def names_a_changed_field(message: str, mutations: tuple[Mutation, ...]) -> bool:
    """Whether ``message`` names a field that one of ``mutations`` explains."""
    paths = [path for mutation in mutations for path in mutation.paths]
    return any(is_about(field, path) for field in named_fields(message) for path in paths)


# --- applying mutations ----------------------------------------------------------------


def apply(manifest: dict[str, Any], mutation: Mutation) -> Mutation | None:
    """Apply ``mutation`` in place and return it as applied; None (and nothing changed)
    where a path cannot be reached, e.g. inside a field an earlier one made a string."""
    trial, created = copy.deepcopy(manifest), []
    for path, value in mutation.changes:
        if not _set(trial, path, value, created):
            return None
    manifest.clear()
    manifest.update(trial)
    return dataclasses.replace(mutation, created=tuple(created))


def _set(node: Any, path: Path, value: Any, created: list[Path]) -> bool:
    *parents, leaf = path
    for index, step in enumerate(parents):
        following = path[index + 1]
        if not _has(node, step):
            if value is DELETE:
                return False
            if not _extend(node, step, [] if isinstance(following, int) else {}):
                return False
            created.append(path[: index + 1])
        node = node[step]
    if value is DELETE:
        if not _has(node, leaf):
            return False
        del node[leaf]
        return True
    if isinstance(node, list) and isinstance(leaf, int):
        if leaf < len(node):
            node[leaf] = copy.deepcopy(value)
            return True
        return _extend(node, leaf, copy.deepcopy(value))
    if isinstance(node, dict) and isinstance(leaf, str):
        node[leaf] = copy.deepcopy(value)
        return True
    return False


def _has(node: Any, step: str | int) -> bool:
    if isinstance(step, int):
        return isinstance(node, list) and step < len(node)
    return isinstance(node, dict) and step in node


def _extend(node: Any, step: str | int, value: Any) -> bool:
    if isinstance(step, int):
        if not isinstance(node, list) or step != len(node):
            return False
        node.append(value)
        return True
    if not isinstance(node, dict):
        return False
    node[step] = value
    return True


# --- where to mutate ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Slot:
    """A place in the spec: its path and its schema."""

    path: Path
    schema: dict[str, Any]


def _slots(schema: dict[str, Any], value: Any, path: Path) -> Iterator[Slot]:
    yield Slot(path, schema)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return  # free-form (a model config, a JSON schema): anything goes inside
    if schema.get("type") == "object":
        for key, child in schema.get("properties", {}).items():
            inner = value.get(key) if isinstance(value, dict) else None
            yield from _slots(child, inner, (*path, key))
    elif schema.get("type") == "array":
        indices = range(len(value)) if isinstance(value, list) and value else range(1)
        for index in indices:
            inner = value[index] if isinstance(value, list) and value else None
            yield from _slots(schema["items"], inner, (*path, index))


def base_manifest() -> dict[str, Any]:
    """The example, its artifact store and traffic under :data:`STORE`."""
    return example_manifest(
        "fuzz",
        **{"spec.artifacts.uri": f"{STORE}/artifacts", "spec.source.traffic": [f"{STORE}/*.jsonl"]},
    )


SLOTS = tuple(reversed(tuple(_slots(SPEC_SCHEMA, base_manifest()["spec"], ("spec",)))))
"""Every path of the example and every optional field of the models (lists at [0]); the
whole spec last, as Hypothesis draws the first more often than the rest."""
OBJECT_SLOTS = tuple(
    slot
    for slot in SLOTS
    if slot.schema.get("type") == "object"
    and not slot.schema.get("x-kubernetes-preserve-unknown-fields")
)


# --- values ------------------------------------------------------------------------------

_KEY = st.from_regex(r"[a-z][a-zA-Z0-9]{0,11}", fullmatch=True)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_WRONG_TYPES = {
    "string": st.text(max_size=20),
    "integer": st.integers(-(10**6), 10**6),
    "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    "boolean": st.booleans(),
    "null": st.none(),
    "array": st.lists(_SCALARS, max_size=3),
    "object": st.dictionaries(_KEY, _SCALARS, max_size=3),
}
_NUMBER_WORDS = ("NaN", "Infinity", "-Infinity", "1e400", "0x10", "1_000", "", " 1")
_WHITESPACE_GO_DOES_NOT_SEE = ("\x0b", "\x85", "\xa0", "\u2003", "\u3000")
"""Whitespace outside RE2's ``\\s`` (ASCII only), inside pydantic's (Unicode)."""


def conforming(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema allows (a CEL rule may still refuse it)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return st.dictionaries(_KEY, _SCALARS, max_size=3)
    if kind == "object":
        properties = schema.get("properties", {})
        required = list(schema.get("required", ()))  # a list: set order varies by run
        return st.fixed_dictionaries(
            {key: conforming(properties[key]) for key in required},
            optional={key: conforming(child) for key, child in properties.items()
                      if key not in required},
        )  # fmt: skip
    if kind == "array":
        unique = "name" if schema.get("x-kubernetes-list-map-keys") else None
        most = min(schema.get("maxItems", 3), 3)
        return st.lists(
            conforming(schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=max(most, schema.get("minItems", 0)),
            unique_by=(lambda item: item.get(unique)) if unique else None,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = _bounds(schema, step=1)
        return st.integers(
            min_value=int(low) if low is not None else -(10**6),
            max_value=int(high) if high is not None else (int(low) if low else 0) + 10**6,
        )
    if kind == "number":
        low, high = _bounds(schema, step=0)
        return st.floats(
            min_value=low if low is not None else -1e6,
            max_value=high if high is not None else (low or 0.0) + 1e6,
            exclude_min=bool(schema.get("exclusiveMinimum")),
            exclude_max=bool(schema.get("exclusiveMaximum")),
            allow_nan=False,
            allow_infinity=False,
        )
    return _strings(schema)


def _bounds(schema: dict[str, Any], *, step: int) -> tuple[float | None, float | None]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if step and low is not None and schema.get("exclusiveMinimum"):
        low += step
    if step and high is not None and schema.get("exclusiveMaximum"):
        high -= step
    return low, high


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength", 200)
    if schema.get("pattern") == ARTIFACT_URI_PATTERN:
        return st.from_regex(r"[^\s]{1,40}", fullmatch=True).map(lambda rest: f"{STORE}/{rest}")
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda text: shortest <= len(text) <= longest
        )
    return st.text(min_size=shortest, max_size=min(longest, 40))


def nonconforming(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value of the wrong type, out of range, too long, or not one of the enum."""
    kind = schema.get("type", "string")
    wrong = [
        strategy
        for name, strategy in _WRONG_TYPES.items()
        if name != kind and not (kind == "number" and name == "integer")
    ]
    options = [st.one_of(wrong)]
    if kind in ("integer", "number"):
        options += [_out_of_range(schema), st.sampled_from(_NUMBER_WORDS)]
    if kind == "string":
        options.append(_bad_strings(schema))
    if kind == "array":
        options.append(_bad_lists(schema))
    return st.one_of(options)


def _out_of_range(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    edges: list[Any] = [-1, 0, -(10**9), 10**30, 2**63, 2**53 + 1, 1e30, -1e-300]
    for bound, outward in (("minimum", -1), ("maximum", 1)):
        if bound in schema:
            edges += [schema[bound] + outward, schema[bound] + outward * 1e-9, schema[bound]]
    if schema.get("type") == "integer":
        edges = [int(edge) if math.isfinite(edge) and float(edge).is_integer() else edge
                 for edge in edges]  # fmt: skip
    return st.sampled_from(edges)


def _bad_strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    longest = schema.get("maxLength", 4096)
    options = [
        st.just(""),
        st.text(min_size=1, max_size=40),
        # Hypothesis draws short strings only: a short one repeated past the limit.
        st.text(alphabet="ab\u00e9\u4e2d\U0001f600 \n\x00", min_size=1, max_size=8).map(
            lambda unit: (unit * (longest // len(unit) + 2))[: longest + 1]
        ),
    ]
    if "enum" in schema:
        options.append(st.sampled_from([value.upper() for value in schema["enum"]]))
        options.append(st.sampled_from([f"{value} " for value in schema["enum"]]))
    return st.one_of(options).filter(lambda text: text not in schema.get("enum", ()))


def _bad_lists(schema: dict[str, Any]) -> st.SearchStrategy[list[Any]]:
    too_many = schema.get("maxItems", 64) + 1
    return st.one_of(
        st.just([]),
        conforming(schema["items"]).map(lambda item: [item] * too_many),
        st.lists(_SCALARS, min_size=1, max_size=3),
    )


# --- mutations ---------------------------------------------------------------------------


def _at(kind: str, path: Path) -> Any:
    return lambda value: Mutation(kind, ((path, value),))


def deletions(slot: Slot) -> st.SearchStrategy[Mutation]:
    return st.just(Mutation("delete", ((slot.path, DELETE),)))


def invalid_values(slot: Slot) -> st.SearchStrategy[Mutation]:
    return nonconforming(slot.schema).map(_at("invalid", slot.path))


def valid_values(slot: Slot) -> st.SearchStrategy[Mutation]:
    return conforming(slot.schema).map(_at("valid", slot.path))


def unknown_fields(slot: Slot) -> st.SearchStrategy[Mutation]:
    """A field the object does not have (refused: the test creates with Strict)."""
    known = set(slot.schema.get("properties", {}))
    return st.tuples(_KEY.filter(lambda key: key not in known), _SCALARS).map(
        lambda pair: Mutation("unknown field", (((*slot.path, pair[0]), pair[1]),))
    )


def secret_refs() -> st.SearchStrategy[Mutation]:
    """A Secret reference the API server accepts; the Secret or the key may not exist."""
    ref = st.fixed_dictionaries(
        {
            "name": st.sampled_from([SECRET, "no-such-secret"]),
            "key": st.sampled_from([*SECRET_KEYS, "no-such-key"]),
        }
    )
    return st.tuples(st.sampled_from(SECRET_REFS), ref).map(
        lambda pair: Mutation("secret ref", ((pair[0], pair[1]),))
    )


def api_teachers() -> st.SearchStrategy[Mutation]:
    """The teacher made an API (openai or anthropic), its key in a Secret that may not exist."""

    def build(backend: str, secret: str, key: str) -> Mutation:
        teacher: dict[str, Any] = {
            "backend": backend,
            "model": "gpt-teacher" if backend == "openai" else "claude-teacher",
            "parameters": 4197632,
            "termsAcknowledged": True,
            "apiKeySecretRef": {"name": secret, "key": key},
        }
        if backend == "openai":
            teacher["endpoint"] = "https://api.example.invalid/v1"
        alternatives = [{"name": "terse", "kind": "prompt_variant", "prompt": "Label only."}]
        return Mutation(
            "api teacher",
            (
                (("spec", "teacher"), teacher),
                (("spec", "investigate", "alternatives"), alternatives),
            ),
        )

    return st.builds(
        build,
        st.sampled_from(["openai", "anthropic"]),
        st.sampled_from([SECRET, "no-such-secret"]),
        st.sampled_from([*SECRET_KEYS, "no-such-key"]),
    )


def schedules() -> st.SearchStrategy[Mutation]:
    """Cron schedules: the API server checks only the length; the operator parses them."""
    crons = st.sampled_from(
        ["*/5 * * * *", "0 3 * * 1", "@daily", "61 * * * *", "* * *", "every monday",
         "0 0 31 2 *", "0 0 * * 8", ""]
    )  # fmt: skip
    return st.one_of(crons, st.text(max_size=30)).map(
        _at("schedule", ("spec", "lifecycle", "schedule"))
    )


def tasks() -> st.SearchStrategy[Mutation]:
    """Tasks of one sentence, of two, or over lines: Define accepts only the first."""
    sentences = st.sampled_from(
        ["Label each ticket with its intent.", "Label tickets. Then summarise them.",
         "Label tickets!  Rank them?", "Label tickets\nand rank them.", "   ", "e.g. Label it."]
    )  # fmt: skip
    return st.one_of(sentences, st.text(min_size=1, max_size=60)).map(_at("task", ("spec", "task")))


def rollouts() -> st.SearchStrategy[Mutation]:
    """Rollout steps the API server accepts one by one; Define checks their order."""
    step = st.one_of(
        st.builds(lambda: {"mode": "shadow"}),
        st.builds(lambda: {"mode": "full"}),
        st.integers(1, 99).map(lambda percent: {"mode": "canary", "percent": percent}),
    )
    return st.lists(step, max_size=4).map(_at("rollout", ("spec", "launch", "steps")))


def uris_with_unicode_space() -> st.SearchStrategy[Mutation]:
    """URIs whose whitespace only one of the two regular-expression engines sees."""
    paths: tuple[Path, ...] = (("spec", "artifacts", "uri"), ("spec", "source", "traffic", 0))
    return st.tuples(st.sampled_from(paths), st.sampled_from(_WHITESPACE_GO_DOES_NOT_SEE)).map(
        lambda pair: Mutation("uri", ((pair[0], f"{STORE}/odd{pair[1]}space"),))
    )


def suspends() -> st.SearchStrategy[Mutation]:
    return st.just(Mutation("suspend", ((("spec", "suspend"), True),)))


# Slot mutations are most of the draws; the aimed ones make sure the operator's own
# checks (which the API server cannot make) are reached often.
_MUTATIONS = [
    *[st.sampled_from(SLOTS).flatmap(valid_values)] * 4,
    *[st.sampled_from(SLOTS).flatmap(invalid_values)] * 3,
    st.sampled_from(SLOTS).flatmap(deletions),
    st.sampled_from(OBJECT_SLOTS).flatmap(unknown_fields),
    secret_refs(),
    api_teachers(),
    schedules(),
    tasks(),
    rollouts(),
    uris_with_unicode_space(),
    suspends(),
]


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Draw:
    """The example with one to three mutations applied (those that could be)."""
    manifest = base_manifest()
    applied = []
    for _ in range(draw(st.integers(1, 3))):
        applied_one = apply(manifest, draw(st.sampled_from(_MUTATIONS).flatmap(lambda s: s)))
        if applied_one is not None:
            applied.append(applied_one)
    return Draw(manifest, tuple(applied))
