"""kopf wiring only: each project gets one reconcile loop (a daemon); events wake it.

A daemon per project serialises its passes without locks, and sleeps exactly as long
as the machine asked (a job poll, a retry backoff) instead of on a fixed timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from distill_operator import api
from distill_operator.errors import TransientError
from distill_operator.kube import Kube, load_api_client
from distill_operator.reconciler import (
    OperatorSettings,
    Runtime,
    reconcile_project,
    stop_project_jobs,
)
from distill_operator.telemetry import OperatorMetrics, about_project

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
FINALIZER = "distill.dev/finalizer"
FINALIZER_WAIT_TICKS = 100  # of 50 ms: kopf adds it within a watch event's round trip


class ApiRetryDelays:
    """kopf's delays between tries of an API request: its own first few, then every
    ``steady_s`` for as long as the API server is away. kopf's default gives up after
    about a minute, and a watch that gives up stops the operator; a restarting or
    upgrading API server can take longer. Re-iterable: each request starts afresh."""

    def __init__(self, *, first: tuple[float, ...] = (1, 1, 2, 3, 5), steady_s: float = 10):
        self.first, self.steady_s = first, steady_s

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.first, itertools.repeat(self.steady_s))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings = OperatorSettings.from_env()
    # Every API, Ray and store call runs in a thread (asyncio.to_thread): asyncio's
    # default pool (CPUs + 4 threads) would queue a thousand projects' passes behind a
    # handful of slow calls. Async, so the loop set is kopf's own.
    workers = operator_settings.api_workers
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="distill")
    asyncio.get_running_loop().set_default_executor(pool)
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING  # our own events tell the story, not kopf's
    settings.watching.server_timeout = 60
    settings.networking.error_backoffs = ApiRetryDelays()
    # The metrics `python -m distill_operator` serves, handed in through the memo.
    metrics = memo.get("metrics") or OperatorMetrics()
    memo.runtime = Runtime(
        kube=Kube(load_api_client(connections=workers)),
        settings=operator_settings,
        metrics=metrics,
    )


def _wake_event(memo: kopf.Memo) -> asyncio.Event:
    if "wake" not in memo:
        memo.wake = asyncio.Event()
    event: asyncio.Event = memo.wake
    return event


@kopf.on.event(*RESOURCE)
def wake(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new or changed spec (a new generation): reconcile now rather than at the next
    poll. A raw-event handler, so kopf keeps no state for it in the object (a create or
    update handler costs a PATCH per change, which races the project's status write)."""
    generation = body.get("metadata", {}).get("generation")
    if memo.get("generation_seen") != generation:
        memo.generation_seen = generation
        _wake_event(memo).set()


async def _finalizer_in_place(body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
    """Wait (briefly) for kopf's finalizer on a new project: a status written before it
    lands is refused as stale (409) and costs a read and a write more."""
    for _ in range(FINALIZER_WAIT_TICKS):
        if FINALIZER in (body.get("metadata", {}).get("finalizers") or []) or stopped:
            return
        await asyncio.sleep(0.05)


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def run_project(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    wake_up = _wake_event(memo)
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""

    def post_event(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    project = f"{namespace}/{name}"
    await _finalizer_in_place(body, stopped)
    with about_project(project, uid=body.metadata.uid or ""), runtime.metrics.tracking(project):
        while not stopped:
            wake_up.clear()
            try:
                delay = await reconcile_project(
                    runtime, namespace=namespace, name=name, post_event=post_event, logger=logger
                )
            except TransientError as error:
                logger.warning("retrying in %ss: %s", error.delay, error)
                delay = error.delay
            if delay is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake_up.wait(), timeout=max(delay, 0.05))


@kopf.on.delete(*RESOURCE)
async def stop_jobs(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Stop the project's running job before the project goes."""
    try:
        stopped = await stop_project_jobs(memo.runtime, dict(body))
    except TransientError as error:
        # kopf's own retry of an unknown error waits a minute; ours says how long.
        raise kopf.TemporaryError(str(error), delay=error.delay) from error
    if stopped:
        logger.info("stopped %s", ", ".join(stopped))
