"""The router's OpenAI chat-completions wire format: requests in, completions out.

Message handling is :mod:`distill_jobs.apiserver`'s (:func:`chat_conversation`,
:class:`ApiError`), so the router and the local API server read a request alike. A
completion carries one extra top-level object, ``distill``: who answered, the student's
confidence, whether it fell back, and the routing revision it was served under.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distill_jobs.apiserver import ApiError, chat_conversation

REQUEST_ID_HEADER = "X-Request-Id"
SERVED_BY_HEADER = "X-Distill-Served-By"


@dataclass(frozen=True)
class ChatRequest:
    """What the router needs of a chat-completions request.

    Attributes:
        conversation: the turns as plain ``{role, content}`` messages.
        max_tokens: the output limit, for whichever model answers.
        key: a stable id of the caller or request (``user``, else ``X-Request-Id``):
            a canary sends the same key the same way every time.
    """

    conversation: list[dict[str, Any]]
    max_tokens: int
    key: str | None


@dataclass(frozen=True)
class Answer:
    """One model's answer to a request.

    Attributes:
        text: the answer.
        finish_reason: ``stop`` or ``length`` (as OpenAI says them).
        prompt_tokens: the prompt in the answering model's tokens (0 when an API
            teacher does not say).
        output_tokens: tokens generated (0 when an API teacher does not say).
        model: the name of the model that answered.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    model: str


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def parse_chat(
    body: Any, *, headers: Mapping[str, str], default_max_tokens: int, max_tokens_limit: int
) -> ChatRequest:
    """The request in ``body``, checked.

    Raises:
        ApiError: 400 for anything the router cannot answer as asked.
    """
    if not isinstance(body, dict):
        raise invalid("body must be a JSON object")
    if body.get("stream"):
        raise invalid("stream is not supported")
    if body.get("n") not in (None, 1):
        raise invalid("only n=1 is supported")
    conversation = chat_conversation(body)
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is None:
        limit = default_max_tokens
    # bool is an int to Python, never to a client.
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_tokens_limit:
        raise invalid(f"max_tokens must be an integer from 1 to {max_tokens_limit}, got {limit!r}")
    user = body.get("user")
    key = user if isinstance(user, str) and user else headers.get(REQUEST_ID_HEADER) or None
    return ChatRequest(conversation=conversation, max_tokens=limit, key=key)


def completion_json(answer: Answer, *, distill: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object of ``answer``, with the ``distill`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.prompt_tokens + answer.output_tokens,
        },
        "distill": dict(distill),
    }


def error_json(error: ApiError) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": error.message, "type": error.kind, "code": error.status}}
