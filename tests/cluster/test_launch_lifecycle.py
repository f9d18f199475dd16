"""Launch and the lifecycle under the real operator, control plane and local Ray.

One project's story, in order, as a platform team would live it through Git:
a rollout that rolls back (the confidence bar sends every request to the teacher; the
router is a job on Ray), the same manifest applied again (nothing happens), a fix to the
launch settings that also moves the router onto Kubernetes (only Launch re-runs: the
router becomes a Deployment behind the project's Service, and the rollout advances step
by step on live traffic), a new training setting (Iterate onward re-runs while the live
student keeps serving; no Teach job), and drift injected by rewriting the traffic file
(Drifted, then a loop back to Source). Requests flow through the router the whole time,
from a client thread. A stand-in kubelet runs the router's pod on this host.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException
from ray.job_submission import JobSubmissionClient

from distill_jobs.tiny import build_tiny_model
from kubelet_standin import KubeletStandIn
from manifests import example_manifest

from .pipeline import LENIENT_BAR, SLICES, TRAINING, seed_investigate_result, write_traffic
from .projects import Projects, unused_loopback_port, wait_for

NAME = "launch"
STEPS = [
    {"mode": "shadow", "holdSeconds": 2},
    {"mode": "canary", "percent": 50, "holdSeconds": 2},
    {"mode": "full", "holdSeconds": 0},
]


class TrafficClient:
    """Sends chat completions to whatever endpoint the project's status names, and
    remembers who answered each one."""

    def __init__(self, projects: Projects, prompts: list[str]) -> None:
        self.projects, self.prompts = projects, prompts
        self.answers: list[tuple[int, str]] = []  # (generation seen, served by)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TrafficClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def served_since(self, mark: int) -> Counter[str]:
        return Counter(served for _, served in self.answers[mark:])

    def _run(self) -> None:
        rng = random.Random(0)
        while not self._stop.wait(0.1):
            try:
                status = self.projects.status(NAME)
            except ApiException:  # not created yet
                continue
            endpoint = (status.get("serving") or {}).get("endpoint")
            if not endpoint:
                continue
            prompt = rng.choice(self.prompts)
            body = {
                "model": "router",
                "max_tokens": 8,
                "user": str(rng.random()),
                "messages": [{"role": "user", "content": prompt}],
            }
            request = urllib.request.Request(
                f"{endpoint}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.load(response)
            except OSError as error:
                self.errors.append(str(error))
                continue
            served = answer["distill"]["servedBy"]
            self.answers.append((status.get("observedGeneration", 0), served))


def jobs_by_stage(ray_jobs: JobSubmissionClient, uid: str) -> Counter[str]:
    """Ray submissions of the project with ``uid``, by stage (router and drift checks apart)."""
    counts: Counter[str] = Counter()
    for job in ray_jobs.list_jobs():
        labels = job.metadata or {}
        if not (job.submission_id or "").startswith(f"dp-{uid.replace('-', '')[:8]}-"):
            continue
        part = labels.get("distill.dev/candidate", "")
        kind = "router" if part == "router" else "drift" if part.startswith("drift") else ""
        counts[kind or labels.get("distill.dev/stage", "?")] += 1
    return counts


def launch_finished(projects: Projects, generation: int, timeout_s: float = 900) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = projects.status(NAME)
        if status.get("observedGeneration") != generation:
            return None
        failed = [s for s in status.get("stages", []) if s["state"] == "Failed"]
        assert not [s for s in failed if s["name"] != "Launch"], f"a stage failed: {failed}"
        launch = projects.stage(NAME, "Launch")
        return launch if launch.get("finishedAt") else None

    return wait_for(f"Launch of generation {generation}", probe, timeout_s=timeout_s)  # type: ignore[no-any-return]


def owned_router_objects(projects: Projects, namespace: str, uid: str, *, deployment: str) -> None:
    """The router's Deployment and the project's Service exist, owned by the project,
    and the Service selects the Deployment's pods."""
    apps, core = AppsV1Api(projects.custom.api_client), CoreV1Api(projects.custom.api_client)
    made = apps.read_namespaced_deployment(deployment, namespace)
    service = core.read_namespaced_service(f"{NAME}-router", namespace)
    for thing in (made, service):
        [owner] = thing.metadata.owner_references
        assert (owner.kind, owner.uid) == ("DistillationProject", uid)
    assert made.status.available_replicas == 1
    labels = made.spec.template.metadata.labels
    assert service.spec.selector.items() <= labels.items()


@pytest.fixture
def traffic_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "traffic"
    write_traffic(directory, references=True)
    return directory


