"""Ray and the artifact store failing under a running project (issue #8): a Ray worker
killed during Teach and during training, and the artifact store gone for a while. Each
must end in a retry that succeeds (Ray's own, or the operator's next attempt), never in
a silent hang or a lost result. Real operator, real local Ray, real SIGKILLs."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors

from distill_jobs.contract import read_result
from distill_jobs.tiny import build_tiny_model
from manifests import example_manifest

from .pipeline import LENIENT_BAR, seed_investigate_result, write_traffic
from .projects import Projects, wait_for

# Enough training steps that a worker can be killed between two checkpoints.
TRAINING = {
    "workers": 2,
    "cpusPerWorker": 0.5,
    "microBatchSize": 4,
    "maxSteps": 30,
    "checkpointEverySteps": 5,
    "learningRate": 1e-6,
    "warmupSteps": 1,
    "deepspeed": {"zeroStage": 2, "precision": "fp32"},
}
POLICY = {"maxRetries": 2, "backoffSeconds": 1, "deadlineSeconds": 420}
STORE_AWAY_S = 20.0


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "small" tiny model, so that a copy of it is the larger student."""
    directory = tmp_path_factory.mktemp("teacher") / "model"
    return build_tiny_model(directory=directory, seed=0, preset="small")


def pipeline_overrides(
    projects: Projects, namespace: str, traffic: Path, teacher: Path, name: str
) -> dict[str, Any]:
    """A project through Teach and Iterate with two students (a tiny one, and a copy of
    the teacher); Investigate's result is seeded (test_evaluate_pipeline.py runs it)."""
    write_traffic(traffic)
    overrides = {
        "spec.artifacts.uri": projects.artifacts,
        "spec.source.traffic": [traffic.as_uri() + "/*.jsonl"],
        "spec.source.criticalSlices": [{"name": "refund-fraud", "minCount": 20}],
        "spec.teacher.model": str(teacher),
        "spec.teacher.topLogprobs": 5,
        "spec.teach": {"maxOutputTokens": 8, "batchSize": 8, "reviewSampleRate": 0.1},
        "spec.bar": LENIENT_BAR,
        "spec.policy": POLICY,
        "spec.students": {
            "candidates": [
                {"name": "tiny", "preset": "tiny"},
                {"name": "mentor", "pretrained": str(teacher)},
            ],
            "training": TRAINING,
        },
    }
    seed_investigate_result(example_manifest(name, **overrides), namespace)
    return overrides


def running_job(projects: Projects, name: str, stage: str) -> str | None:
    """The id of the stage's job once Ray runs it (the stage's, or its first candidate's)."""
    entry = projects.stage(name, stage)
    units = entry.get("candidates") or [entry]
    job = units[0].get("job") or {}
    return job.get("id") if job.get("state") == "Running" else None


def kill_an_actor(ray_address: str, ray_jobs: JobSubmissionClient, job_id: str, kind: str) -> str:
    """SIGKILL one live actor of the job whose class name has ``kind``; its description."""

    def an_actor() -> Any:
        ray_job = ray_jobs.get_job_info(job_id).job_id  # set once its driver connects
        if ray_job is None:
            return None
        actors = list_actors(
            address=ray_address,
            filters=[("job_id", "=", ray_job), ("state", "=", "ALIVE")],
            detail=True,
        )
        return next((a for a in actors if kind in a.class_name and a.pid), None)

    actor = wait_for(f"a live {kind} actor of job {job_id}", an_actor, timeout_s=240)
    os.kill(actor.pid, signal.SIGKILL)
    return f"{actor.class_name} (pid {actor.pid})"


def finished(projects: Projects, name: str, stage: str, timeout_s: float) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = projects.status(name)
        failed_early = status.get("phase") == "Failed" and status.get("stage") != stage
        assert not failed_early, f"the project failed before {stage}: {status}"
        entry = projects.stage(name, stage)
        return entry if entry.get("finishedAt") else None

    return wait_for(f"{stage} to finish", probe, timeout_s=timeout_s)  # type: ignore[no-any-return]


def warnings(kubeconfig: str, namespace: str) -> list[str]:
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    events = core.list_namespaced_event(namespace).items
    return [f"{e.reason}: {e.message}" for e in events if e.type == "Warning"]


def test_ray_workers_killed_during_teach_and_training_end_in_a_retry_that_succeeds(
    projects: Projects,
    namespace: str,
    tmp_path: Path,
    tiny_teacher: Path,
    ray_address: str,
    ray_jobs: JobSubmissionClient,
    kubeconfig: str,
) -> None:
    overrides = pipeline_overrides(projects, namespace, tmp_path / "traffic", tiny_teacher, "kill")
    projects.create("kill", **overrides)

    teach_job = wait_for("Teach to run", lambda: running_job(projects, "kill", "Teach"), 300)
    killed = [kill_an_actor(ray_address, ray_jobs, teach_job, "MapWorker")]
    teach = finished(projects, "kill", "Teach", timeout_s=420)
    assert teach["state"] == "Succeeded", (killed, teach, warnings(kubeconfig, namespace))
    assert teach["metrics"]["kept"] > 0
    assert read_result(teach["resultUri"]) is not None

    train_job = wait_for("training to run", lambda: running_job(projects, "kill", "Iterate"), 300)
    killed.append(kill_an_actor(ray_address, ray_jobs, train_job, "RayTrainWorker"))
    iterate = finished(projects, "kill", "Iterate", timeout_s=600)
    assert iterate["state"] == "Succeeded", (killed, iterate, warnings(kubeconfig, namespace))
    assert {c["name"]: c["state"] for c in iterate["candidates"]} == {
        "tiny": "Succeeded",
        "mentor": "Succeeded",
    }
    assert projects.status("kill")["student"]["name"] == "tiny"
    projects.delete("kill")


def swap_away(store: Path) -> Callable[[], None]:
    """Put a plain file where the store's directory was (every write under it fails,
    even for root, which a chmod would not stop); return how to put it back."""
    away = store.with_name(store.name + ".away")
    store.rename(away)
    store.write_text("the artifact store is away\n")

    def put_back() -> None:
        store.unlink()
        away.rename(store)

    return put_back


def test_an_artifact_store_gone_for_a_while_ends_in_a_retry_that_succeeds(
    projects: Projects, namespace: str, tmp_path: Path, tiny_teacher: Path, kubeconfig: str
) -> None:
    overrides = pipeline_overrides(projects, namespace, tmp_path / "traffic", tiny_teacher, "away")
    projects.create("away", **overrides)
    store = Path(projects.artifacts.removeprefix("file://"))
    wait_for("Teach to run", lambda: running_job(projects, "away", "Teach"), 300)
    put_back = swap_away(store)
    try:
        time.sleep(STORE_AWAY_S)
    finally:
        put_back()
    teach = finished(projects, "away", "Teach", timeout_s=420)
    assert teach["state"] == "Succeeded", (teach, warnings(kubeconfig, namespace))
    assert teach["metrics"]["kept"] > 0
    result = read_result(teach["resultUri"])
    assert result is not None and result.input_hash == teach["inputHash"]
    assert not list(store.parent.glob("*.away")), "the store is back where it was"
    projects.delete("away")
    shutil.rmtree(store, ignore_errors=True)
