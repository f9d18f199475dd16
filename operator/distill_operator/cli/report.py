"""``distill slices NAME`` and ``distill disagreements NAME``: Look's report, read from
the ConfigMap the project's status names (written by ``distill_jobs.evaluation.report``:
``slices.json``, ``disagreements.json``, ``overall``, ``diagnosis``, ``truncated``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from distill_operator.cli import render
from distill_operator.cli.cluster import Cluster
from distill_operator.cli.errors import CliError, NotFoundError

BAR_WIDTH = 20
DEFAULT_EXAMPLES = 3
EXAMPLE_CHARS = 80


def report_config_map(project: Mapping[str, Any]) -> str | None:
    """The name of the project's Look report ConfigMap, once Look has published one."""
    stages = (project.get("status") or {}).get("stages") or []
    return next((s["reportConfigMap"] for s in stages if s.get("reportConfigMap")), None)


def slice_rows(data: Mapping[str, str]) -> list[dict[str, Any]]:
    """The slice table's rows as Look wrote them (``slices.json``)."""
    if "slices.json" not in data:
        raise CliError("the report has no slices.json (written by an older Look): "
                       "its slices.txt is in the ConfigMap")  # fmt: skip
    try:
        rows = json.loads(data["slices.json"])
    except ValueError as error:
        raise CliError(f"the report's slices.json is not JSON: {error}") from error
    return [row for row in rows if isinstance(row, dict)]


def disagreement_groups(data: Mapping[str, str], *, limit: int) -> list[dict[str, Any]]:
    """Per slice: how many prompts the student and teacher answered differently, and
    up to ``limit`` examples; the slices with most disagreements first."""
    try:
        found = json.loads(data.get("disagreements.json") or "{}")
    except ValueError as error:
        raise CliError(f"the report's disagreements.json is not JSON: {error}") from error
    groups = []
    for name, entry in found.items():
        entry = entry if isinstance(entry, dict) else {"count": entry}
        examples = entry.get("examples") or []
        groups.append(
            {"slice": name, "count": int(entry.get("count") or 0), "examples": examples[:limit]}
        )
    return sorted(groups, key=lambda group: -group["count"])


def score_bar(
    student: float | None, teacher: float | None, threshold: float | None, *, width: int = BAR_WIDTH
) -> Text:
    """The student's score as a bar: ``█`` up to it, ``░`` on to the teacher's when the
    teacher scores higher, and ``┃`` where the slice's bar is."""
    if student is None:
        return Text("no held-out prompts", style="dim")
    filled = round(max(0.0, min(1.0, student)) * width)
    reach = round(max(0.0, min(1.0, teacher if teacher is not None else 0.0)) * width)
    cells = ["█"] * filled + ["░"] * max(0, reach - filled) + [" "] * (width - max(filled, reach))
    styles = ["green"] * filled + ["dim"] * (width - filled)
    if threshold is not None:
        mark = min(width - 1, round(max(0.0, min(1.0, threshold)) * width))
        cells[mark], styles[mark] = "┃", "yellow"
    text = Text()
    for cell, style in zip(cells, styles, strict=True):
        text.append(cell, style=style)
    return text


def _verdict(row: Mapping[str, Any], *, bar_threshold: float | None) -> Text:
    passes, student = row.get("passes"), row.get("student_score")
    if passes is not None:
        return Text("pass", style="green") if passes else Text("FAIL", style="bold red")
    # Not critical: Look does not gate on it, but a slice under the overall bar is news.
    if student is not None and bar_threshold is not None and student < bar_threshold:
        return Text("below bar", style="yellow")
    return Text("-", style="dim")


def print_slices(
    rows: list[dict[str, Any]],
    *,
    title: str,
    bar_threshold: float | None = None,
    out: Console | None = None,
) -> None:
    """The slice table; a critical slice is held to its own bar, the others are shown
    against the overall one (``bar_threshold``, dim)."""
    out = out or render.console()
    table = Table(title=title, title_justify="left")
    for column in ("Slice", "N", "Student", "Teacher", "Student vs teacher", "Bar", "Pass"):
        numeric = column in ("N", "Student", "Teacher", "Bar")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        name = render.plain(row.get("slice"))
        if row.get("critical"):
            name.append(" (critical)", style="bold")
        own = row.get("threshold")
        threshold = own if own is not None else bar_threshold
        bar = render.plain(render.number(threshold) if threshold is not None else "-")
        if own is None:
            bar.stylize("dim")
        table.add_row(
            name,
            render.plain(row.get("held_out")),
            render.plain(render.number(row.get("student_score"))),
            render.plain(render.number(row.get("teacher_score"))),
            score_bar(row.get("student_score"), row.get("teacher_score"), threshold),
            bar,
            _verdict(row, bar_threshold=bar_threshold),
        )
    out.print(table)


