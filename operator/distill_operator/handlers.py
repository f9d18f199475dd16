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
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "distill.dev/finalizer"
    settings.posting.level = logging.WARNING  # our own events tell the story, not kopf's
    settings.watching.server_timeout = 60
    settings.networking.error_backoffs = ApiRetryDelays()
    # The metrics `python -m distill_operator` serves, handed in through the memo.
    metrics = memo.get("metrics") or OperatorMetrics()
    memo.runtime = Runtime(
        kube=Kube(load_api_client()), settings=OperatorSettings.from_env(), metrics=metrics
    )


def _wake_event(memo: kopf.Memo) -> asyncio.Event:
    if "wake" not in memo:
        memo.wake = asyncio.Event()
    event: asyncio.Event = memo.wake
    return event


@kopf.on.update(*RESOURCE, field="spec")
@kopf.on.create(*RESOURCE)
def wake(memo: kopf.Memo, **_: Any) -> None:
    """A new or changed spec: reconcile now rather than at the next poll."""
    _wake_event(memo).set()


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
