"""``distill demo``: the example project on the embedded default stack.

Starts (or re-uses) the dev stack — local kube-apiserver + etcd, a local Ray head and the
operator — writes the demo's inputs, applies ``examples/intent-classifier.yaml`` and
prints the stage timeline as the operator moves the project.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from distill_operator import api, cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "intent-classifier.yaml"
DEMO_ROOT = Path("/tmp/distill-demo")
NAMESPACE = "distill-demo"
WAIT_SECONDS = 300.0


def write_demo_traffic(root: Path) -> Path:
    """A small chat-JSONL traffic snapshot with a rare critical slice."""
    traffic = root / "traffic"
    traffic.mkdir(parents=True, exist_ok=True)
    intents = ["billing", "shipping", "login", "refund-fraud"]
    lines = []
    for index in range(200):
        intent = intents[index % 3] if index % 20 else "refund-fraud"
        prompt = f"Ticket {index}: customer writes about {intent.replace('-', ' ')}."
        record = {"messages": [{"role": "user", "content": prompt}], "slice": intent}
        lines.append(json.dumps(record))
    path = traffic / "snapshot-0.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _settled(project: dict[str, Any]) -> bool:
    """Define passed and the next stage's job has finished (or the project ended)."""
    status = project.get("status", {})
    if api.Phase(status.get("phase", "Pending")).is_terminal():
        return True
    stages = status.get("stages", [])
    return len(stages) > 1 and stages[1].get("state") in ("Succeeded", "Failed")


def run(*, state_dir: Path, keep: bool = True) -> int:
    from distill_operator import devstack

    info = devstack.up(state_dir, with_operator=True)
    kubeconfig = str(info.kubeconfig)
    shutil.rmtree(DEMO_ROOT, ignore_errors=True)
    write_demo_traffic(DEMO_ROOT)
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["namespace"] = NAMESPACE
    devstack.kubectl(kubeconfig, "create", "namespace", NAMESPACE, check=False)
    devstack.kubectl(kubeconfig, "delete", "dp", "--all", "-n", NAMESPACE, "--wait=true")
    devstack.kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    print(f"applied {NAMESPACE}/{name}; the operator takes it from here")
    project = _wait(kubeconfig, name)
    cli.print_timeline(project)
    print(devstack.kubectl(kubeconfig, "get", "dp", "-n", NAMESPACE).stdout)
    if keep:
        print(
            f"The stack is still up: export KUBECONFIG={kubeconfig}; `distill dev down` stops it."
        )
    else:
        devstack.down(state_dir)
    stages = project.get("status", {}).get("stages", [])
    define_passed = bool(stages) and stages[0].get("state") == "Succeeded"
    next_job_ran = len(stages) > 1 and bool(stages[1].get("job", {}).get("id"))
    return 0 if define_passed and next_job_ran else 1


def _wait(kubeconfig: str, name: str) -> dict[str, Any]:
    from distill_operator import devstack

    deadline = time.monotonic() + WAIT_SECONDS
    shown = ""
    project: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = devstack.kubectl(kubeconfig, "get", "dp", name, "-n", NAMESPACE, "-o", "json")
        project = json.loads(out.stdout)
        line = " | ".join(
            f"{s['name']}:{s.get('state')}" for s in project.get("status", {}).get("stages", [])
        )
        if line != shown:
            print(line)
            shown = line
        if _settled(project):
            break
        time.sleep(1.0)
    return project
