"""``python -m distill_operator``: run the operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from distill_operator import handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distill-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    scope.add_argument("--namespace", "-n", action="append", default=[], help="namespaces to watch")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    assert handlers.RESOURCE  # the import registers the handlers
    asyncio.run(
        kopf.operator(
            clusterwide=args.all_namespaces or not args.namespace,
            namespaces=args.namespace,
            standalone=True,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
