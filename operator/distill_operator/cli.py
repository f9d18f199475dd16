"""The ``distill`` command (also ``kubectl distill``): dev stack, demo, status, CRD."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from distill_operator import api, crd

DEFAULT_STATE_DIR = Path.home() / ".cache" / "distill-operator" / "dev"


def _cmd_crd(args: argparse.Namespace) -> int:
    text = crd.render()
    if args.out:
        target = Path(args.out) / crd.CRD_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from distill_operator import devstack

    state_dir = Path(args.state_dir)
    if args.action == "up":
        devstack.up(state_dir, with_operator=not args.no_operator)
    else:
        devstack.down(state_dir)
    return 0


def _read_project(namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    from distill_operator.kube import load_api_client

    custom = client.CustomObjectsApi(load_api_client())
    found = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
    return cast(dict[str, Any], found)


def timeline_rows(project: dict[str, Any]) -> list[dict[str, str]]:
    """One row per stage (and per alternative or candidate), in the order they ran:
    state, start, how long it took, what the exit condition says."""
    stages = project.get("status", {}).get("stages", [])
    ran = sorted(stages, key=lambda s: (not s.get("startedAt"), s.get("startedAt") or ""))
    rows = []
    for entry in ran:
        rows.append(_row(entry["name"], entry))
        rows += [_row(f"{entry['name']}/{c['name']}", c) for c in entry.get("candidates", [])]
    return rows


def _row(name: str, entry: dict[str, Any]) -> dict[str, str]:
    job = entry.get("job") or {}
    return {
        "stage": name,
        "state": entry.get("state", ""),
        "started": entry.get("startedAt", ""),
        "took": _took(entry.get("startedAt"), entry.get("finishedAt")),
        "reason": entry.get("reason", ""),
        "detail": entry.get("message") or entry.get("exitCondition", ""),
        "job": job.get("id", ""),
    }


def _took(started: str | None, finished: str | None) -> str:
    if not started or not finished:
        return ""
    spent = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    return f"{spent.total_seconds():.0f}s"


def print_timeline(project: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    status = project.get("status", {})
    meta = project["metadata"]
    title = (
        f"{meta['namespace']}/{meta['name']}: stage {status.get('stage', '-')}, "
        f"phase {status.get('phase', 'Pending')}"
    )
    table = Table(title=title, show_lines=False)
    for column in ("stage", "state", "started", "took", "reason", "detail", "job"):
        table.add_column(column.capitalize(), overflow="fold")
    for row in timeline_rows(project):
        table.add_row(*row.values())
    console = Console(width=160)
    console.print(table)
    diagnosis = status.get("diagnosis")
    if diagnosis:
        stage, reason = diagnosis["stage"], diagnosis["reason"]
        console.print(
            f"Diagnosis: {stage} ({reason}): {diagnosis.get('message', '')}", markup=False
        )
    for line in serving_lines(status):
        console.print(line, markup=False)


def serving_lines(status: dict[str, Any]) -> list[str]:
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


def report_config_map(project: dict[str, Any]) -> str | None:
    """The name of the project's Look report ConfigMap, once Look has published one."""
    stages = project.get("status", {}).get("stages", [])
    return next((s["reportConfigMap"] for s in stages if s.get("reportConfigMap")), None)


def print_report(data: dict[str, str]) -> None:
    """Look's report as kubectl shows it: the slice table and the disagreements."""
    print(data.get("overall", ""))
    print(data.get("slices.txt", ""))
    disagreements = json.loads(data.get("disagreements.json") or "{}")
    for name, found in disagreements.items():
        count = found.get("count", 0) if isinstance(found, dict) else found
        if not count:
            continue
        print(f"{name}: {count} disagreement(s) with the teacher, e.g.")
        for example in (found.get("examples") or [])[:2] if isinstance(found, dict) else []:
            print(f"  {json.dumps(example, ensure_ascii=False)}")


def _read_config_map(namespace: str, name: str) -> dict[str, str]:
    from kubernetes import client

    from distill_operator.kube import load_api_client

    found = client.CoreV1Api(load_api_client()).read_namespaced_config_map(name, namespace)
    return dict(found.data or {})


def _cmd_status(args: argparse.Namespace) -> int:
    project = _read_project(args.namespace, args.name)
    if args.output == "json":
        print(json.dumps(project.get("status", {}), indent=2))
        return 0
    print_timeline(project)
    report = report_config_map(project)
    if report:
        print(f"Look's report (ConfigMap {args.namespace}/{report}):")
        print_report(_read_config_map(args.namespace, report))
    return 0


def _cmd_plan(
    args: argparse.Namespace,
    *,
    read_project: Callable[[str, str], dict[str, Any]] = _read_project,
) -> int:
    """What applying ``args.file`` to the live project would re-use and run again."""
    from rich.console import Console
    from rich.table import Table

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
    table = Table(title=f"{args.namespace}/{args.name}: applying {args.file}")
    for column in ("stage", "plan", "reads", "why"):
        table.add_column(column.capitalize(), overflow="fold")
    styles = {plan.REUSE: "green", plan.RERUN: "yellow", "fails": "red", "restarts": "yellow"}
    for row in rows:
        table.add_row(
            row.stage, row.plan, ", ".join(row.reads), row.why, style=styles.get(row.plan)
        )
    Console(width=160).print(table)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from distill_operator import demo

    return demo.run(state_dir=Path(args.state_dir), keep=not args.down)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    crd_cmd = commands.add_parser("crd", help="print (or write) the generated CRD")
    crd_cmd.add_argument("--out", help="directory to write the CRD file into")
    crd_cmd.set_defaults(func=_cmd_crd)

    dev = commands.add_parser("dev", help="local control plane + Ray head + operator")
    dev.add_argument("action", choices=["up", "down"])
    dev.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    dev.add_argument("--no-operator", action="store_true", help="start no operator process")
    dev.set_defaults(func=_cmd_dev)

    status = commands.add_parser("status", help="a project's stage timeline")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", default="default")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=_cmd_status)

    plan_cmd = commands.add_parser("plan", help="what applying a new spec would re-run")
    plan_cmd.add_argument("name")
    plan_cmd.add_argument("-f", "--file", required=True, help="the new manifest (or its spec)")
    plan_cmd.add_argument("-n", "--namespace", default="default")
    plan_cmd.add_argument("-o", "--output", choices=["table", "json"], default="table")
    plan_cmd.set_defaults(func=_cmd_plan)

    demo = commands.add_parser("demo", help="run the example project on the dev stack")
    demo.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    demo.add_argument("--down", action="store_true", help="stop the dev stack afterwards")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
