"""The router's HTTP server: OpenAI chat completions in front of the student and teacher.

``POST /v1/chat/completions`` (``messages``, ``max_tokens``/``max_completion_tokens``,
``user``; greedy whatever ``temperature`` says, no streaming), ``GET /v1/models``,
``GET /healthz`` (the routing in force, a student that failed to load) and
``GET /metrics`` (Prometheus). A request the router cannot answer as asked gets 400 with
OpenAI's error body; a teacher that does not answer, 502.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from aiohttp import web

from distill_jobs.apiserver import ApiError
from distill_jobs.contract import routing_uri
from distill_jobs.serving.chat import SERVED_BY_HEADER, completion_json, error_json, parse_chat
from distill_jobs.serving.dispatch import Dispatcher
from distill_jobs.serving.live import LiveRouting, LoadStudent
from distill_jobs.serving.local import PromptTooLong
from distill_jobs.serving.metrics import RouterMetrics
from distill_jobs.serving.students import load_generator
from distill_jobs.serving.teacher import RouterTeacher, TeacherFailure
from distill_jobs.teachers.generation import LocalGenerator

log = logging.getLogger(__name__)
CHAT_PATH, MODELS_PATH, HEALTH_PATH, METRICS_PATH = (
    "/v1/chat/completions",
    "/v1/models",
    "/healthz",
    "/metrics",
)
API_PREFIX = "/v1/"  # what a router token guards
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouterSettings:
    """How the router runs (not what it routes: that is ``routing.json``).

    Attributes:
        poll_seconds: how often ``routing.json`` is read.
        retry_load_seconds: how long a student that failed to load is not tried again.
        default_max_tokens: the output limit of a request that names none.
        max_tokens_limit: the largest output limit a request may ask for.
        max_batch: most requests of one local model in one generate call.
        batch_window_seconds: how long a request waits for others to batch with.
        device: where the local models (students, an ``hf`` teacher) run (``cuda``,
            ``cpu``; by default a GPU when there is one).
        token: the bearer token requests to /v1/* must carry; None serves everyone.
    """

    poll_seconds: float = 1.0
    retry_load_seconds: float = 30.0
    default_max_tokens: int = 512
    max_tokens_limit: int = 4096
    max_batch: int = 16
    batch_window_seconds: float = 0.005
    device: str | None = None
    token: str | None = field(default=None, repr=False)


class Router:
    """The router of one project.

    Args:
        teacher: the project's teacher (closed by :meth:`stop`).
        artifacts_uri: the project's artifact store (its ``routing.json`` is polled).
        project: ``namespace/name``; also the model id ``/v1/models`` lists.
        settings: how it runs.
        rng: draws canary places and comparison samples (seed it in tests).
        load_student: loads a student from a ``Routing.student`` URI (blocking).
    """

    def __init__(
        self,
        *,
        teacher: RouterTeacher,
        artifacts_uri: str,
        project: str,
        settings: RouterSettings | None = None,
        rng: random.Random | None = None,
        load_student: LoadStudent | None = None,
    ) -> None:
        self.settings = settings or RouterSettings()
        self.project = project
        self.metrics = RouterMetrics()
        self.teacher = teacher
        self.port: int | None = None
        self.live = LiveRouting(
            uri=routing_uri(artifacts_uri=artifacts_uri, project=project),
            metrics=self.metrics,
            load=load_student or partial(_load_student, device=self.settings.device),
            poll_seconds=self.settings.poll_seconds,
            retry_seconds=self.settings.retry_load_seconds,
            max_batch=self.settings.max_batch,
            window_seconds=self.settings.batch_window_seconds,
        )
        self._dispatcher = Dispatcher(
            teacher=teacher, metrics=self.metrics, rng=rng or random.Random()
        )
        self._runner: web.AppRunner | None = None
        self._watching: asyncio.Task[None] | None = None
        self._created = int(time.time())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorize, self._errors])
        app.router.add_post(CHAT_PATH, self._chat)
        app.router.add_get(MODELS_PATH, self._models)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(METRICS_PATH, self._metrics)
        return app

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: any free port) and start polling the routing.

        Returns:
            The port.

        Raises:
            OSError: the address cannot be bound (taken, or not this host's).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
        except OSError:
            listener.close()
            raise
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, listener).start()
        self.port = int(listener.getsockname()[1])
        self._watching = asyncio.create_task(self.live.run())
        return self.port

    async def stop(self) -> None:
        """Stop listening (requests in flight are answered), then close every model."""
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self._dispatcher.close()
        await self.live.close()
        await self.teacher.close()

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With a token set, the OpenAI API needs it; probes and metrics do not."""
        token = self.settings.token
        if token is None or not request.path.startswith(API_PREFIX):
            return await handler(request)
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return await handler(request)
        refused = ApiError(401, "invalid_request_error", "a valid bearer token is required")
        return web.json_response(
            error_json(refused), status=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # aiohttp's own: unknown path, wrong method
        except ApiError as error:
            return web.json_response(error_json(error), status=error.status)
        except PromptTooLong as error:
            refused = ApiError(400, "invalid_request_error", str(error))
            return web.json_response(error_json(refused), status=400)
        except TeacherFailure as error:
            failed = ApiError(502, "api_error", f"the teacher did not answer: {error}")
            return web.json_response(error_json(failed), status=502)
        except Exception:  # a bug: logged, and still an OpenAI-shaped answer
            log.exception("%s %s failed", request.method, request.path)
            broken = ApiError(500, "api_error", "the router failed; see its log")
            return web.json_response(error_json(broken), status=500)

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, "invalid_request_error", f"body is not JSON: {error}") from None
        chat = parse_chat(
            body,
            headers=request.headers,
            default_max_tokens=self.settings.default_max_tokens,
            max_tokens_limit=self.settings.max_tokens_limit,
        )
        with self.live.hold() as in_force:
            served = await self._dispatcher.complete(chat, in_force)
        return web.json_response(
            completion_json(served.answer, distill=served.distill_json()),
            headers={SERVED_BY_HEADER: served.served_by},
        )

    async def _models(self, _: web.Request) -> web.Response:
        model = {"id": self.project, "object": "model", "created": self._created}
        return web.json_response({"object": "list", "data": [{**model, "owned_by": "distill"}]})

    async def _health(self, _: web.Request) -> web.Response:
        routing = self.live.health()
        status = "degraded" if routing["problems"] else "ok"
        return web.json_response({"status": status, "teacher": self.teacher.name, **routing})

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": self.metrics.content_type}
        )


def _load_student(uri: str, *, device: str | None) -> LocalGenerator:
    return load_generator(uri=uri, device=device)


class RouterThread:
    """A :class:`Router` on its own event loop in a thread (tests, benchmarks).

    Use as a context manager; ``url`` is the base URL (``http://127.0.0.1:PORT``).
    """

    def __init__(self, router: Router, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.router, self.host, self._port = router, host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.router.port}"

    def __enter__(self) -> RouterThread:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            self.router.start(host=self.host, port=self._port), self._loop
        )
        try:
            started.result(timeout=30)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.router.stop(), self._loop).result(timeout=60)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
