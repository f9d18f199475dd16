"""``python -m distill_operator``: run the operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from typing import Any

import kopf

from distill_operator import handlers

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
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    assert handlers.RESOURCE  # the import registers the handlers
    asyncio.run(kopf.operator(**operator_kwargs(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
