"""The teacher's API key reaches the teacher and nothing else a user can read (issue #8).

A full run against a real key-checking teacher endpoint: Investigate's prompt_variant
and Teach both call it with the key from the project's Secret; then status, events, the
operator's log, the Ray jobs' logs and records, and every file in the artifact store are
scanned for the key's value, plain and base64.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client
from ray.job_submission import JobSubmissionClient

from distill_jobs.tiny import build_tiny_model
from distill_operator.devstack.operator_process import OperatorProcess

from .pipeline import LENIENT_BAR, TRAINING, write_traffic
from .projects import Projects, unused_loopback_port, wait_for

SERVED_MODEL = "keyed-teacher"
KEY_ENV = "KEYED_TEACHER_API_KEY"
# aiohttp's access log: `"POST /v1/chat/completions HTTP/1.1" 200`.
ANSWERED = re.compile(r'"POST /v1/chat/completions HTTP/[\d.]+" 200 ')
REFUSED = re.compile(r'"POST /v1/chat/completions HTTP/[\d.]+" 401 ')


class KeyedTeacher:
    """``python -m distill_jobs.apiserver`` requiring ``key``, with its access log."""

    def __init__(self, *, model: Path, key: str, log_path: Path) -> None:
        self.port = unused_loopback_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        command = [sys.executable, "-m", "distill_jobs.apiserver", "--model", str(model),
                   "--served-model-name", SERVED_MODEL, "--port", str(self.port),
                   "--api-key-env", KEY_ENV]  # fmt: skip
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, KEY_ENV: key}, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_until_serving(self) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, self.log_text()
            try:
                return requests.get(f"{self.endpoint}/models", timeout=2).status_code == 401
            except requests.ConnectionError:
                return False

        wait_for("the teacher endpoint to listen", answers, timeout_s=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def api_key() -> str:
    """A key no other text could contain by chance."""
    return f"sk-leakcheck-{secrets.token_hex(16)}"


@pytest.fixture
def keyed_teacher(tmp_path: Path, api_key: str) -> Iterator[KeyedTeacher]:
    model = build_tiny_model(directory=tmp_path / "teacher-model", seed=0)
    teacher = KeyedTeacher(model=model, key=api_key, log_path=tmp_path / "teacher.log")
    try:
        teacher.wait_until_serving()
        yield teacher
    finally:
        teacher.stop()


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
    core = client.CoreV1Api(custom.api_client)
    create_key_secret(core, namespace, api_key)
    write_traffic(tmp_path / "traffic", slices={"billing": 30, "login": 30}, references=True)
    projects.create(
        "keyed",
        **{
            "spec.source.traffic": [(tmp_path / "traffic").as_uri() + "/*.jsonl"],
            "spec.source.criticalSlices": [{"name": "login", "minCount": 5}],
            "spec.teacher": {
                "backend": "openai",
                "model": SERVED_MODEL,
                "endpoint": keyed_teacher.endpoint,
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
        },
    )
    try:
        teach = wait_for(
            "Teach to finish",
            lambda: (s := projects.stage("keyed", "Teach")).get("finishedAt") and s,
            timeout_s=240,
        )
        status = projects.status("keyed")
        stages = {s["name"]: s for s in status["stages"]}
        assert stages["Investigate"]["reason"] == "AlternativesRuledOut", stages["Investigate"]
        assert teach["state"] == "Succeeded", teach
        assert teach["metrics"]["kept"] > 0
        # The teacher answered with the key: it refuses anything without it.
        served = keyed_teacher.log_text()
        assert len(ANSWERED.findall(served)) >= teach["metrics"]["kept"], served[-2000:]
        assert not REFUSED.search(served), served[-2000:]

        needles = [api_key, base64.b64encode(api_key.encode()).decode()]
        # A job id is saved in status before its submit: scan the jobs Ray has.
        ids = job_ids(status) & {job.submission_id for job in ray_jobs.list_jobs()}
        assert len(ids) >= 3, ids  # Source, Investigate's alternative, Teach
        readable = {
            "project (spec and status)": json.dumps(projects.get("keyed")),
            "events": json.dumps(
                core.api_client.sanitize_for_serialization(core.list_namespaced_event(namespace))
            ),
            "operator log": operator.log_text(),
            **{f"Ray job {i} log": ray_jobs.get_job_logs(i) for i in ids},
            **artifact_texts(Path(projects.artifacts.removeprefix("file://"))),
        }
        assert places_holding(needles, readable) == []

        # What Ray shows of each job to whoever may use its job API. In ray.mode submit
        # the key can only travel in the job's runtime_env (Ray takes no Secret
        # reference), so the jobs that call the teacher, and only those, carry it there;
        # RayJobs and the router's Deployment take it by secretKeyRef instead.
        records = {f"Ray job {i} record": ray_jobs.get_job_info(i).model_dump_json() for i in ids}
        calls_teacher = {
            f"Ray job {i} record" for i in ids if re.search("-(investigate|teach|look|launch)-", i)
        }
        assert set(places_holding(needles, records)) == calls_teacher
    finally:
        projects.delete("keyed")
