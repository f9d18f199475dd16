"""The ``distill`` command, also installed as the kubectl plugin ``kubectl-distill``.

``status`` (the stage timeline), ``slices`` and ``disagreements`` (Look's report),
``logs`` (a stage's job), ``plan`` (what a new spec re-runs) read a project; ``dev``,
``demo`` and ``crd`` run the local stack and print the CRD. Each reading command takes
``-n`` (default: the kubeconfig context's namespace) and ``-o table|json``; a missing
project, namespace or report is one line on stderr and exit status 1.

Modules: :mod:`.cluster` (API reads), :mod:`.render` (console, JSON, times),
:mod:`.timeline`, then one per command family: :mod:`.status`, :mod:`.report`,
:mod:`.logs`, :mod:`.plan`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distill_operator import crd
from distill_operator.cli.cluster import context_namespace
from distill_operator.cli.errors import CliError
from distill_operator.cli.logs import STAGE_CHOICES, cmd_logs
from distill_operator.cli.plan import cmd_plan
from distill_operator.cli.report import (
    DEFAULT_EXAMPLES,
    cmd_disagreements,
    cmd_slices,
    print_report,
    report_config_map,
)
from distill_operator.cli.status import cmd_status, print_timeline, serving_lines
from distill_operator.cli.timeline import timeline_rows

__all__ = [
    "build_parser",
    "main",
    "print_report",
    "print_timeline",
    "report_config_map",
    "serving_lines",
    "timeline_rows",
]

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from distill_operator import demo

    return demo.run(state_dir=Path(args.state_dir), keep=not args.down)


def _program() -> str:
    """``kubectl distill`` when kubectl runs us as its plugin, else ``distill``."""
    return "kubectl distill" if Path(sys.argv[0]).name.startswith("kubectl-") else "distill"


def _project_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, help: str
) -> argparse.ArgumentParser:
    """A command about one project: NAME, -n and -o."""
    command = commands.add_parser(name, help=help, description=help)
    command.add_argument("name", help="the DistillationProject")
    command.add_argument(
        "-n",
        "--namespace",
        default=context_namespace(),
        help="its namespace (default: the kubeconfig context's, else default)",
    )
    command.add_argument("-o", "--output", choices=["table", "json"], default="table")
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program(),
        description="DistillationProjects from the command line (also `kubectl distill`): "
        "status, Look's slices and disagreements, a stage's logs, what a new spec re-runs; "
        "and the local dev stack.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    crd_cmd = commands.add_parser("crd", help="print (or write) the generated CRD")
    crd_cmd.add_argument("--out", help="directory to write the CRD file into")
    crd_cmd.set_defaults(func=_cmd_crd)

    dev = commands.add_parser("dev", help="local control plane + Ray head + operator")
    dev.add_argument("action", choices=["up", "down"])
    dev.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    dev.add_argument("--no-operator", action="store_true", help="start no operator process")
    dev.set_defaults(func=_cmd_dev)

    status = _project_command(
        commands, "status", help="the stage timeline, the current job, diagnosis, serving, cost"
    )
    status.add_argument("--svg", metavar="FILE", help="also write the table view as an SVG")
    status.set_defaults(func=cmd_status)

    slices = _project_command(commands, "slices", help="Look's per-slice table")
    slices.set_defaults(func=cmd_slices)

    disagreements = _project_command(
        commands, "disagreements", help="where student and teacher answered differently"
    )
    disagreements.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_EXAMPLES,
        help="examples per slice (default %(default)s)",
    )
    disagreements.add_argument("--slice", help="only this slice")
    disagreements.set_defaults(func=cmd_disagreements)

    logs = _project_command(commands, "logs", help="the logs of a stage's job (latest attempt)")
    logs.add_argument(
        "--stage",
        required=True,
        type=str.lower,
        choices=STAGE_CHOICES,
        help="launch (or router): the router; drift: the latest drift check",
    )
    logs.add_argument("--candidate", help="Investigate/Iterate: one alternative or candidate")
    logs.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
    logs.add_argument("--ray-address", help="the Ray dashboard to ask (e.g. a port-forward)")
    logs.set_defaults(func=cmd_logs)

    plan_cmd = _project_command(commands, "plan", help="what applying a new spec would re-run")
    plan_cmd.add_argument("-f", "--file", required=True, help="the new manifest (or its spec)")
    plan_cmd.set_defaults(func=cmd_plan)

    demo = commands.add_parser("demo", help="run the example project on the dev stack")
    demo.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    demo.add_argument("--down", action="store_true", help="stop the dev stack afterwards")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as error:
        print(f"{parser.prog} {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kubectl distill logs … | head`: the reader left; nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