def print_disagreements(groups: list[dict[str, Any]], *, out: Console | None = None) -> None:
    out = out or render.console()
    agreed = [group["slice"] for group in groups if not group["count"]]
    for group in groups:
        if not group["count"]:
            continue
        table = Table(
            title=f"{group['slice']}: {group['count']} disagreement(s) with the teacher",
            title_justify="left",
        )
        for column in ("Prompt", "Reference", "Student", "Teacher"):
            table.add_column(column, overflow="fold")
        for example in group["examples"]:
            table.add_row(
                *(
                    _example_cell(example, key)
                    for key in ("prompt", "reference", "student", "teacher")
                )
            )
        out.print(table)
    if agreed:
        out.print(f"No disagreements on: {', '.join(agreed)}", markup=False)


def _example_cell(example: Mapping[str, Any], key: str) -> Text:
    text = " ".join(str(example.get(key, "")).split())
    cell = render.plain(text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…")
    correct = example.get(f"{key}_correct")
    if correct is not None:
        cell.stylize("green" if correct else "red")
    return cell


def print_report(
    data: Mapping[str, str], *, bar_threshold: float | None = None, out: Console | None = None
) -> None:
    """Look's report: its verdict, the slice table and the disagreements (two each)."""
    out = out or render.console()
    out.print(data.get("overall", ""), markup=False)
    try:
        print_slices(slice_rows(data), title="Slices", bar_threshold=bar_threshold, out=out)
    except CliError:
        out.print(data.get("slices.txt", ""), markup=False)
    print_disagreements(disagreement_groups(data, limit=2), out=out)


def _report(
    cluster: Cluster, args: argparse.Namespace
) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The project, its report ConfigMap's name and data; a clear error when Look has
    not published one."""
    project = cluster.project(args.namespace, args.name)
    name = report_config_map(project)
    if not name:
        stages = (project.get("status") or {}).get("stages") or []
        look: dict[str, Any] = next((s for s in stages if s.get("name") == "Look"), {})
        state = look.get("state") or "Pending"
        raise NotFoundError(
            f"project {args.namespace}/{args.name} has no Look report yet (Look is {state})"
        )
    return project, name, cluster.config_map(args.namespace, name)


def _header(
    args: argparse.Namespace, project: Mapping[str, Any], name: str, data: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "namespace": args.namespace,
        "name": args.name,
        "configMap": name,
        "bar": (project.get("spec") or {}).get("bar"),
        "overall": data.get("overall"),
        "diagnosis": data.get("diagnosis"),
        "truncated": data.get("truncated"),
    }


def cmd_slices(args: argparse.Namespace, *, cluster: Cluster | None = None) -> int:
    project, name, data = _report(cluster or Cluster(), args)
    rows = slice_rows(data)
    if args.output == "json":
        render.print_json({**_header(args, project, name, data), "slices": rows})
        return 0
    out = render.console()
    threshold = ((project.get("spec") or {}).get("bar") or {}).get("threshold")
    title = f"{args.namespace}/{args.name}: Look's slices ({name})"
    print_slices(rows, title=title, bar_threshold=threshold, out=out)
    for key in ("overall", "diagnosis", "truncated"):
        if data.get(key):
            out.print(f"{key.capitalize()}: {data[key]}", markup=False)
    return 0


def cmd_disagreements(args: argparse.Namespace, *, cluster: Cluster | None = None) -> int:
    project, name, data = _report(cluster or Cluster(), args)
    groups = disagreement_groups(data, limit=args.limit)
    if args.slice:
        groups = [group for group in groups if group["slice"] == args.slice]
        if not groups:
            raise NotFoundError(f"Look's report has no slice {args.slice!r}")
    if args.output == "json":
        render.print_json({**_header(args, project, name, data), "slices": groups})
        return 0
    out = render.console()
    out.print(f"{args.namespace}/{args.name}: Look's disagreements ({name})", markup=False)
    print_disagreements(groups, out=out)
    return 0
