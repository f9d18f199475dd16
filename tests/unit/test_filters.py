"""Teacher-output filters: each verifier keeps right answers and drops wrong ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from distill_jobs.filters import (
    DropReason,
    FilterSettings,
    VerifierError,
    VerifierNotFound,
    build_verifiers,
    filter_outputs,
    review_sample,
    settings_from_spec,
)
from distill_jobs.records import PromptRecord, TeacherRecord, prompt_hash

# Used as python verifiers through their module:function references.
THIS_MODULE = __name__


def keep_even_lengths(prompt: PromptRecord, output: str) -> bool:
    return len(output) % 2 == 0


def explode_on_boom(prompt: PromptRecord, output: str) -> bool:
    if "boom" in output:
        raise RuntimeError("verifier blew up")
    return True


def prompt(text: str, *, slice_: str = "general", reference: str | None = None) -> PromptRecord:
    return PromptRecord(
        id=prompt_hash(text),
        messages=[{"role": "user", "content": text}],
        prompt_text=text,
        slice=slice_,
        reference=reference,
    )


def answer(of: PromptRecord, output: str) -> TeacherRecord:
    return TeacherRecord(
        id=of.id, messages=of.messages, slice=of.slice, output=output, teacher="hf:test"
    )


def run(
    pairs: Sequence[tuple[PromptRecord, str]],
    *,
    verifiers: Sequence[dict[str, Any]] = (),
    **settings: Any,
) -> Any:
    prompts = {item.id: item for item, _ in pairs}
    return filter_outputs(
        [answer(item, output) for item, output in pairs],
        prompts=prompts,
        settings=FilterSettings(verifiers=build_verifiers(verifiers), **settings),
    )


def reasons(outcome: Any) -> list[str]:
    return [item.reason.value for item in outcome.dropped]


def test_exact_match_keeps_normalised_equal_answers_and_drops_wrong_ones() -> None:
    sum_prompt = prompt("What is 2 plus 3?", slice_="math", reference="5")
    other_prompt = prompt("What is 4 plus 4?", slice_="math", reference="8")
    outcome = run([(sum_prompt, "  5. "), (other_prompt, "9")], verifiers=[{"kind": "exact_match"}])
    assert [record.output for record in outcome.kept] == ["  5. "]
    assert reasons(outcome) == ["wrong_answer"]


def test_exact_match_skips_prompts_without_reference_or_outside_its_slices() -> None:
    no_reference = prompt("Tell me a story", slice_="math")
    other_slice = prompt("What is 1 plus 1?", slice_="chat", reference="2")
    outcome = run(
        [(no_reference, "once"), (other_slice, "3")],
        verifiers=[{"kind": "exact_match", "slices": ["math"]}],
    )
    assert len(outcome.kept) == 2
    assert outcome.slices["math"].open_ended == 1
    assert outcome.slices["chat"].open_ended == 1


def test_regex_must_match_the_whole_stripped_output() -> None:
    pairs = [(prompt("a"), " 42 "), (prompt("b"), "the answer is 42")]
    outcome = run(pairs, verifiers=[{"kind": "regex", "pattern": r"\d+"}])
    assert [record.output for record in outcome.kept] == [" 42 "]
    assert reasons(outcome) == ["regex_mismatch"]


def test_json_schema_drops_non_json_and_invalid_json_for_different_reasons() -> None:
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    pairs = [
        (prompt("a"), '{"city": "Oslo"}'),
        (prompt("b"), "Oslo"),
        (prompt("c"), '{"town": "Oslo"}'),
    ]
    outcome = run(pairs, verifiers=[{"kind": "json_schema", "schema": schema}])
    assert [record.output for record in outcome.kept] == ['{"city": "Oslo"}']
    assert reasons(outcome) == ["not_json", "schema_mismatch"]


def test_python_verifier_keeps_what_the_function_accepts() -> None:
    pairs = [(prompt("a"), "ab"), (prompt("b"), "abc")]
    verifier = {"kind": "python", "function": f"{THIS_MODULE}:keep_even_lengths"}
    outcome = run(pairs, verifiers=[verifier])
    assert [record.output for record in outcome.kept] == ["ab"]
    assert reasons(outcome) == ["rejected"]


def test_a_raising_verifier_drops_that_output_and_counts_the_error() -> None:
    pairs = [(prompt("a"), "boom"), (prompt("b"), "fine"), (prompt("c"), "boom again")]
    verifier = {"kind": "python", "function": f"{THIS_MODULE}:explode_on_boom"}
    outcome = run(pairs, verifiers=[verifier])
    assert [record.output for record in outcome.kept] == ["fine"]
    assert reasons(outcome) == ["verifier_error", "verifier_error"]
    assert outcome.verifier_errors == {"RuntimeError: verifier blew up": 2}


@pytest.mark.parametrize(
    ("function", "missing"),
    [("no_such_module_xyz:check", "no_such_module_xyz"), (f"{__name__}:absent", "absent")],
)
def test_an_unimportable_python_verifier_is_a_user_error_naming_the_field(
    function: str, missing: str
) -> None:
    with pytest.raises(VerifierNotFound, match=r"spec\.teach\.verifiers\[1\]\.function") as error:
        build_verifiers([{"kind": "exact_match"}, {"kind": "python", "function": function}])
    assert missing in str(error.value)
    assert error.value.reason == "VerifierNotFound"


@pytest.mark.parametrize(
    "verifier",
    [{"kind": "regex", "pattern": "("}, {"kind": "json_schema", "schema": {"type": 5}}],
)
def test_an_invalid_pattern_or_schema_is_refused_before_collection(
    verifier: dict[str, Any],
) -> None:
    with pytest.raises(VerifierError, match=r"verifiers\[0\]"):
        build_verifiers([verifier])


def test_length_limits_drop_empty_and_runaway_outputs() -> None:
    pairs = [(prompt("a"), "   "), (prompt("b"), "x" * 11), (prompt("c"), "just right")]
    outcome = run(pairs, min_output_chars=1, max_output_chars=10)
    assert [record.output for record in outcome.kept] == ["just right"]
    assert reasons(outcome) == ["too_short", "too_long"]


def test_identical_prompt_and_output_pairs_are_kept_once() -> None:
    question = prompt("a")
    pairs = [
        (question, "same"),
        (question, "same "),
        (question, "other"),
        (prompt("b"), "same"),
    ]
    outcome = run(pairs)
    assert [record.output for record in outcome.kept] == ["same", "other", "same"]
    assert reasons(outcome) == ["duplicate"]


def test_review_sample_is_deterministic_by_seed_and_respects_the_rate() -> None:
    outputs = [answer(prompt(f"question {index}"), f"answer {index}") for index in range(200)]
    first = review_sample(outputs, rate=0.1, seed="s1")
    again = review_sample(list(reversed(outputs)), rate=0.1, seed="s1")
    other_seed = review_sample(outputs, rate=0.1, seed="s2")
    assert len(first) == 20
    assert {record.id for record in first} == {record.id for record in again}
    assert {record.id for record in first} != {record.id for record in other_seed}
    assert review_sample(outputs, rate=0.0, seed="s1") == ()
    assert len(review_sample(outputs[:3], rate=0.05, seed="s1")) == 1


def test_only_open_ended_outputs_are_queued_for_review() -> None:
    checkable = [(prompt(f"sum {index}", slice_="math", reference="1"), "1") for index in range(5)]
    open_ended = [(prompt(f"story {index}", slice_="chat"), "tale") for index in range(5)]
    outcome = run(
        checkable + open_ended,
        verifiers=[{"kind": "exact_match"}],
        review_sample_rate=1.0,
    )
    assert {record.slice for record in outcome.review} == {"chat"}
    assert outcome.slices["chat"].review_queued == 5
    assert outcome.slices["math"].review_queued == 0


def test_per_slice_and_per_reason_accounting_adds_up() -> None:
    schema = {"type": "object"}
    pairs = [
        (prompt("m1", slice_="math", reference="1"), "1"),
        (prompt("m2", slice_="math", reference="2"), "3"),
        (prompt("m3", slice_="math", reference="3"), ""),
        (prompt("j1", slice_="json"), "{}"),
        (prompt("j2", slice_="json"), "nope"),
        (prompt("c1", slice_="chat"), "hello"),
    ]
    outcome = run(
        pairs,
        verifiers=[
            {"kind": "exact_match", "slices": ["math"]},
            {"kind": "json_schema", "schema": schema, "slices": ["json"]},
        ],
    )
    totals = outcome.dropped_by_reason()
    assert dict(totals) == {"wrong_answer": 1, "too_short": 1, "not_json": 1}
    assert len(outcome.kept) + len(outcome.dropped) == len(pairs)
    for counts in outcome.slices.values():
        assert counts.collected == counts.kept + sum(counts.dropped.values())
    assert outcome.slices["math"].as_dict()["dropped_by_reason"] == {
        "too_short": 1,
        "wrong_answer": 1,
    }
    assert sum(counts.kept for counts in outcome.slices.values()) == len(outcome.kept)


def test_outputs_of_prompts_not_in_training_never_reach_it() -> None:
    known = prompt("known")
    stranger = prompt("not a training prompt")
    outcome = filter_outputs(
        [answer(known, "ok"), answer(stranger, "ok")],
        prompts={known.id: known},
        settings=FilterSettings(),
    )
    assert [record.id for record in outcome.kept] == [known.id]
    assert outcome.slices["general"].collected == 1


def test_settings_from_spec_reads_camel_case_fields_with_api_defaults() -> None:
    settings = settings_from_spec(
        {"verifiers": [{"kind": "regex", "pattern": "x"}], "maxOutputChars": 7}, seed="abc"
    )
    assert settings.max_output_chars == 7
    assert settings.min_output_chars == 1
    assert settings.review_sample_rate == 0.05
    assert [verifier.kind for verifier in settings.verifiers] == ["regex"]
    assert DropReason.WRONG_ANSWER.phrase == "wrong"
    assert DropReason.TOO_LONG.phrase == "too long"
