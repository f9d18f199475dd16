"""``distill status NAME``: the stage timeline, the current job and where to read its
logs, the diagnosis, serving, drift and cost — from the project's status alone."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from distill_operator import api
from distill_operator.cli import render
from distill_operator.cli.cluster import Cluster
from distill_operator.cli.report import report_config_map
from distill_operator.cli.timeline import (
    CurrentJob,
    TimelineEntry,
    current_jobs,
    timeline,
    took,
)


def serving_lines(status: Mapping[str, Any]) -> list[str]:
    """Where the student is served, the rollout and the lifecycle, in words."""
    serving, lifecycle = status.get("serving") or {}, status.get("lifecycle") or {}
    lines = []
    if serving.get("endpoint"):
        live = (serving.get("live") or {}).get("name", "no student (the teacher answers)")
        share = f" {serving.get('percent')}%" if serving.get("mode") == "canary" else ""
        where = serving.get("service") or serving["endpoint"]  # clients want the stable one
        lines.append(
            f"Serving: {live} at {where}/v1/chat/completions, routing "
            f"{serving.get('mode')}{share} (revision {serving.get('revision', 0)})"
        )
    candidate = serving.get("candidate")
    if candidate:
        numbers = ", ".join(f"{k} {v:g}" for k, v in (serving.get("metrics") or {}).items())
        lines.append(f"Rolling out: {candidate['name']} ({numbers or 'no requests yet'})")
    if lifecycle.get("driftChecks"):
        drift = "drifted" if lifecycle.get("drifted") else "no drift"
        lines.append(
            f"Drift: {drift} after {lifecycle['driftChecks']} check(s): "
            f"{lifecycle.get('driftMessage', '')}"
        )
    trigger = lifecycle.get("lastTrigger")
    if trigger:
        lines.append(
            f"Re-distillations: {lifecycle.get('redistillations', 0)}, the last on "
            f"{trigger['reason']} at {trigger['at']}: {trigger.get('message', '')}"
        )
    return lines


def cost_rows(cost: Any) -> tuple[list[str], list[list[str]]]:
    """``status.cost`` as a table (columns, rows): one row per stage, then the total.

    Tolerant of its shape: stages as a list (``stage`` or ``name`` in each) or a map by
    stage; a total as a map or a number; every scalar of an entry becomes a column.
    Nothing (no columns) when status has no cost.
    """
    if not isinstance(cost, Mapping):
        return [], []
    per_stage = cost.get("stages") or cost.get("perStage") or []
    named: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(per_stage, Mapping):
        named = [(str(k), v) for k, v in per_stage.items() if isinstance(v, Mapping)]
    elif isinstance(per_stage, list):
        named = [
            (str(v.get("stage") or v.get("name") or "?"), v)
            for v in per_stage
            if isinstance(v, Mapping)
        ]
    total = cost.get("total")
    if isinstance(total, Mapping):
        named.append(("total", total))
    elif isinstance(total, int | float):
        named.append(("total", {"price": total}))
    columns = _scalar_keys(entry for _, entry in named)
    rows = [[name, *(render.number(entry.get(key)) for key in columns)] for name, entry in named]
    return (["stage", *columns] if rows else []), rows


COST_COLUMNS = (
    "attempts",
    "acceleratorSeconds",
    "estimatedAcceleratorSeconds",
    "teacherInputTokens",
    "teacherOutputTokens",
    "price",
)
"""The cost ledger's numbers in the order people read them; others follow as found."""


