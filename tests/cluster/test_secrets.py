"""The teacher's API key reaches the teacher and nothing else a user can read (issue #8).

A full run against a real key-checking teacher endpoint: Investigate's prompt_variant
and Teach both call it with the key from the project's Secret; then status, events, the
operator's log, the Ray jobs' logs and records, and every file in the artifact store are
scanned for the key's value, plain and base64.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from kubernetes import client
from ray.job_submission import JobSubmissionClient

from distill_operator.devstack.operator_process import OperatorProcess

from .keyed_teacher import ANSWERED, REFUSED, SERVED_MODEL, KeyedTeacher
from .pipeline import LENIENT_BAR, TRAINING, write_traffic
from .projects import Projects, wait_for


def create_key_secret(core: client.CoreV1Api, namespace: str, api_key: str) -> None:
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="teacher-key"), string_data={"api-key": api_key}
    )
    core.create_namespaced_secret(namespace, secret)


def job_ids(status: dict[str, object]) -> set[str]:
    """Every job id in status: stages', and their candidates' (Investigate's parts)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            job = node.get("job")
            if isinstance(job, dict) and isinstance(job.get("id"), str):
                found.add(job["id"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(status)
    return found


def places_holding(needles: list[str], texts: dict[str, str]) -> list[str]:
    return sorted(place for place, text in texts.items() if any(n in text for n in needles))


def artifact_texts(root: Path) -> dict[str, str]:
    """Every file in the artifact store, decoded leniently (binary files included)."""
    return {
        f"artifact {path.relative_to(root)}": path.read_bytes().decode("utf-8", "replace")
        for path in root.rglob("*")
        if path.is_file()
    }


def create_keyed_project(
    projects: Projects, teacher: KeyedTeacher, traffic: Path, **more: object
) -> None:
    write_traffic(traffic, slices={"billing": 30, "login": 30}, references=True)
    projects.create(
        "keyed",
        **{
            "spec.source.traffic": [traffic.as_uri() + "/*.jsonl"],
            "spec.source.criticalSlices": [{"name": "login", "minCount": 5}],
            "spec.teacher": {
                "backend": "openai",
                "model": SERVED_MODEL,
                "endpoint": teacher.endpoint,
                "apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
                "parameters": 4197632,
                "topLogprobs": 5,
                "termsAcknowledged": True,
            },
            "spec.teach": {"maxOutputTokens": 8, "batchSize": 16},
            # The API alternative has no price, so it misses the bar and Teach runs.
            "spec.investigate.alternatives": [
                {"name": "terse", "kind": "prompt_variant", "prompt": "Answer in one word."}
            ],
            "spec.bar": LENIENT_BAR,
            "spec.students.training": TRAINING,
            **more,
        },
    )


def teach_done_with_the_key(projects: Projects, teacher: KeyedTeacher) -> dict[str, Any]:
    """The project's status once Teach succeeded, every teacher call answered."""

    def finished() -> dict[str, Any] | None:
        status = projects.status("keyed")
        stalled = [c for c in status.get("conditions", []) if c["type"] == "Stalled"]
        assert not stalled or stalled[0]["status"] != "True", stalled
        teach = next((s for s in status.get("stages", []) if s["name"] == "Teach"), {})
        return teach if teach.get("finishedAt") else None

    teach = wait_for("Teach to finish", finished, timeout_s=240)
    status = projects.status("keyed")
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["Investigate"]["reason"] == "AlternativesRuledOut", stages["Investigate"]
    assert teach["state"] == "Succeeded", teach
    assert teach["metrics"]["kept"] > 0
    # The teacher answered with the key: it refuses anything without it.
    served = teacher.log_text()
    assert len(ANSWERED.findall(served)) >= teach["metrics"]["kept"], served[-2000:]
    assert not REFUSED.search(served), served[-2000:]
    return status


def key_needles(api_key: str) -> list[str]:
    return [api_key, base64.b64encode(api_key.encode()).decode()]


def readable_places(
    projects: Projects, operator: OperatorProcess, ray_jobs: JobSubmissionClient, ids: set[str]
) -> dict[str, str]:
    """What a user can read of a run: the project, events, the operator's log, the Ray
    jobs' logs, and the artifact store."""
    core = client.CoreV1Api(projects.custom.api_client)
    events = core.list_namespaced_event(projects.namespace)
    return {
        "project (spec and status)": json.dumps(projects.get("keyed")),
        "events": json.dumps(core.api_client.sanitize_for_serialization(events)),
        "operator log": operator.log_text(),
        **{f"Ray job {i} log": ray_jobs.get_job_logs(i) for i in ids},
        **artifact_texts(Path(projects.artifacts.removeprefix("file://"))),
    }


def ray_job_records(ray_jobs: JobSubmissionClient, ids: set[str]) -> dict[str, str]:
    """What Ray shows of each job to whoever may use its job API."""
    return {f"Ray job {i} record": ray_jobs.get_job_info(i).model_dump_json() for i in ids}


def jobs_ray_has(status: dict[str, Any], ray_jobs: JobSubmissionClient) -> set[str]:
    # A job id is saved in status before its submit: scan the jobs Ray has.
    ids = job_ids(status) & {job.submission_id for job in ray_jobs.list_jobs()}
    assert len(ids) >= 3, ids  # Source, Investigate's alternative, Teach
    return ids


def test_a_full_run_with_an_api_teacher_leaks_its_key_nowhere_a_user_can_read(
    projects: Projects,
    custom: client.CustomObjectsApi,
    namespace: str,
    operator: OperatorProcess,
    ray_jobs: JobSubmissionClient,
    keyed_teacher: KeyedTeacher,
    api_key: str,
    tmp_path: Path,
) -> None:
    create_key_secret(client.CoreV1Api(custom.api_client), namespace, api_key)
    create_keyed_project(projects, keyed_teacher, tmp_path / "traffic")
    try:
        ids = jobs_ray_has(teach_done_with_the_key(projects, keyed_teacher), ray_jobs)
        needles = key_needles(api_key)
        assert places_holding(needles, readable_places(projects, operator, ray_jobs, ids)) == []
        # In ray.secretDelivery runtimeEnv (the default) the key can only travel in the
        # job's runtime_env (Ray takes no Secret reference), so the jobs that call the
        # teacher, and only those, carry it there; RayJobs and the router's Deployment
        # take it by secretKeyRef, and secretDelivery cluster sends nothing (below).
        calls_teacher = {
            f"Ray job {i} record" for i in ids if re.search("-(investigate|teach|look|launch)-", i)
        }
        assert set(places_holding(needles, ray_job_records(ray_jobs, ids))) == calls_teacher
    finally:
        projects.delete("keyed")
