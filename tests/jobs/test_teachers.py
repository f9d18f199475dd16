"""The teachers against real components: the tiny model, the local API server, the SDKs.

No client or HTTP layer is mocked: the ``openai`` and ``anthropic`` SDKs talk to
:mod:`distill_jobs.apiserver` over loopback, which serves the tiny model.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from distill_jobs.apiserver import FaultPlan
from distill_jobs.teachers import (
    FailureReason,
    ModelNotAvailableError,
    TeacherBatchError,
    make_teacher,
)
from distill_jobs.teachers.generation import tokenizer_identity
from distill_jobs.tiny import PRESETS, build_tiny_model

from .conftest import FAST_RETRY, SERVED_MODEL, SERVER_KEY, prompt, unused_port

QUESTIONS = [prompt(f"What is {n} plus {2 * n}?") for n in range(5)]
TEACH = {"maxOutputTokens": 8, "batchSize": 4, "temperature": 0.0}


def api_teacher(backend: str, endpoint: str, **teach: Any) -> dict[str, Any]:
    return {"backend": backend, "model": SERVED_MODEL, "endpoint": endpoint, "topLogprobs": 3}


@pytest.fixture(scope="module")
def hf_teacher(tiny_model_dir: Path, single_torch_thread: None) -> Any:
    teacher = make_teacher(
        teacher={"backend": "hf", "model": str(tiny_model_dir), "topLogprobs": 5},
        teach=TEACH,
        api_key=None,
    )
    yield teacher
    teacher.close()


def test_tiny_model_and_tokenizer_round_trip_through_from_pretrained(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert (tiny_model_dir / "model.safetensors").exists()
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert model.config.hidden_size == PRESETS["tiny"].hidden_size
    assert model.config.vocab_size == len(tokenizer)
    rendered = tokenizer.apply_chat_template(
        QUESTIONS[0].messages, add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|assistant|>") and "What is 0 plus 0?" in rendered

    # The same seed builds the same weights; a built directory is returned as it is.
    again = build_tiny_model(directory=tmp_path / "again", seed=0)
    student = build_tiny_model(directory=tmp_path / "student", seed=1, preset="small")
    assert tokenizer_identity(AutoTokenizer.from_pretrained(student)) == tokenizer_identity(
        tokenizer
    )  # teacher and student share a vocabulary: soft labels carry over
    rebuilt = AutoModelForCausalLM.from_pretrained(again)
    for (name, weight), (_, other) in zip(
        model.state_dict().items(), rebuilt.state_dict().items(), strict=True
    ):
        assert torch.equal(weight, other), name
    stamp = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(directory=again, seed=0) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        build_tiny_model(directory=again, seed=1)


def test_hf_teacher_answers_a_batch_with_top_k_logprobs_per_output_token(hf_teacher: Any) -> None:
    answers = hf_teacher.answer(QUESTIONS)

    assert [answer.id for answer in answers] == [question.id for question in QUESTIONS]
    for answer in answers:
        assert answer.teacher.startswith("hf:") and answer.tokenizer.startswith("sha256:")
        assert answer.finish_reason in ("stop", "length")
        assert answer.top_logprobs is not None
        content_tokens = answer.output_tokens - (answer.finish_reason == "stop")
        assert len(answer.top_logprobs) == content_tokens <= TEACH["maxOutputTokens"]
        for position in answer.top_logprobs:
            assert len(position) == 5
            logprobs = [candidate.logprob for candidate in position]
            assert logprobs == sorted(logprobs, reverse=True) and logprobs[0] <= 0.0
            assert all(isinstance(candidate.token_id, int) for candidate in position)
    # Left padding is right: a prompt answered alone gets the answer it got in the batch.
    assert hf_teacher.answer([QUESTIONS[3]])[0].output == answers[3].output


def test_hf_teacher_fails_only_the_prompt_that_does_not_fit_the_context(
    tiny_model_dir: Path, single_torch_thread: None
) -> None:
    limit = PRESETS["tiny"].max_position_embeddings
    teacher = make_teacher(
        teacher={"backend": "hf", "model": str(tiny_model_dir), "topLogprobs": 0},
        teach={"maxOutputTokens": limit // 2},
        api_key=None,
    )
    too_long = prompt("plus " * limit)
    with pytest.raises(TeacherBatchError) as raised:
        teacher.answer([QUESTIONS[0], too_long])
    assert raised.value.failed_ids == [too_long.id]
    assert raised.value.failures[0].reason is FailureReason.PROMPT_TOO_LONG
    assert [answer.id for answer in raised.value.answered] == [QUESTIONS[0].id]
    assert raised.value.answered[0].top_logprobs is None


def test_hf_teacher_names_a_missing_directory_or_an_uncached_hub_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        make_teacher(
            teacher={"backend": "hf", "model": str(tmp_path / "absent")}, teach={}, api_key=None
        )
    with pytest.raises(ModelNotAvailableError, match="cannot load 'hf://distill-tests/not-cach"):
        make_teacher(
            teacher={"backend": "hf", "model": "hf://distill-tests/not-cached"},
            teach={},
            api_key=None,
        )


def test_openai_client_gets_answers_with_top_logprobs_from_the_local_server(
    api_server: Any, hf_teacher: Any
) -> None:
    server = api_server(api_key=SERVER_KEY)
    teacher = make_teacher(
        teacher=api_teacher("openai", server.url), teach=TEACH, api_key=SERVER_KEY
    )
    try:
        answers = teacher.answer(QUESTIONS)
    finally:
        teacher.close()

    local = {answer.id: answer for answer in hf_teacher.answer(QUESTIONS)}
    for answer in answers:
        assert answer.teacher == f"openai:{SERVED_MODEL}"
        assert answer.output == local[answer.id].output  # same model, same greedy answer
        assert answer.output_tokens == local[answer.id].output_tokens
        assert answer.top_logprobs is not None
        assert [len(position) for position in answer.top_logprobs] == [3] * len(answer.top_logprobs)
        assert answer.top_logprobs[0][0].logprob == pytest.approx(
            local[answer.id].top_logprobs[0][0].logprob, abs=1e-4
        )
    assert teacher.retries == 0


def test_every_prompt_is_answered_through_429s_and_500s_and_the_retries_are_counted(
    api_server: Any,
) -> None:
    faults = FaultPlan(first_429=2, first_500=2, rate_429=0.2, rate_500=0.2, retry_after_seconds=0)
    server = api_server(faults=faults)
    teacher = make_teacher(
        teacher=api_teacher("openai", server.url),
        teach={**TEACH, "concurrency": 2, "maxRequestRetries": 20},
        api_key=None,
        retry=FAST_RETRY,
    )
    try:
        answers = teacher.answer(QUESTIONS)
    finally:
        teacher.close()
    assert {answer.id for answer in answers} == {question.id for question in QUESTIONS}
    assert teacher.retries >= 4


def test_retries_are_bounded_by_max_request_retries(api_server: Any) -> None:
    server = api_server(faults=FaultPlan(rate_429=1.0, retry_after_seconds=0))
    teacher = make_teacher(
        teacher=api_teacher("openai", server.url),
        teach={**TEACH, "maxRequestRetries": 2},
        api_key=None,
        retry=FAST_RETRY,
    )
    try:
        with pytest.raises(TeacherBatchError) as raised:
            teacher.answer(QUESTIONS[:2])
    finally:
        teacher.close()
    assert raised.value.answered == []
    assert {f.reason for f in raised.value.failures} == {FailureReason.RATE_LIMITED}
    assert [f.attempts for f in raised.value.failures] == [3, 3]
    assert teacher.retries == 4


def test_a_server_that_is_down_yields_per_prompt_failures_not_a_crash() -> None:
    endpoint = f"http://127.0.0.1:{unused_port()}/v1"
    teacher = make_teacher(
        teacher=api_teacher("openai", endpoint),
        teach={**TEACH, "maxRequestRetries": 1},
        api_key="any",
        retry=FAST_RETRY,
    )
    try:
        with pytest.raises(TeacherBatchError) as raised:
            teacher.answer(QUESTIONS[:3])
    finally:
        teacher.close()
    assert sorted(raised.value.failed_ids) == sorted(q.id for q in QUESTIONS[:3])
    for failure in raised.value.failures:
        assert failure.reason is FailureReason.CONNECTION_ERROR
        assert "Connect" in failure.message and failure.attempts == 2


def test_anthropic_sdk_gets_text_and_no_logprobs_from_the_messages_api(api_server: Any) -> None:
    server = api_server(api_key=SERVER_KEY)
    teacher = make_teacher(
        teacher=api_teacher("anthropic", server.root), teach=TEACH, api_key=SERVER_KEY
    )
    questions = [prompt("What is 1 plus 1?", system="Answer with a number.")]
    try:
        [answer] = teacher.answer(questions)
    finally:
        teacher.close()
    assert answer.teacher == f"anthropic:{SERVED_MODEL}"
    assert answer.finish_reason in ("end_turn", "max_tokens")
    assert 0 < answer.output_tokens <= TEACH["maxOutputTokens"]
    assert answer.top_logprobs is None and answer.tokenizer is None


def test_the_server_refuses_requests_without_its_key(api_server: Any) -> None:
    server = api_server(api_key=SERVER_KEY)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.url}/models", timeout=10)
    assert refused.value.code == 401
    authorized = urllib.request.Request(
        f"{server.url}/models", headers={"Authorization": f"Bearer {SERVER_KEY}"}
    )
    with urllib.request.urlopen(authorized, timeout=10) as response:
        assert json.load(response)["data"][0]["id"] == SERVED_MODEL

    teacher = make_teacher(
        teacher=api_teacher("openai", server.url), teach=TEACH, api_key="wrong", retry=FAST_RETRY
    )
    try:
        with pytest.raises(TeacherBatchError) as raised:
            teacher.answer(QUESTIONS[:1])
    finally:
        teacher.close()
    assert raised.value.failures[0].reason is FailureReason.AUTH_ERROR
    assert teacher.retries == 0  # a wrong key is not retried


def test_reasoning_and_tool_calls_are_captured_as_structured_records() -> None:
    import anthropic.types
    import openai.types.chat

    completion = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "add the numbers",
                        "tool_calls": [
                            {
                                "id": "t1",
                                "type": "function",
                                "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                            }
                        ],
                    },
                }
            ],
        }
    )
    openai_teacher = make_teacher(
        teacher=api_teacher("openai", "http://127.0.0.1:1/v1"), teach=TEACH, api_key="k"
    )
    record = openai_teacher.to_record(QUESTIONS[0], completion)
    openai_teacher.close()
    assert record.reasoning == "add the numbers" and record.output == ""
    assert record.tool_calls == [{"id": "t1", "name": "add", "arguments": {"a": 1, "b": 2}}]
    assert record.top_logprobs is None  # asked for, but the endpoint sent none

    message = anthropic.types.Message.model_validate(
        {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 5},
            "content": [
                {"type": "thinking", "thinking": "use the tool", "signature": "s"},
                {"type": "text", "text": "Let me add."},
                {"type": "tool_use", "id": "t2", "name": "add", "input": {"a": 1}},
            ],
        }
    )
    anthropic_teacher = make_teacher(
        teacher=api_teacher("anthropic", "http://127.0.0.1:1"), teach=TEACH, api_key="k"
    )
    record = anthropic_teacher.to_record(QUESTIONS[0], message)
    anthropic_teacher.close()
    assert (record.output, record.reasoning) == ("Let me add.", "use the tool")
    assert record.tool_calls == [{"id": "t2", "name": "add", "arguments": {"a": 1}}]
    assert record.finish_reason == "tool_use" and record.output_tokens == 5
