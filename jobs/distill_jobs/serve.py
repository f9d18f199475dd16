"""Launch's router (``python -m distill_jobs.serve --input URI``): serve until stopped.

The input's spec is ``{"teacher": spec.teacher, "router": spec.launch.router,
"maxOutputTokens": spec.teach.maxOutputTokens}``; the student and the rollout step come
from the project's ``routing.json``, polled (see :mod:`distill_jobs.serving`). Once
listening, the router writes where (:class:`~distill_jobs.contract.Endpoint`) to
``endpoint.json`` in its stage directory, and serves until SIGTERM (Ray's job stop, a
pod's end) or SIGINT, then exits 0. It writes no result while it serves: its only
result is a failure to start (a teacher that cannot be made, an address that cannot be
bound), written with the field to fix, and exit status 1.

``python -m distill_jobs.serve --input URI [--poll-seconds 1] [--max-tokens 512] ...``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from distill_jobs.contract import (
    ENDPOINT_FILE,
    ROUTER_TOKEN_ENV,
    Endpoint,
    StageInput,
    write_model,
    write_result,
)
from distill_jobs.runner import load_input
from distill_jobs.serving import Router, RouterSettings, open_router_teacher
from distill_jobs.upstream import StageFailure

log = logging.getLogger("distill_jobs.serve")
# A bound address that is every interface, which is no address a client can use.
ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})
ADVERTISE_ENV = ("DISTILL_ADVERTISE_HOST", "POD_IP")


def advertised_host(bound: str, *, environ: Mapping[str, str]) -> str:
    """The host a client reaches the router at: the bound one, unless it bound every
    interface; then DISTILL_ADVERTISE_HOST, POD_IP, else this host's address."""
    if bound not in ANY_ADDRESS:
        return bound
    for name in ADVERTISE_ENV:
        if environ.get(name):
            return environ[name]
    return this_host_address()


def this_host_address() -> str:
    """The address of the interface that routes outwards (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:  # no route at all: the name's address is the best left
            return socket.gethostbyname(socket.gethostname())


def client_token(spec: Mapping[str, Any], *, environ: Mapping[str, str]) -> str | None:
    """The bearer token clients must send, when ``spec.router`` names one.

    Raises:
        StageFailure: ``RouterTokenMissing`` when it names one the environment lacks: a
            router that was asked to check tokens never serves without.
    """
    ref = (spec.get("router") or {}).get("tokenSecretRef")
    if not ref:
        return None
    token = environ.get(ROUTER_TOKEN_ENV, "")
    if not token:
        raise StageFailure(
            "RouterTokenMissing",
            f"spec.launch.router.tokenSecretRef: the router got no token ({ROUTER_TOKEN_ENV} "
            f"is empty); check that Secret {ref.get('name')!r} has key {ref.get('key')!r}",
        )
    return token


def endpoint_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen_address(spec: Mapping[str, Any]) -> tuple[str, int]:
    """``spec.router``'s host and port.

    Raises:
        StageFailure: ``InvalidInput`` when they are not a host and a port.
    """
    router = spec.get("router") or {}
    host, port = router.get("host", "127.0.0.1"), router.get("port", 0)
    if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise StageFailure(
            "InvalidInput",
            f"spec.launch.router: host {host!r} and port {port!r} are not an address to "
            "listen on; give a host name or IP and a port from 0 (any free one) to 65535",
        )
    return host, port


async def serve(
    stage_input: StageInput,
    *,
    settings: RouterSettings,
    environ: Mapping[str, str],
    stopping: asyncio.Event | None = None,
) -> None:
    """Serve until ``stopping`` is set (by default: SIGTERM or SIGINT).

    Raises:
        StageFailure: the router cannot start.
    """
    teacher_spec = stage_input.spec.get("teacher")
    if not isinstance(teacher_spec, dict):
        raise StageFailure("InvalidInput", "spec.teacher: the router's input names no teacher")
    host, port = listen_address(stage_input.spec)
    settings = dataclasses.replace(settings, token=client_token(stage_input.spec, environ=environ))
    teacher = open_router_teacher(
        teacher_spec,
        environ=environ,
        device=settings.device,
        max_batch=settings.max_batch,
        window_seconds=settings.batch_window_seconds,
    )
    router = Router(
        teacher=teacher,
        artifacts_uri=stage_input.artifacts_uri,
        project=stage_input.project,
        settings=settings,
    )
    try:
        port = await router.start(host=host, port=port)
    except OSError as error:
        await router.stop()
        raise StageFailure(
            "RouterCannotBind",
            f"spec.launch.router: cannot listen on {host}:{port} ({error.strerror or error}); "
            "choose a free port (0 picks one) and an address of the node the router runs on",
        ) from None
    try:
        url = endpoint_url(advertised_host(host, environ=environ), port)
        endpoint_uri = f"{stage_input.stage_dir()}/{ENDPOINT_FILE}"
        write_model(Endpoint(url=url, attempt=stage_input.attempt), endpoint_uri)
        log.info("serving %s at %s (endpoint in %s)", stage_input.project, url, endpoint_uri)
        await _until_stopped(stopping)
        log.info("stopping")
    finally:
        await router.stop()


async def _until_stopped(stopping: asyncio.Event | None) -> None:
    if stopping is None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the router of ``--input`` until SIGTERM (0), or write why it cannot start (1)."""
    defaults = RouterSettings()
    parser = argparse.ArgumentParser(description="Launch's router: student and teacher.")
    parser.add_argument("--input", required=True, help="URI of the StageInput JSON")
    parser.add_argument("--poll-seconds", type=float, default=defaults.poll_seconds)
    parser.add_argument("--retry-load-seconds", type=float, default=defaults.retry_load_seconds)
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="output limit of a request that names none (default: the input's "
        f"maxOutputTokens, the teacher's limit in Teach, else {defaults.default_max_tokens})",
    )
    parser.add_argument("--max-tokens-limit", type=int, default=defaults.max_tokens_limit)
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch)
    parser.add_argument("--device", default=None, help="where local models run (default: a GPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stage_input = load_input(args.input)
    # The student learnt answers as long as the teacher's in Teach: no longer by default.
    trained_limit = stage_input.spec.get("maxOutputTokens")
    if not isinstance(trained_limit, int) or isinstance(trained_limit, bool):
        trained_limit = defaults.default_max_tokens
    settings = RouterSettings(
        poll_seconds=args.poll_seconds,
        retry_load_seconds=args.retry_load_seconds,
        default_max_tokens=min(args.max_tokens or trained_limit, args.max_tokens_limit),
        max_tokens_limit=args.max_tokens_limit,
        max_batch=args.max_batch,
        device=args.device,
    )
    try:
        asyncio.run(serve(stage_input, settings=settings, environ=os.environ))
    except StageFailure as failure:
        write_result(failure.result(stage_input), stage_input.result_uri())
        print(f"{stage_input.stage}: {failure.reason}: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
