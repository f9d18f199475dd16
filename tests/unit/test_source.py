"""The Source workload's decisions, as pure functions: no Ray, no cluster."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from distill_jobs.records import UNSLICED, LeakError, assert_no_leak, prompt_hash
from distill_jobs.sourcing.files import SkipKind, list_traffic, probe_traffic
from distill_jobs.sourcing.prompts import (
    Drop,
    FieldNames,
    Signer,
    extract_prompt,
    json_records,
    near_group,
    tag_slice,
)
from distill_jobs.sourcing.report import under_covered_message
from distill_jobs.sourcing.selection import (
    Candidate,
    check_coverage,
    copies_per_prompt,
    deduplicate,
    held_out_count,
    split_by_slice,
)
from distill_jobs.sourcing.settings import (
    InvalidSliceRule,
    InvalidSourceSpec,
    compile_rules,
    read_settings,
)

FIELDS = FieldNames(prompt="prompt", reference="reference", slice="slice")
SIGNER = Signer()
LONG_TICKET = (
    "my order number 4411 arrived yesterday but the blue kettle inside was cracked along "
    "the handle and the box was soaked so I would like a replacement sent to my home address"
)


def candidates(texts: list[str], *, system: str = "", slice_: str = "s") -> list[Candidate]:
    return [
        Candidate(
            position=position,
            id=prompt_hash(f"{system}\n{text}" if system else text),
            slice=slice_,
            group=near_group(system),
            signature=SIGNER.sign(text),
        )
        for position, text in enumerate(texts)
    ]


def many(slice_: str, count: int, *, start: int = 0) -> list[Candidate]:
    return [
        Candidate(position=start + n, id=prompt_hash(f"{slice_} prompt {n}"), slice=slice_)
        for n in range(count)
    ]


# --- one record to one prompt --------------------------------------------------------------


def test_the_prompt_ends_at_the_last_user_turn_and_the_answer_is_no_reference() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "In transit."},
        ]
    }
    prompt = extract_prompt(record, fields=FIELDS)
    assert not isinstance(prompt, Drop)
    assert [m["role"] for m in prompt.messages] == ["system", "user", "assistant", "user"]
    assert prompt.prompt_text == "Be brief.\nHi\nWhere is my parcel?"
    assert prompt.reference is None


def test_a_record_without_messages_uses_the_prompt_field_and_its_reference() -> None:
    prompt = extract_prompt({"prompt": "2+2?", "reference": 4}, fields=FIELDS)
    assert not isinstance(prompt, Drop)
    assert prompt.messages == [{"role": "user", "content": "2+2?"}]
    assert prompt.reference == "4"


def test_parquet_null_keys_are_dropped_and_text_parts_are_read() -> None:
    record = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}], "name": None}]
    }
    prompt = extract_prompt(record, fields=FIELDS)
    assert not isinstance(prompt, Drop)
    assert prompt.messages == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert prompt.prompt_text == "hello"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"messages": [{"role": "assistant", "content": "hi"}]}, Drop.NO_USER_TURN),
        ({"messages": [{"content": "no role"}]}, Drop.BAD_MESSAGES),
        ({"messages": "not a list"}, Drop.BAD_MESSAGES),
        ({"messages": [{"role": "user", "content": "   "}]}, Drop.EMPTY_PROMPT),
        ({"prompt": ["a", "list"]}, Drop.PROMPT_NOT_TEXT),
        ({"text": "no prompt field"}, Drop.NO_PROMPT),
    ],
)
def test_records_without_a_usable_prompt_say_why(record: dict, reason: Drop) -> None:
    assert extract_prompt(record, fields=FIELDS) is reason


def test_json_lines_report_bad_lines_by_number_and_skip_blank_ones() -> None:
    data = b'{"prompt": "a"}\n\nnot json\n[1]\n\xff\xfe\n{"prompt": "b"}\n'
    records = list(json_records(data, path="traffic.jsonl"))
    assert records == [
        (1, {"prompt": "a"}),
        (3, Drop.NOT_JSON),
        (4, Drop.NOT_OBJECT),
        (5, Drop.NOT_UTF8),
        (6, {"prompt": "b"}),
    ]


def test_gzip_traffic_is_read_and_a_broken_one_is_reported() -> None:
    data = gzip.compress(b'{"prompt": "a"}\n')
    assert list(json_records(data, path="t.jsonl.gz")) == [(1, {"prompt": "a"})]
    assert list(json_records(data[:12], path="t.jsonl.gz")) == [(0, Drop.BAD_GZIP)]


def test_a_json_file_may_hold_one_array_of_records() -> None:
    data = json.dumps([{"prompt": "a"}, 3]).encode()
    assert list(json_records(data, path="traffic.json")) == [
        (1, {"prompt": "a"}),
        (2, Drop.NOT_OBJECT),
    ]


# --- slices --------------------------------------------------------------------------------


def test_the_slice_field_wins_then_the_first_matching_rule_then_unsliced() -> None:
    settings = read_settings(
        {
            "source": {
                "traffic": ["file:///t/*.jsonl"],
                "sliceField": "slice",
                "sliceRules": [
                    {"slice": "refund-fraud", "pattern": r"(?i)chargeback"},
                    {"slice": "refunds", "pattern": r"(?i)refund|chargeback"},
                ],
            }
        }
    )
    rules = compile_rules(settings)
    tag = {"slice_field": "slice", "rules": rules}
    assert tag_slice({"slice": "vip"}, "a chargeback", **tag) == ("vip", "field")
    assert tag_slice({}, "I filed a Chargeback", **tag) == ("refund-fraud", "rule")
    assert tag_slice({"slice": ""}, "refund please", **tag) == ("refunds", "rule")
    assert tag_slice({}, "hello", **tag) == (UNSLICED, "none")


def test_an_invalid_rule_pattern_names_the_rule() -> None:
    settings = read_settings(
        {"source": {"traffic": ["file:///t"], "sliceRules": [{"slice": "x", "pattern": "("}]}}
    )
    with pytest.raises(InvalidSliceRule, match=r"sliceRules\[0\].*'x'"):
        compile_rules(settings)


def test_settings_out_of_bounds_name_the_field() -> None:
    with pytest.raises(InvalidSourceSpec, match=r"spec\.source\.heldOutFraction"):
        read_settings({"source": {"traffic": ["file:///t"], "heldOutFraction": 0.9}})
    with pytest.raises(InvalidSourceSpec, match=r"spec\.source"):
        read_settings({"task": "x"})


# --- de-duplication ------------------------------------------------------------------------


def test_exact_and_near_duplicates_go_and_unrelated_prompts_stay() -> None:
    texts = [
        LONG_TICKET,
        "  MY ORDER number 4411 " + LONG_TICKET.removeprefix("my order number 4411 "),  # exact
        LONG_TICKET + " thanks",  # near
        "how do I reset the password of my account after the email link expired",
        "can I change the delivery address of an order that has already shipped",
    ]
    result = deduplicate(candidates(texts), threshold=0.8)
    assert [c.position for c in result.kept] == [0, 3, 4]
    assert (result.exact_duplicates, result.near_duplicates) == (1, 1)


def test_a_threshold_of_one_drops_exact_duplicates_only() -> None:
    texts = [LONG_TICKET, LONG_TICKET + " thanks", LONG_TICKET]
    result = deduplicate(candidates(texts), threshold=1.0)
    assert [c.position for c in result.kept] == [0, 1]
    assert (result.exact_duplicates, result.near_duplicates) == (1, 0)


def test_the_first_seen_of_near_duplicates_is_kept() -> None:
    texts = [LONG_TICKET + " thanks", LONG_TICKET]
    result = deduplicate(candidates(texts), threshold=0.8)
    assert [c.position for c in result.kept] == [0]


def test_a_shared_system_prompt_does_not_make_prompts_near_duplicates() -> None:
    system = " ".join(["You are the support assistant of a large online shop."] * 20)
    texts = ["where is my parcel", "cancel my subscription today"]
    result = deduplicate(candidates(texts, system=system), threshold=0.5)
    assert len(result.kept) == 2


# --- split and coverage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "fraction", "held_out"),
    [(0, 0.1, 0), (1, 0.5, 0), (2, 0.1, 1), (3, 0.5, 2), (10, 0.1, 1), (25, 0.1, 3)],
)
def test_held_out_counts_keep_one_of_two_and_never_take_all(
    size: int, fraction: float, held_out: int
) -> None:
    assert held_out_count(size, fraction) == held_out


def test_the_split_is_stratified_and_deterministic_by_seed() -> None:
    kept = many("common", 100) + many("rare", 5, start=100)
    first = split_by_slice(kept, fraction=0.2, seed=1)
    again = split_by_slice(list(reversed(kept)), fraction=0.2, seed=1)
    other = split_by_slice(kept, fraction=0.2, seed=2)
    assert {name: len(split.held_out) for name, split in first.items()} == {
        "common": 20,
        "rare": 1,
    }
    held = {name: {c.id for c in split.held_out} for name, split in first.items()}
    assert held == {name: {c.id for c in split.held_out} for name, split in again.items()}
    assert held["common"] != {c.id for c in other["common"].held_out}
    for split in first.values():
        assert not {c.id for c in split.train} & {c.id for c in split.held_out}


def test_held_out_prompts_in_a_training_set_are_refused() -> None:
    split = split_by_slice(many("s", 20), fraction=0.1, seed=0)["s"]
    held_out = {c.id for c in split.held_out}
    assert_no_leak((c.id for c in split.train), held_out)
    with pytest.raises(LeakError, match="held-out"):
        assert_no_leak([c.id for c in split.train] + [next(iter(held_out))], held_out)


def test_an_under_covered_critical_slice_is_named_with_its_count_and_minimum() -> None:
    splits = split_by_slice(many("common", 50) + many("rare", 8, start=50), fraction=0.25, seed=0)
    coverage = check_coverage(
        splits, min_counts={"rare": 10, "absent": 3}, allow_oversampling=False
    )
    assert [(s.slice, s.train, s.min_count) for s in coverage.short] == [
        ("rare", 6, 10),
        ("absent", 0, 3),
    ]
    message = under_covered_message(coverage.short, allow_oversampling=False)
    assert "rare has 6 training example(s), minCount 10" in message
    assert "absent has 0 training example(s), minCount 3" in message
    assert "allowOversampling" in message


def test_oversampling_fills_a_short_slice_but_cannot_fill_an_empty_one() -> None:
    splits = split_by_slice(many("rare", 4), fraction=0.25, seed=0)
    coverage = check_coverage(splits, min_counts={"rare": 10, "absent": 3}, allow_oversampling=True)
    assert coverage.copies == {"rare": 7}
    assert [s.slice for s in coverage.short] == ["absent"]
    copies = copies_per_prompt(splits["rare"].train, 7)
    assert sorted(copies.values()) == [2, 2, 3]
    assert sum(copies.values()) == 7


def test_a_critical_slice_of_one_prompt_cannot_be_held_out() -> None:
    splits = split_by_slice(many("common", 10) + many("rare", 1, start=10), fraction=0.1, seed=0)
    coverage = check_coverage(splits, min_counts={"rare": 1}, allow_oversampling=True)
    assert coverage.lonely == ("rare",)


# --- files -----------------------------------------------------------------------------------


def test_globs_and_folders_expand_in_order_and_odd_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text('{"prompt": "b"}\n')
    (tmp_path / "a.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    uris = [
        f"{tmp_path.as_uri()}/*",
        f"{tmp_path.as_uri()}/a.jsonl",
        "file:///nowhere/*.jsonl",
        "nosuchstore://bucket/*.jsonl",
    ]
    listing = probe_traffic(list_traffic(uris), wanted_columns=["messages"])
    assert [Path(f.path).name for f in listing.files] == ["a.jsonl", "b.jsonl"]
    kinds = {Path(s.uri).name: s.kind for s in listing.skipped}
    assert kinds == {
        "_SUCCESS": SkipKind.HIDDEN,
        "broken.parquet": SkipKind.UNREADABLE,
        "empty.jsonl": SkipKind.EMPTY,
        "notes.txt": SkipKind.UNSUPPORTED,
    }
    assert listing.unmatched == ("file:///nowhere/*.jsonl",)
    assert [uri for uri, _ in listing.unlistable] == ["nosuchstore://bucket/*.jsonl"]
