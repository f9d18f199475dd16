"""The ``anthropic`` backend: the Messages API.

It returns no logprobs, so its records carry ``top_logprobs=None`` and the student is
trained on sequences. Text blocks become the output, ``thinking`` blocks the reasoning
trace, ``tool_use`` blocks structured tool calls. The API has no sampling controls
(``teach.temperature`` is not sent).
"""

from __future__ import annotations

from typing import Any

import anthropic

from distill_jobs.records import PromptRecord, TeacherRecord
from distill_jobs.teachers.remote import BadResponseError, RemoteTeacher, Verdict, sdk_verdict


class AnthropicTeacher(RemoteTeacher):
    """A teacher behind ``POST {endpoint or api.anthropic.com}/v1/messages``."""

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.settings.endpoint,  # None: the SDK's default
            max_retries=0,  # retries are ours: counted and bounded by maxRequestRetries
            timeout=self.settings.request_timeout_seconds,
        )

    def _verdict(self, error: Exception) -> Verdict | None:
        return sdk_verdict(
            error,
            status_error=anthropic.APIStatusError,
            timeout_error=anthropic.APITimeoutError,
            connection_error=anthropic.APIConnectionError,
        )

    async def _request(self, record: PromptRecord) -> TeacherRecord:
        system, messages = split_system(record.messages)
        optional: dict[str, Any] = {"system": system} if system else {}
        message = await self._client.messages.create(
            model=self.settings.model,
            max_tokens=self.settings.max_output_tokens,
            messages=messages,
            # No temperature: the Messages API of this SDK (2.12) has no sampling
            # controls, so teach.temperature does not apply to this backend.
            **optional,
        )
        return self.to_record(record, message)

    def to_record(self, record: PromptRecord, message: Any) -> TeacherRecord:
        """The TeacherRecord of a Messages API ``Message`` answering ``record``."""
        texts, thoughts, tool_calls = [], [], []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "thinking":
                thoughts.append(block.thinking)
            elif block.type == "tool_use":
                tool_calls.append({"id": block.id, "name": block.name, "arguments": block.input})
        if not message.content and message.stop_reason is None:
            raise BadResponseError(f"message {message.id} has no content and no stop reason")
        return TeacherRecord(
            id=record.id,
            messages=record.messages,
            slice=record.slice,
            reference=record.reference,
            output="".join(texts),
            reasoning="\n".join(thoughts) or None,
            tool_calls=tool_calls,
            top_logprobs=None,
            teacher=self.name,
            tokenizer=None,
            finish_reason=message.stop_reason,
            output_tokens=message.usage.output_tokens if message.usage else None,
            input_tokens=message.usage.input_tokens if message.usage else None,
        )


def split_system(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The Messages API takes the system prompt apart from the turns; join system turns."""
    system = [m for m in messages if m.get("role") == "system"]
    turns = [
        {"role": m["role"], "content": m.get("content") or ""}
        for m in messages
        if m.get("role") != "system"
    ]
    return "\n\n".join(str(m.get("content") or "") for m in system), turns
