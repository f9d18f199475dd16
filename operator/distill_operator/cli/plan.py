"""``distill plan NAME -f FILE``: what applying a new spec would re-use and run again."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from distill_operator.cli import render
from distill_operator.cli.cluster import Cluster


def read_project(namespace: str, name: str) -> dict[str, Any]:
    return Cluster().project(namespace, name)


def cmd_plan(
    args: argparse.Namespace,
    *,
    read_project: Callable[[str, str], dict[str, Any]] = read_project,
) -> int:
    """What applying ``args.file`` to the live project would re-use and run again."""
    from distill_operator import plan

    try:
        new_spec = plan.spec_of(Path(args.file).read_text())
        rows = plan.plan(read_project(args.namespace, args.name), new_spec)
    except (OSError, plan.InvalidSpec) as error:
        print(f"distill plan: {args.file}: {error}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps([row.to_json() for row in rows], indent=2))
        return 0
    table = Table(title=f"{args.namespace}/{args.name}: applying {args.file}", title_justify="left")
    for column in ("stage", "plan", "reads", "why"):
        table.add_column(column.capitalize(), overflow="fold")
    styles = {plan.REUSE: "green", plan.RERUN: "yellow", "fails": "red", "restarts": "yellow"}
    for row in rows:
        table.add_row(
            row.stage,
            row.plan,
            ", ".join(row.reads),
            render.plain(row.why),
            style=styles.get(row.plan),
        )
    render.console().print(table)
    return 0
