"""A local causal LM served over the OpenAI and Anthropic HTTP APIs.

``POST /v1/chat/completions`` (with ``logprobs``/``top_logprobs`` in OpenAI's shape),
``GET /v1/models`` and ``POST /v1/messages`` (Anthropic's Messages API), enough for the
real ``openai`` and ``anthropic`` SDKs. Concurrent requests are grouped into one
batched ``generate`` (:class:`Batcher`). It is the teacher of tests and demos, and the
seed of Launch's router.

Faults can be injected deterministically (:class:`FaultPlan`: 429s with Retry-After and
500s) and a key can be required (401 without it). It binds 127.0.0.1 by default.

``python -m distill_jobs.apiserver --model DIR [--port 0] [--api-key-env VAR]``
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from distill_jobs.teachers.generation import Batcher, Generation, GenerationRequest, LocalGenerator

CHAT_PATH, MESSAGES_PATH, MODELS_PATH = "/v1/chat/completions", "/v1/messages", "/v1/models"
GENERATION_PATHS = frozenset({CHAT_PATH, MESSAGES_PATH})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class FaultPlan:
    """Which generation requests are refused, by request number (1-based).

    The first ``first_429`` requests get 429, the next ``first_500`` get 500; after
    those, each request gets 429 with probability ``rate_429`` or else 500 with
    probability ``rate_500``, decided by ``(seed, number)`` alone, so a plan refuses
    the same request numbers on every run.
    """

    first_429: int = 0
    first_500: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    retry_after_seconds: float = 1.0
    seed: int = 0

    def status_for(self, number: int) -> int | None:
        """The error status for request ``number``, or None to answer it."""
        if number <= self.first_429:
            return 429
        if number <= self.first_429 + self.first_500:
            return 500
        draw = random.Random(f"{self.seed}:{number}").random()
        if draw < self.rate_429:
            return 429
        return 500 if draw < self.rate_429 + self.rate_500 else None


class ApiError(Exception):
    """A request refused with an HTTP status and an API error type."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class ApiServer:
    """OpenAI- and Anthropic-compatible HTTP API over a :class:`LocalGenerator`.

    Args:
        generator: the model that answers.
        model_name: the model id clients name (``GET /v1/models`` lists it).
        api_key: when set, requests without it (Bearer or x-api-key) get 401.
        faults: requests to refuse on purpose.
        max_batch: most requests in one generate call.
        batch_window_seconds: how long a request waits for others to batch with.
        max_top_logprobs: largest top_logprobs accepted (OpenAI allows 20).
        default_max_tokens: output limit when a chat request names none.
    """

    def __init__(
        self,
        *,
        generator: LocalGenerator,
        model_name: str,
        api_key: str | None = None,
        faults: FaultPlan | None = None,
        max_batch: int = 16,
        batch_window_seconds: float = 0.005,
        max_top_logprobs: int = 20,
        default_max_tokens: int = 256,
    ) -> None:
        self.generator = generator
        self.model_name = model_name
        self.faults = faults or FaultPlan()
        self.port: int | None = None
        self._api_key = api_key
        self._max_batch = max_batch
        self._batch_window = batch_window_seconds
        self._max_top = max_top_logprobs
        self._default_max_tokens = default_max_tokens
        self._numbers = itertools.count(1)  # generation requests seen, for the fault plan
        self._batcher: Batcher | None = None
        self._runner: web.AppRunner | None = None
        self._created = int(time.time())

    def app(self) -> web.Application:
        """The aiohttp application (routes and the auth/fault middleware)."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/health", self._health)
        app.router.add_get(MODELS_PATH, self._models)
        app.router.add_post(CHAT_PATH, self._chat)
        app.router.add_post(MESSAGES_PATH, self._messages)
        return app

    async def start(
        self, *, host: str = "127.0.0.1", port: int = 0, access_log: bool = False
    ) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        self._batcher = Batcher(
            generator=self.generator, max_batch=self._max_batch, window_seconds=self._batch_window
        )
        # aiohttp's default access logger, or none (tests and benchmarks stay quiet).
        quiet: dict[str, Any] = {} if access_log else {"access_log": None}
        self._runner = web.AppRunner(self.app(), **quiet)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        await web.SockSite(self._runner, listener).start()
        self.port = int(listener.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._batcher is not None:
            await self._batcher.close()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path != "/health" and not self._authorized(request):
                raise ApiError(401, "authentication_error", "missing or invalid API key")
            if request.path in GENERATION_PATHS:
                status = self.faults.status_for(next(self._numbers))
                if status == 429:
                    raise ApiError(429, "rate_limit_error", "rate limited (injected fault)")
                if status is not None:
                    raise ApiError(status, "api_error", "server error (injected fault)")
            return await handler(request)
        except ApiError as error:
            return self._error_response(request, error)
        except (TypeError, ValueError) as error:  # a field of the wrong type or value
            invalid = ApiError(400, "invalid_request_error", f"invalid request: {error}")
            return self._error_response(request, invalid)

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        offered = request.headers.get("x-api-key") or bearer
        return hmac.compare_digest(offered.encode(), self._api_key.encode())

    def _error_response(self, request: web.Request, error: ApiError) -> web.Response:
        headers = (
            {"Retry-After": f"{self.faults.retry_after_seconds:g}"} if error.status == 429 else {}
        )
        if request.path == MESSAGES_PATH:
            body: dict[str, Any] = {
                "type": "error",
                "error": {"type": error.kind, "message": error.message},
            }
        else:
            body = {"error": {"message": error.message, "type": error.kind, "code": error.status}}
        return web.json_response(body, status=error.status, headers=headers)

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.model_name})

    async def _models(self, _: web.Request) -> web.Response:
        model = {"id": self.model_name, "object": "model", "created": self._created}
        return web.json_response({"object": "list", "data": [{**model, "owned_by": "distill"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body.get("stream"):
            raise ApiError(400, "invalid_request_error", "stream is not supported")
        if int(body.get("n") or 1) != 1:
            raise ApiError(400, "invalid_request_error", "only n=1 is supported")
        want_logprobs = bool(body.get("logprobs"))
        top_k = int(body.get("top_logprobs") or 0) if want_logprobs else 0
        if not 0 <= top_k <= self._max_top:
            raise ApiError(400, "invalid_request_error", f"top_logprobs must be 0..{self._max_top}")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        generation = await self._generate(
            body, max_tokens=int(limit or self._default_max_tokens), top_k=top_k
        )
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": generation.text},
            "logprobs": {"content": self._logprob_content(generation)} if want_logprobs else None,
            "finish_reason": generation.finish_reason,
        }
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.output_tokens,
            "total_tokens": generation.prompt_tokens + generation.output_tokens,
        }
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def _messages(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if "max_tokens" not in body:
            raise ApiError(400, "invalid_request_error", "max_tokens: field required")
        generation = await self._generate(body, max_tokens=int(body["max_tokens"]), top_k=0)
        return web.json_response(
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "type": "message",
                "role": "assistant",
                "model": self.model_name,
                "content": [{"type": "text", "text": generation.text}],
                "stop_reason": "end_turn" if generation.finish_reason == "stop" else "max_tokens",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": generation.prompt_tokens,
                    "output_tokens": generation.output_tokens,
                },
            }
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except json.JSONDecodeError as error:
            raise ApiError(400, "invalid_request_error", f"body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request_error", "body must be a JSON object")
        if body.get("model") != self.model_name:
            raise ApiError(404, "not_found_error", f"model {body.get('model')!r} is not served")
        return body

    async def _generate(self, body: dict[str, Any], *, max_tokens: int, top_k: int) -> Generation:
        conversation = chat_conversation(body)
        prompt_tokens = self.generator.prompt_lengths(conversations=[conversation])[0]
        limit = self.generator.max_positions
        if max_tokens < 1 or (limit is not None and prompt_tokens + max_tokens > limit):
            raise ApiError(
                400,
                "invalid_request_error",
                f"{prompt_tokens} prompt tokens + max tokens {max_tokens} exceed context {limit}",
            )
        request = GenerationRequest(
            conversation=conversation,
            max_new_tokens=max_tokens,
            temperature=float(body.get("temperature", 1.0)),
            top_k=top_k,
        )
        assert self._batcher is not None, "start() the server first"
        try:
            return await self._batcher.submit(request)
        except Exception as error:
            raise ApiError(500, "api_error", f"generation failed: {error}") from error

    def _logprob_content(self, generation: Generation) -> list[dict[str, Any]]:
        positions = generation.top_logprobs or [[] for _ in generation.token_ids]
        text = self.generator.token_text
        return [
            {
                "token": text(token_id),
                "logprob": logprob,
                "bytes": list(text(token_id).encode()),
                "top_logprobs": [
                    {"token": c.token, "logprob": c.logprob, "bytes": list(c.token.encode())}
                    for c in candidates
                ],
            }
            for token_id, logprob, candidates in zip(
                generation.token_ids, generation.token_logprobs, positions, strict=True
            )
        ]


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts/blocks of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def chat_conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's turns as plain ``{role, content}`` messages (Anthropic's ``system``
    first, as a system turn)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalid_request_error", "messages must be a non-empty list")
    system = text_of(body.get("system"))
    turns = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise ApiError(400, "invalid_request_error", "every message needs a role")
        turns.append({"role": message["role"], "content": text_of(message.get("content"))})
    return turns


class ServerThread:
    """An :class:`ApiServer` on its own event loop in a thread (tests, benchmarks).

    Use as a context manager; ``url`` is the API base (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(self, server: ApiServer, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server, self.host, self._port = server, host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def root(self) -> str:
        """``http://host:port`` (the Anthropic SDK's base URL)."""
        return f"http://{self.host}:{self.server.port}"

    @property
    def url(self) -> str:
        """``http://host:port/v1`` (the OpenAI SDK's base URL)."""
        return f"{self.root}/v1"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            self.server.start(host=self.host, port=self._port), self._loop
        )
        started.result(timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


async def serve(server: ApiServer, *, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    chosen = await server.start(host=host, port=port, access_log=True)
    print(f"serving {server.model_name} on http://{host}:{chosen}/v1", flush=True)
    await stopping.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m distill_jobs.apiserver``: serve a local model until interrupted."""
    parser = argparse.ArgumentParser(description="Serve a local causal LM over HTTP.")
    parser.add_argument("--model", required=True, help="model directory or hf:// name")
    parser.add_argument("--served-model-name", help="model id clients use (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--api-key-env", help="require the key in this environment variable")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--fail-first-429", type=int, default=0)
    parser.add_argument("--fail-first-500", type=int, default=0)
    parser.add_argument("--fail-rate-429", type=float, default=0.0)
    parser.add_argument("--fail-rate-500", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds, sent on 429")
    parser.add_argument("--fault-seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # access log
    # The key comes from the environment: a command line is visible to every local user.
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    faults = FaultPlan(
        first_429=args.fail_first_429,
        first_500=args.fail_first_500,
        rate_429=args.fail_rate_429,
        rate_500=args.fail_rate_500,
        retry_after_seconds=args.retry_after,
        seed=args.fault_seed,
    )
    server = ApiServer(
        generator=LocalGenerator.load(model=args.model),
        model_name=args.served_model_name or args.model,
        api_key=api_key,
        faults=faults,
        max_batch=args.max_batch,
    )
    asyncio.run(serve(server, host=args.host, port=args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
