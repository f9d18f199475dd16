"""``kubectl distill`` against real projects on the local control plane: the plugin runs
as a subprocess, the way kubectl runs it, and prints what status and Look's report hold.

The first test writes a project's status the way the operator does (a Teach job that
really ran on the session's Ray head, a Look that failed a critical slice, its report
ConfigMap from Look's own report module), so it needs no operator and no training; it
comes first, before this module starts the operator. The others run under the operator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes import client
from ray.job_submission import JobStatus, JobSubmissionClient

from distill_jobs.evaluation.report import summary
from distill_jobs.evaluation.slices import SliceRow
from distill_operator import api
from distill_operator.devstack.binaries import resolve_binaries
from distill_operator.launch.base import ray_job_dashboard
from manifests import example_manifest

from .projects import RAY_IMAGE, Projects, wait_for

BIN = Path(sys.executable).parent
T0 = "2026-11-23T12:00:00Z"
TRANSCRIPT = "DISTILL_CLI_TRANSCRIPT"
"""A file each command and what it printed are appended to (docs/cli.md's samples)."""


def distill(kubeconfig: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``kubectl-distill ARGS`` with the test cluster's kubeconfig."""
    result = subprocess.run(
        [str(BIN / "kubectl-distill"), *args],
        env={**os.environ, "KUBECONFIG": kubeconfig, "COLUMNS": os.environ.get("COLUMNS", "200")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    transcript = os.environ.get(TRANSCRIPT)
    if transcript:
        with open(transcript, "a") as out:
            out.write(f"$ kubectl distill {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    return result


def distill_json(kubeconfig: str, *args: str) -> Any:
    return json.loads(distill(kubeconfig, *args, "-o", "json").stdout)


def run_ray_job(ray_jobs: JobSubmissionClient, job_id: str, *lines: str) -> None:
    """A real Ray job that prints ``lines``, finished."""
    code = ";".join(f"print({line!r})" for line in lines)
    ray_jobs.submit_job(entrypoint=f"python -c {json.dumps(code)}", submission_id=job_id)
    wait_for(f"job {job_id}", lambda: ray_jobs.get_job_status(job_id) == JobStatus.SUCCEEDED)


def look_report() -> dict[str, str]:
    rows = [
        SliceRow("refund-fraud", 12, 0.25, 0.3333, 0.75, 0.85, True, False, 40, 3, 40),
        SliceRow("billing", 40, 0.95, 0.975, 0.95, None, False, None, 300, 2),
    ]
    disagreements = [
        {"id": f"p{i}", "slice": "refund-fraud", "prompt": f"charged twice, refund #{i}",
         "reference": "refund-fraud", "student": "refund", "teacher": "billing",
         "student_correct": False, "teacher_correct": False}
        for i in range(3)
    ]  # fmt: skip
    return summary(
        rows=rows,
        disagreements=disagreements,
        overall="student tiny 0.82 vs teacher 0.86 (exact_match, 52 held-out prompts)",
        diagnosis="Teach (TeacherWrongOnSlice): refund-fraud: the teacher is wrong too",
        table_uri="file:///artifacts/look/slices.json",
    )


def failed_look_status(*, ray_address: str, teach_job: str, report: str) -> dict[str, Any]:
    """Status as the operator writes it when Look fails a critical slice."""

    def stage(name: str, state: str, reason: str, message: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "state": state, "reason": reason, "message": message,
                "startedAt": T0, "finishedAt": "2026-11-23T12:02:30Z", **more}  # fmt: skip

    dashboard = ray_job_dashboard(address=ray_address, submission_id=teach_job)
    teach = {"mode": "submit", "id": teach_job, "state": "Succeeded", "dashboard": dashboard}
    status = {
        "observedGeneration": 1,
        "stage": "Look",
        "phase": "Failed",
        "stages": [
            stage("Define", "Succeeded", "TaskDefined", "task and bar defined"),
            stage("Teach", "Succeeded", "Done", "880 teacher outputs kept", job=teach,
                  exitCondition="clean outputs kept"),
            stage("Look", "Failed", "SlicesBelowBar", "refund-fraud 0.25 < 0.85 (short by 0.6)",
                  reportConfigMap=report, exitCondition="critical slices refund-fraud>=0.85"),
        ],
        "conditions": [{"type": "SlicesPass", "status": "False", "reason": "SlicesBelowBar",
                        "lastTransitionTime": T0, "observedGeneration": 1}],
        "diagnosis": {"stage": "Teach", "reason": "TeacherWrongOnSlice",
                      "message": "the teacher is wrong on refund-fraud"},
    }  # fmt: skip
    parsed = api.ProjectStatus.model_validate(status)  # the shape the CRD accepts
    return parsed.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_status_slices_disagreements_and_teach_logs_print_what_the_project_holds(
    kubeconfig: str,
    custom: client.CustomObjectsApi,
    namespace: str,
    ray_jobs: JobSubmissionClient,
    ray_address: str,
    run_id: str,
    tmp_path: Path,
) -> None:
    teach_job = f"dp-{run_id}-cli-teach-a0"
    run_ray_job(ray_jobs, teach_job, "teacher answered 880 prompts", "kept 880, dropped 0")
    report = "looked-look"
    core = client.CoreV1Api(custom.api_client)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": report}, "data": look_report()}
    )
    manifest = example_manifest("looked")
    custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
    status = failed_look_status(ray_address=ray_address, teach_job=teach_job, report=report)
    custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "looked", {"status": status}
    )

    shown = distill_json(kubeconfig, "status", "looked", "-n", namespace)
    assert (shown["stage"], shown["phase"]) == ("Look", "Failed")
    assert [(e["stage"], e["state"]) for e in shown["timeline"]][:3] == [
        ("Define", "Succeeded"), ("Teach", "Succeeded"), ("Look", "Failed"),
    ]  # fmt: skip
    assert shown["timeline"][1]["job"]["id"] == teach_job
    assert shown["timeline"][1]["durationSeconds"] == 150.0
    assert shown["diagnosis"]["reason"] == "TeacherWrongOnSlice"
    assert shown["reportConfigMap"] == report
    svg = tmp_path / "timeline.svg"
    table = distill(kubeconfig, "status", "looked", "-n", namespace, "--svg", str(svg)).stdout
    assert f"{namespace}/looked: stage Look, phase Failed" in table
    assert "SlicesBelowBar: refund-fraud 0.25 < 0.85" in table and "✗ SlicesPass" in table
    assert f"Last job: Teach {teach_job} (submit, Succeeded)" in table
    assert f"dashboard: {ray_address}/#/jobs/{teach_job}" in table
    assert "Diagnosis: Teach (TeacherWrongOnSlice)" in table
    assert "Look: student tiny 0.82 vs teacher 0.86" in table
    assert svg.read_text().startswith("<svg") and "TeacherWrongOnSlice" in svg.read_text()

    slices = distill_json(kubeconfig, "slices", "looked", "-n", namespace)
    assert slices["slices"] == json.loads(look_report()["slices.json"])
    assert slices["diagnosis"].startswith("Teach (TeacherWrongOnSlice)")
    table = distill(kubeconfig, "slices", "looked", "-n", namespace).stdout
    fraud = next(line for line in table.splitlines() if "refund-fraud" in line)
    assert [cell.strip() for cell in fraud.split("│")[2:5]] == ["12", "0.25", "0.333"]
    assert "0.85" in fraud and "FAIL" in fraud

    found = distill_json(kubeconfig, "disagreements", "looked", "-n", namespace, "--limit", "1")
    counts = {group["slice"]: group["count"] for group in found["slices"]}
    assert counts == {"refund-fraud": 3, "billing": 2}
    assert found["slices"][0]["examples"][0]["prompt"] == "charged twice, refund #0"
    table = distill(kubeconfig, "disagreements", "looked", "-n", namespace).stdout
    assert "refund-fraud: 3 disagreement(s) with the teacher" in table
    assert "charged twice, refund #2" in table

    logs = distill(kubeconfig, "logs", "looked", "-n", namespace, "--stage", "teach")
    assert logs.stdout.splitlines() == ray_jobs.get_job_logs(teach_job).splitlines()
    assert {"teacher answered 880 prompts", "kept 880, dropped 0"} <= set(logs.stdout.splitlines())
    assert f"job {teach_job}, attempt 0" in logs.stderr
    followed = distill(kubeconfig, "logs", "looked", "-n", namespace, "--stage", "teach", "-f")
    assert "kept 880, dropped 0" in followed.stdout.splitlines()


def test_a_missing_project_namespace_report_or_job_is_one_line_and_exit_1(
    kubeconfig: str, projects: Projects, namespace: str
) -> None:
    projects.create("nodata")  # the operator fails it at Source: no traffic
    wait_for("Source to finish", lambda: projects.stage("nodata", "Source").get("finishedAt"))
    cases = {
        ("status", "absent", "-n", namespace): f"project {namespace}/absent not found",
        ("slices", "nodata", "-n", "no-such-ns"): "namespace no-such-ns not found",
        ("slices", "nodata", "-n", namespace): (
            f"project {namespace}/nodata has no Look report yet (Look is Pending)"
        ),
        ("logs", "nodata", "-n", namespace, "--stage", "teach"): "Teach has no job yet (Pending)",
    }
    for args, message in cases.items():
        failed = distill(kubeconfig, *args, check=False)
        assert failed.returncode == 1, (args, failed.stdout)
        assert failed.stderr == f"kubectl distill {args[0]}: {message}\n", args


def test_source_logs_are_the_real_ray_jobs_and_status_names_its_job(
    kubeconfig: str, projects: Projects, namespace: str, ray_jobs: JobSubmissionClient
) -> None:
    projects.create("nodata")
    source = wait_for(
        "Source to finish",
        lambda: (s := projects.stage("nodata", "Source")).get("finishedAt") and s,
    )
    job_id = source["job"]["id"]
    shown = distill_json(kubeconfig, "status", "nodata", "-n", namespace)
    by_stage = {e["stage"]: e for e in shown["timeline"] if not e["candidate"]}
    assert {name: e["state"] for name, e in by_stage.items()} == {
        s["name"]: s["state"] for s in projects.status("nodata")["stages"]
    }
    assert by_stage["Source"]["job"]["id"] == job_id
    assert by_stage["Source"]["reason"] == "NoTraffic"
    assert shown["currentJobs"][0]["logs"].endswith(f"-n {namespace} --stage source")
    logs = distill(kubeconfig, "logs", "nodata", "-n", namespace, "--stage", "source").stdout
    assert logs.splitlines() == ray_jobs.get_job_logs(job_id).splitlines()
    assert "NoTraffic" in logs
    # kubectl itself finds the plugin on PATH and runs it with the same answer.
    kubectl = resolve_binaries().kubectl
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{BIN}:{os.environ['PATH']}"}
    plugins = subprocess.run(
        [str(kubectl), "plugin", "list"], env=env, capture_output=True, text=True, check=False
    )
    assert str(BIN / "kubectl-distill") in plugins.stdout, plugins.stderr
    via_kubectl = subprocess.run(
        [str(kubectl), "distill", "status", "nodata", "-n", namespace, "-o", "json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(via_kubectl.stdout)["timeline"] == shown["timeline"]


def test_logs_of_a_rayjob_stage_come_from_the_ray_cluster_its_status_names(
    kubeconfig: str, projects: Projects, standin: Any, ray_jobs: JobSubmissionClient
) -> None:
    projects.create("kuberay", **{"spec.ray.mode": "rayjob", "spec.ray.image": RAY_IMAGE})
    source = wait_for(
        "Source to finish",
        lambda: (s := projects.stage("kuberay", "Source")).get("finishedAt") and s,
    )
    assert source["job"]["mode"] == "rayjob"
    namespace = projects.namespace
    logs = distill(kubeconfig, "logs", "kuberay", "-n", namespace, "--stage", "source").stdout
    assert "NoTraffic" in logs
    assert logs.splitlines() == ray_jobs.get_job_logs(source["job"]["id"]).splitlines()