@pytest.fixture
def deleted_at_the_end(
    projects: Projects, ray_jobs: JobSubmissionClient, kubelet: KubeletStandIn, namespace: str
) -> Iterator[None]:
    """Delete the project afterwards and see its jobs (the router above all) stop: the
    Ray head is shared by the whole session, and a namespace is never really deleted
    here (no kube-controller-manager), so nothing else would stop them."""
    yield

    def gone() -> bool:
        try:
            projects.get(NAME)
        except ApiException as error:
            return error.status == 404
        return False

    if gone():  # never created
        return
    uid = projects.get(NAME)["metadata"]["uid"]
    router = ((projects.status(NAME).get("serving") or {}).get("router") or {}).get("job", {})
    projects.delete(NAME)
    wait_for("the project to be gone", gone)
    prefix = f"dp-{uid.replace('-', '')[:8]}-"

    def all_stopped() -> bool:
        jobs = [j for j in ray_jobs.list_jobs() if (j.submission_id or "").startswith(prefix)]
        return all(j.status.is_terminal() for j in jobs)

    wait_for("every job of the project to stop", all_stopped, timeout_s=120)
    apps, core = AppsV1Api(projects.custom.api_client), CoreV1Api(projects.custom.api_client)
    assert not apps.list_namespaced_deployment(namespace).items, "the router's Deployment"
    assert not core.list_namespaced_service(namespace).items, "the router's Service"
    if router.get("mode") == "deployment":
        wait_for("the router's pod to end", lambda: kubelet.pid_of(router["id"]) is None)