def _scalar_keys(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for entry in entries:
        for key, value in entry.items():
            if key not in ("stage", "name", *keys) and isinstance(value, int | float | str):
                keys.append(key)
    known = [key for key in COST_COLUMNS if key in keys]
    return known + [key for key in keys if key not in COST_COLUMNS]


def status_json(project: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """What ``status -o json`` prints: stable keys, every one present (null when unset)."""
    meta, status = project["metadata"], project.get("status") or {}
    namespace, name = meta["namespace"], meta["name"]
    return {
        "namespace": namespace,
        "name": name,
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "stage": status.get("stage"),
        "phase": status.get("phase") or "Pending",
        "timeline": [entry.to_json() for entry in timeline(project, now=now)],
        "currentJobs": [
            job.to_json(name=name, namespace=namespace) for job in current_jobs(project, now=now)
        ],
        "diagnosis": status.get("diagnosis"),
        "student": status.get("student"),
        "serving": status.get("serving"),
        "lifecycle": status.get("lifecycle"),
        "cost": status.get("cost"),
        "reportConfigMap": report_config_map(project),
        "conditions": status.get("conditions") or [],
    }


def print_timeline(
    project: Mapping[str, Any], *, out: Console | None = None, now: datetime | None = None
) -> None:
    """The timeline table, the current job, diagnosis, serving and cost lines."""
    out = out or render.console()
    now = now or datetime.now(UTC)
    status = project.get("status") or {}
    meta = project["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    title = (
        f"{namespace}/{name}: stage {status.get('stage') or '-'}, "
        f"phase {status.get('phase') or 'Pending'}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("Stage / job", overflow="fold")
    table.add_column("State")
    table.add_column("Started", no_wrap=True)
    table.add_column("Took", no_wrap=True)
    table.add_column("Exit condition")
    table.add_column("Outcome", overflow="fold", ratio=1)
    holds = exit_conditions(status)
    for entry in timeline(project, now=now):
        label = Text(entry.label, style="bold" if not entry.candidate else "")
        if entry.job:
            label.append(f"\n{entry.job.get('id', '')}", style="dim")
        table.add_row(
            label,
            render.styled_state(entry.state),
            render.plain(render.short_time(entry.started_at)),
            render.plain(took(entry)),
            holds.get(entry.stage, Text()) if not entry.candidate else Text(),
            _outcome(entry),
        )
    out.print(table)
    for job in current_jobs(project, now=now):
        _print_job(out, job, name=name, namespace=namespace)
    diagnosis = status.get("diagnosis")
    if diagnosis:
        out.print(
            f"Diagnosis: {diagnosis.get('stage')} ({diagnosis.get('reason')}): "
            f"{diagnosis.get('message', '')}",
            markup=False,
        )
    for line in serving_lines(status):
        out.print(line, markup=False)
    _print_cost(out, status.get("cost"))


CONDITION_MARKS = {"True": ("✓", "green"), "False": ("✗", "red"), "Unknown": ("…", "dim")}


def exit_conditions(status: Mapping[str, Any]) -> dict[str, Text]:
    """Per stage, its exit condition's type marked with whether it holds (✓, ✗, …)."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    marked = {}
    for stage in api.Stage:
        condition = conditions.get(stage.exit_condition_type) or {}
        mark, style = CONDITION_MARKS.get(condition.get("status", "Unknown"), ("?", ""))
        marked[stage.value] = Text(f"{mark} {stage.exit_condition_type}", style=style)
    return marked


def _outcome(entry: TimelineEntry) -> Text:
    """Reason and message; while a stage has not ended, also what ends it."""
    text = Text()
    if entry.reason:
        text.append(entry.reason, style="bold")
        text.append(": " if entry.message else "")
    text.append(entry.message)
    if entry.state in ("Pending", "Running") and entry.exit_condition:
        text.append("\n" if text else "")
        text.append(f"needs: {entry.exit_condition}", style="dim")
    return text


def _print_job(out: Console, job: CurrentJob, *, name: str, namespace: str) -> None:
    record = job.job
    heading = "Current job" if job.running else "Last job"
    out.print(
        f"{heading}: {job.what} {record.get('id', '')} ({record.get('mode', '?')}, {job.state})",
        markup=False,
    )
    if record.get("state") == "Unknown":  # the operator cannot reach Ray (or KubeRay)
        out.print(f"  cannot be asked: {record.get('message') or '?'}", markup=False)
    if record.get("dashboard"):
        out.print(f"  dashboard: {record['dashboard']}", markup=False)
    out.print(f"  logs: {job.logs_command(name=name, namespace=namespace)}", markup=False)


def _print_cost(out: Console, cost: Any) -> None:
    columns, rows = cost_rows(cost)
    if not rows:
        return
    table = Table(title="Cost", title_justify="left")
    for column in columns:
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", column).lower()  # teacherInputTokens
        table.add_column(words, justify="left" if column == "stage" else "right")
    for row in rows:
        table.add_row(*(render.plain(cell) for cell in row))
    out.print(table)


def _print_look_pointer(
    out: Console, cluster: Cluster, project: Mapping[str, Any], *, args: argparse.Namespace
) -> None:
    """Look's one-line verdict and where the slice table is, once Look published it."""
    name = report_config_map(project)
    if not name:
        return
    from distill_operator.cli.errors import CliError

    try:
        overall = cluster.config_map(args.namespace, name).get("overall", "")
    except CliError:
        return  # status is still worth showing without it
    out.print(f"Look: {overall}", markup=False)
    out.print(
        f"  slices: kubectl distill slices {args.name} -n {args.namespace}; disagreements: "
        f"kubectl distill disagreements {args.name} -n {args.namespace}",
        markup=False,
    )


def cmd_status(args: argparse.Namespace, *, cluster: Cluster | None = None) -> int:
    cluster = cluster or Cluster()
    project = cluster.project(args.namespace, args.name)
    now = datetime.now(UTC)
    as_json = args.output == "json"
    out = render.console(record=bool(args.svg), quiet=as_json)
    print_timeline(project, out=out, now=now)
    _print_look_pointer(out, cluster, project, args=args)
    if as_json:
        render.print_json(status_json(project, now=now))
    if args.svg:
        render.save_svg(out, args.svg, title=f"kubectl distill status {args.name}")
    return 0
