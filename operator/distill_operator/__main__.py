"""``python -m distill_operator``: run the operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from typing import Any

import kopf

from distill_operator import handlers
from distill_operator.reconciler import DRY_RUN_ENV
from distill_operator.telemetry import LOG_FORMATS, OperatorMetrics, configure_logging

MAX_PRIORITY = 32767
"""Peers draw a priority in 0..MAX_PRIORITY (kopf's docs: bash's ``$RANDOM``)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distill-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="a namespace to watch (exact name; repeatable)",
    )
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument("--standalone", action="store_true", help="no peering (the default)")
    peers.add_argument(
        "--peering",
        metavar="NAME",
        help="the KopfPeering (ClusterKopfPeering with -A) whose highest-priority member works "
        "while the others stand by",
    )
    parser.add_argument(
        "--priority", type=int, help=f"peering priority (default: random in 0..{MAX_PRIORITY})"
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        type=listen_address,
        help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 0.0.0.0:8081 (off "
        "unless given, so that operators sharing a machine never clash; empty: off)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="json: one object per line (time, level, logger, message, and project and "
        "stage on lines about a project), for log pipelines; text (the default) for a terminal",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="record stage jobs and never run them (they stay Pending): for measuring the "
        f"operator itself, with no Ray cluster (same as {DRY_RUN_ENV}=1)",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def listen_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::]:8081`` for IPv6) as (host, port); empty means None."""
    if not text:
        return None
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT with a port in 1..65535, e.g. 0.0.0.0:8081"
        )
    return host, int(port)


def operator_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``kopf.operator``'s keyword arguments for the parsed command line.

    Peers need distinct priorities: kopf pauses every peer of equal priority. Watching
    named namespaces turns kopf's cluster scanning off: it lists and watches namespaces
    and CRDs, which a namespaced Role cannot grant (kopf then only warns and falls back).
    """
    clusterwide = bool(args.all_namespaces or not args.namespace)
    kwargs: dict[str, Any] = {
        "clusterwide": clusterwide,
        "namespaces": list(args.namespace),
        "standalone": args.peering is None,
        "peering_name": args.peering,
        "liveness_endpoint": args.liveness,
    }
    if args.peering is not None:
        priority = args.priority
        kwargs["priority"] = random.randint(0, MAX_PRIORITY) if priority is None else priority
    if not clusterwide:
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = True
        kwargs["settings"] = settings
    return kwargs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ[DRY_RUN_ENV] = "1"  # read with the rest of the settings at startup
    metrics = OperatorMetrics()
    configure_logging(log_format=args.log_format, verbose=args.verbose, book=metrics.projects)
    if args.metrics_address is not None:
        host, port = args.metrics_address
        try:
            metrics.serve(host=host, port=port)
        except OSError as error:  # in use, or not an address of this host
            message = f"distill-operator: cannot serve metrics on {host}:{port}: {error}"
            raise SystemExit(message) from None
    assert handlers.RESOURCE  # the import registers the handlers
    memo = kopf.Memo(metrics=metrics)  # handlers.configure hands it to the reconciler
    asyncio.run(kopf.operator(memo=memo, **operator_kwargs(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