@pytest.fixture
def client(projects: Projects, traffic_dir: Path) -> Iterator[TrafficClient]:
    prompts = [
        json.loads(line)["messages"][0]["content"]
        for path in sorted(traffic_dir.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    with TrafficClient(projects, prompts) as traffic:
        yield traffic


def test_rollout_rollback_fix_redistill_and_drift_through_git_edits(
    projects: Projects,
    namespace: str,
    traffic_dir: Path,
    tmp_path: Path,
    ray_jobs: JobSubmissionClient,
    client: TrafficClient,
    deleted_at_the_end: None,
) -> None:
    teacher = build_tiny_model(directory=tmp_path / "teacher", seed=0, preset="small")
    overrides = {
        "spec.artifacts.uri": projects.artifacts,
        "spec.source.traffic": [traffic_dir.as_uri() + "/*.jsonl"],
        "spec.source.allowOversampling": False,
        "spec.source.criticalSlices": [{"name": "refund-fraud", "minCount": 20}],
        "spec.teacher.model": str(teacher),
        "spec.teacher.parameters": 10_000_000,
        "spec.teach": {"maxOutputTokens": 8, "batchSize": 16, "reviewSampleRate": 0.1},
        "spec.bar": LENIENT_BAR,
        "spec.students": {
            # The smallest plausible student, and a copy of the teacher as the larger one.
            "candidates": [
                {"name": "tiny", "preset": "tiny"},
                {"name": "mentor", "pretrained": str(teacher)},
            ],
            "training": TRAINING,
        },
        # A confidence bar no answer reaches: every request falls back to the teacher.
        "spec.launch": {
            "steps": STEPS,
            "minRequests": 6,
            "maxFallbackRate": 0.5,
            "minAgreement": 0.0,
            "confidenceThreshold": 0.0,
            "router": {"platform": "ray"},
        },
        "spec.lifecycle": {"autoRedistill": True, "driftCheckSeconds": 10},
    }
    manifest = example_manifest(NAME, **overrides)
    seed_investigate_result(manifest, namespace)
    uid = projects.create(NAME, **overrides)["metadata"]["uid"]

    # 1. The rollout rolls back at its first step and says why; the teacher answers.
    launch = launch_finished(projects, generation=1)
    assert launch["state"] == "Failed" and launch["reason"] == "RolledBack", launch
    assert (
        "step 1/3 (shadow)" in launch["message"] and "fallback rate 1.00 > 0.5" in launch["message"]
    ), launch
    status = projects.status(NAME)
    assert status["phase"] == "Failed" and status["diagnosis"]["stage"] == "Launch"
    assert status["serving"]["mode"] == "teacher" and "live" not in status["serving"]
    mark = len(client.answers)
    wait_for("answers after the rollback", lambda: len(client.answers) > mark + 3)
    assert client.served_since(mark + 1) == Counter({"teacher": len(client.answers) - mark - 1})
    router_id = status["serving"]["router"]["job"]["id"]
    jobs = jobs_by_stage(ray_jobs, uid)
    assert jobs["Teach"] == 1 and jobs["Iterate"] == 2 and jobs["router"] == 1, jobs

    # 2. The same manifest again is no change at all.
    before = projects.get(NAME)
    projects.patch(NAME, {"spec": before["spec"]})
    after = projects.get(NAME)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] == 1
    assert after["status"]["stages"] == before["status"]["stages"]

    # 3. A reachable confidence bar, and the router moved onto Kubernetes: only Launch
    # re-runs, the router becomes a Deployment (no Ray job), and it advances step by step.
    port = unused_loopback_port()
    router = {"platform": "kubernetes", "host": "127.0.0.1", "port": port}  # the pod's host
    projects.patch(NAME, {"spec": {"launch": {"confidenceThreshold": -1000.0, "router": router}}})
    launch = launch_finished(projects, generation=2, timeout_s=300)
    assert launch["state"] == "Succeeded" and launch["reason"] == "RolledOut", launch
    assert "after shadow -> canary 50% -> full" in launch["message"]
    status = projects.status(NAME)
    assert status["phase"] == "Monitoring"
    assert status["serving"]["live"]["name"] == "tiny" and status["serving"]["mode"] == "full"
    deployment_job = status["serving"]["router"]["job"]
    assert deployment_job["mode"] == "deployment" and deployment_job["id"] != router_id
    assert ray_jobs.get_job_status(router_id).is_terminal(), "the Ray router was stopped"
    assert jobs_by_stage(ray_jobs, uid) == jobs, "nothing but Launch ran again"
    assert status["serving"]["endpoint"] == f"http://127.0.0.1:{port}"
    assert status["serving"]["service"] == f"http://{NAME}-router.{namespace}.svc"
    owned_router_objects(projects, namespace, uid, deployment=deployment_job["id"])
    mark = len(client.answers)
    wait_for("answers from the live student", lambda: len(client.answers) > mark + 3)
    assert client.served_since(mark + 1)["student"] > 0
    live_uri = status["serving"]["live"]["uri"]

    # 4. A new training setting re-runs Iterate onward; the live student keeps serving
    # until the new one has passed Look and been rolled out; no Teach job is launched.
    projects.patch(NAME, {"spec": {"students": {"training": {"learningRate": 2e-6}}}})
    wait_for(
        "the new Iterate to start",
        lambda: (
            projects.stage(NAME, "Iterate").get("state") == "Running"
            and projects.status(NAME).get("observedGeneration") == 3
        ),
    )
    mark = len(client.answers)
    launch = launch_finished(projects, generation=3)
    assert launch["state"] == "Succeeded", launch
    during = [served for generation, served in client.answers[mark:] if generation == 3]
    assert "student" in during, "the live student answered during the re-distillation"
    status = projects.status(NAME)
    assert status["serving"]["live"]["uri"] != live_uri
    now = jobs_by_stage(ray_jobs, uid)
    assert now["Iterate"] == jobs["Iterate"] + 2, now
    assert (now["Source"], now["Teach"]) == (jobs["Source"], jobs["Teach"]), now
    assert now["router"] == 1
    assert status["serving"]["router"]["job"] == deployment_job | {"state": "Running"}, (
        "the router's Deployment served through the re-distillation"
    )

    # 5. Traffic drifts (the rare critical slice now dominates): Drifted, with the
    # numbers, and a loop back to Source on the new snapshot.
    def no_drift() -> bool:
        return projects.condition(NAME, "Drifted").get("status") == "False"

    wait_for("a drift check that finds none", no_drift, timeout_s=120)
    for path in traffic_dir.glob("*.jsonl"):
        path.unlink()
    write_traffic(
        traffic_dir, seed=11, slices={"refund-fraud": sum(SLICES.values())}, references=True
    )
    drifted = wait_for(
        "Drifted",
        lambda: (c := projects.condition(NAME, "Drifted")).get("status") == "True" and c,
        timeout_s=120,
    )
    assert "slice mix moved" in drifted["message"] and "refund-fraud" in drifted["message"]
    status = projects.status(NAME)
    assert status["lifecycle"]["redistillations"] == 1, status["lifecycle"]
    assert status["lifecycle"]["lastTrigger"]["reason"] == "Drifted"
    source = wait_for(
        "Source on the new snapshot",
        lambda: (s := projects.stage(NAME, "Source")).get("state") == "Succeeded" and s,
        timeout_s=180,
    )
    assert source["metrics"]["train_refund-fraud"] > 100, source["metrics"]
    assert jobs_by_stage(ray_jobs, uid)["Source"] == jobs["Source"] + 1
    assert projects.status(NAME)["serving"]["live"]["uri"] == status["serving"]["live"]["uri"]
    assert not client.errors[-5:], client.errors[-5:]
