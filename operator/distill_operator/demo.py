"""``distill demo``: the example project, Define to Look, on the embedded default stack.

Starts (or re-uses) the dev stack — local kube-apiserver + etcd, a local Ray head and the
operator — builds the demo's inputs (a synthetic support-ticket task with a rare critical
slice, a teacher trained on it in code, an off-the-shelf model for Investigate and the
production traffic; see ``distill_jobs.synthetic``), applies
``examples/intent-classifier.yaml`` and follows the operator through the stages. Once
the router is up it replays the production traffic through it (OpenAI chat completions),
so the rollout's steps see live requests. At the end it prints the stage timeline, Look's
slice table from its ConfigMap and where the student is served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from distill_operator import api, cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "intent-classifier.yaml"
DEMO_ROOT = Path("/tmp/distill-demo")  # where the example manifest points
CACHE = Path.home() / ".cache" / "distill-operator" / "demo"  # the trained teacher, kept
TRAFFIC_ROWS = 2000
NAMESPACE = "distill-demo"
WAIT_SECONDS = 900.0
LAST_STAGE = "Launch"


class TrafficReplay:
    """Sends the traffic's prompts to the router, one after another, while it runs."""

    def __init__(self, traffic: Path) -> None:
        self.prompts = [
            json.loads(line)["messages"]
            for path in sorted(traffic.glob("*.jsonl"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        self.endpoint: str | None = None
        self.served: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            if not self.endpoint or not self.prompts:
                self._stop.wait(0.5)
                continue
            messages = self.prompts[number % len(self.prompts)]
            body = {"model": "router", "max_tokens": 16, "messages": messages}
            request = urllib.request.Request(
                f"{self.endpoint}/v1/chat/completions",
                data=json.dumps({**body, "user": f"demo-{number}"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            number += 1
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    served = json.load(response)["distill"]["servedBy"]
            except (OSError, ValueError, KeyError):
                self._stop.wait(0.5)  # the router is (re)starting
                continue
            self.served[served] = self.served.get(served, 0) + 1


def build_inputs(root: Path) -> None:
    """The teacher, the off-the-shelf model and the traffic the example names."""
    shutil.rmtree(root, ignore_errors=True)
    command = [sys.executable, "-m", "distill_jobs.synthetic", "--out", str(root)]
    subprocess.run([*command, "--rows", str(TRAFFIC_ROWS), "--cache", str(CACHE)], check=True)


def _finished(project: dict[str, Any]) -> bool:
    """The project ended, or its last demo stage concluded."""
    status = project.get("status", {})
    if api.Phase(status.get("phase", "Pending")).is_terminal():
        return True
    stages = {s["name"]: s for s in status.get("stages", [])}
    return stages.get(LAST_STAGE, {}).get("state") in ("Succeeded", "Failed")


def run(*, state_dir: Path, keep: bool = True) -> int:
    from distill_operator import devstack

    began = time.monotonic()
    info = devstack.up(state_dir, with_operator=True)
    kubeconfig = str(info.kubeconfig)
    print(f"[{time.monotonic() - began:5.0f}s] dev stack up; building the demo's inputs")
    build_inputs(DEMO_ROOT)
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["namespace"] = NAMESPACE
    devstack.kubectl(kubeconfig, "create", "namespace", NAMESPACE, check=False)
    devstack.kubectl(kubeconfig, "delete", "dp", "--all", "-n", NAMESPACE, "--wait=true")
    devstack.kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    applied = time.monotonic()
    print(f"[{applied - began:5.0f}s] applied {NAMESPACE}/{name}; the operator takes it from here")
    replay = TrafficReplay(DEMO_ROOT / "traffic")
    replay.start()
    try:
        project = _follow(kubeconfig, name, began=began, replay=replay)
    finally:
        replay.stop()
    print(
        f"[{time.monotonic() - began:5.0f}s] done ({time.monotonic() - applied:.0f}s after apply)"
    )
    cli.print_timeline(project)
    report = cli.report_config_map(project)
    if report:
        print(f"\nLook's report: kubectl get configmap {report} -n {NAMESPACE} -o yaml")
        found = devstack.kubectl(kubeconfig, "get", "configmap", report, "-n", NAMESPACE,
                                 "-o", "json")  # fmt: skip
        cli.print_report(json.loads(found.stdout).get("data", {}))
    serving = project.get("status", {}).get("serving") or {}
    if serving.get("endpoint"):
        answered = ", ".join(f"{n} by the {who}" for who, n in sorted(replay.served.items()))
        print(
            f"\nThe router: {serving['endpoint']}/v1/chat/completions (OpenAI API), metrics "
            f"at /metrics; the demo's requests were answered {answered or 'by none'}"
        )
    print(devstack.kubectl(kubeconfig, "get", "dp", "-o", "wide", "-n", NAMESPACE).stdout)
    if keep:
        print(
            f"The stack is still up: export KUBECONFIG={kubeconfig}; `distill dev down` stops it."
        )
    else:
        devstack.down(state_dir)
    stages = {s["name"]: s for s in project.get("status", {}).get("stages", [])}
    return 0 if stages.get(LAST_STAGE, {}).get("state") == "Succeeded" else 1


def _follow(kubeconfig: str, name: str, *, began: float, replay: TrafficReplay) -> dict[str, Any]:
    """Print each stage (and part) as it changes state, until the demo's last stage ends."""
    from distill_operator import devstack

    deadline = time.monotonic() + WAIT_SECONDS
    seen: dict[str, str] = {}
    project: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = devstack.kubectl(kubeconfig, "get", "dp", name, "-n", NAMESPACE, "-o", "json")
        project = json.loads(out.stdout)
        serving = project.get("status", {}).get("serving") or {}
        step = (serving.get("revision"), serving.get("mode"), serving.get("percent"))
        if serving.get("endpoint") and str(step) != seen.get("routing"):
            seen["routing"] = str(step)
            share = f" {serving.get('percent')}%" if serving.get("mode") == "canary" else ""
            print(f"[{time.monotonic() - began:5.0f}s]   router: {serving.get('mode')}{share}")
        replay.endpoint = serving.get("endpoint")
        for row in cli.timeline_rows(project):
            if row["state"] != seen.get(row["stage"]) and row["state"] != "Pending":
                seen[row["stage"]] = row["state"]
                reason = f" ({row['reason']})" if row["reason"] else ""
                print(f"[{time.monotonic() - began:5.0f}s] {row['stage']}: {row['state']}{reason}")
        if _finished(project):
            break
        time.sleep(1.0)
    return project
