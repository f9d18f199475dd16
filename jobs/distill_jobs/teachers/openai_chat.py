"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint.

OpenAI itself, vLLM, SGLang, gateways, and :mod:`distill_jobs.apiserver` all speak it.
Top-k logprobs are asked for when ``topLogprobs`` > 0 and used when the endpoint returns
them; an endpoint that returns none still yields answers (sequence-level distillation).
"""

from __future__ import annotations

import json
from typing import Any

import openai

from distill_jobs.records import PromptRecord, TeacherRecord, TokenLogprob
from distill_jobs.teachers.remote import BadResponseError, RemoteTeacher, Verdict, sdk_verdict

# Servers disagree on where a reasoning trace goes: vLLM/SGLang (reasoning_content),
# OpenRouter and newer vLLM (reasoning).
REASONING_FIELDS = ("reasoning_content", "reasoning")


class OpenAITeacher(RemoteTeacher):
    """A teacher behind ``POST {endpoint}/chat/completions``."""

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.settings.endpoint,
            # Endpoints without auth (a local vLLM) still need a non-empty key for the SDK.
            api_key=self._api_key or "unused",
            max_retries=0,  # retries are ours: counted and bounded by maxRequestRetries
            timeout=self.settings.request_timeout_seconds,
        )

    def _verdict(self, error: Exception) -> Verdict | None:
        return sdk_verdict(
            error,
            status_error=openai.APIStatusError,
            timeout_error=openai.APITimeoutError,
            connection_error=openai.APIConnectionError,
        )

    async def _request(self, record: PromptRecord) -> TeacherRecord:
        k = self.settings.top_logprobs
        logprobs: dict[str, Any] = {"logprobs": True, "top_logprobs": k} if k > 0 else {}
        completion = await self._client.chat.completions.create(
            model=self.settings.model,
            messages=record.messages,
            # max_completion_tokens, not the deprecated max_tokens: reasoning models
            # refuse the latter; vLLM and the local server accept both.
            max_completion_tokens=self.settings.max_output_tokens,
            temperature=self.settings.temperature,
            **logprobs,
        )
        return self.to_record(record, completion)

    def to_record(self, record: PromptRecord, completion: Any) -> TeacherRecord:
        """The TeacherRecord of a ``ChatCompletion`` answering ``record``."""
        if not completion.choices:
            raise BadResponseError(f"completion {completion.id} has no choices")
        choice = completion.choices[0]
        message = choice.message
        extra = message.model_extra or {}
        reasoning = next((extra[f] for f in REASONING_FIELDS if extra.get(f)), None)
        usage = completion.usage
        return TeacherRecord(
            id=record.id,
            messages=record.messages,
            slice=record.slice,
            reference=record.reference,
            output=message.content or "",
            reasoning=reasoning,
            tool_calls=[tool_call_record(call) for call in message.tool_calls or []],
            top_logprobs=top_logprobs(choice) if self.settings.top_logprobs > 0 else None,
            teacher=self.name,
            tokenizer=self.tokenizer_id,
            finish_reason=choice.finish_reason,
            output_tokens=usage.completion_tokens if usage is not None else None,
            input_tokens=usage.prompt_tokens if usage is not None else None,
        )


def tool_call_record(call: Any) -> dict[str, Any]:
    """``{id, name, arguments}``, the arguments parsed when they are JSON."""
    function = getattr(call, "function", None)
    raw = getattr(function, "arguments", None)
    try:
        arguments: Any = json.loads(raw) if isinstance(raw, str) else raw
    except (json.JSONDecodeError, RecursionError):  # torn, or nested too deep to parse
        arguments = raw  # kept as sent: a verifier may want to see the malformed call
    return {"id": call.id, "name": getattr(function, "name", None), "arguments": arguments}


def top_logprobs(choice: Any) -> list[list[TokenLogprob]] | None:
    """Per output position, the candidates the endpoint returned (None if it sent none)."""
    content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
    if not content:
        return None
    return [
        [
            TokenLogprob(token=candidate.token, logprob=candidate.logprob)
            for candidate in position.top_logprobs or []
        ]
        for position in content
    ]
