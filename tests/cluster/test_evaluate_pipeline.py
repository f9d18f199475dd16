"""Investigate and Look under the real operator, on the real control plane and local Ray:
a baseline that clears the bar ends the project; a student that fails a critical slice
fails Look, naming the slice, the stage at fault and the evidence, in a ConfigMap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray.job_submission import JobSubmissionClient

from distill_jobs.synthetic import RARE_INTENT, train_teacher, write_traffic
from distill_jobs.tiny import build_tiny_model
from distill_operator.devstack import kubectl
from manifests import DELETE

from .projects import Projects, wait_for
from .test_cli import distill, distill_json

LENIENT_BAR = {"metric": "exact_match", "threshold": 0.0, "costPer1kRequests": 1000.0,
               "latencyP95Ms": 60000.0}  # fmt: skip


@pytest.fixture(scope="module")
def generic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model that knows nothing of the task."""
    return build_tiny_model(directory=tmp_path_factory.mktemp("generic") / "model", seed=3)


def test_a_baseline_that_clears_the_bar_ends_the_project_before_any_teacher_or_training(
    projects: Projects, kubeconfig: str, namespace: str, tmp_path: Path, generic_model: Path
) -> None:
    write_traffic(tmp_path / "traffic", rows=200, seed=1)
    projects.create(
        "baseline",
        **{
            "spec.bar": LENIENT_BAR,
            "spec.teacher.model": str(generic_model),
            "spec.source.traffic": [(tmp_path / "traffic").as_uri() + "/*.jsonl"],
            "spec.source.criticalSlices": [{"name": RARE_INTENT, "minCount": 1}],
            "spec.investigate.alternatives": [
                {"name": "generic", "kind": "off_the_shelf", "model": str(generic_model)},
                {"name": "teacher-int8", "kind": "quantized_teacher", "quantization": "int8"},
            ],
        },
    )
    status = wait_for(
        "the project to end",
        lambda: (
            (s := projects.status("baseline")).get("phase") in ("BaselineSufficient", "Failed")
            and s
        ),
        timeout_s=300,
    )
    stages = {s["name"]: s for s in status["stages"]}
    assert status["phase"] == "BaselineSufficient", stages["Investigate"]
    investigate = stages["Investigate"]
    assert investigate["reason"] == "BaselineSufficient"
    parts = {p["name"]: p for p in investigate["candidates"]}
    assert {p["state"] for p in parts.values()} == {"Succeeded"}
    assert all(p["metrics"]["held_out_prompts"] > 0 for p in parts.values())
    # Both clear a bar of 0; the cheaper one to serve is taken.
    cheaper = min(parts.values(), key=lambda p: p["metrics"]["cost_per_1k_requests"])
    assert status["student"]["name"] == cheaper["name"]
    assert f"serve {cheaper['name']}" in investigate["message"]
    for later in ("Teach", "Iterate", "Look", "Launch"):
        assert stages[later]["state"] == "Skipped" and not stages[later].get("job"), later
    assert stages["Source"]["state"] == "Succeeded"
    assert projects.condition("baseline", "Ready")["status"] == "True"
    row = kubectl(kubeconfig, "get", "dp", "baseline", "-n", namespace).stdout.splitlines()[1]
    assert row.split()[1:4] == ["Investigate", "BaselineSufficient", cheaper["name"]]


def _slice_rows(config_map: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["slice"]: row for row in json.loads(config_map["data"]["slices.json"])}


@pytest.fixture(scope="module")
def blind_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher that never saw a refund-fraud ticket: it answers them wrongly."""
    directory = tmp_path_factory.mktemp("blind") / "teacher"
    train_teacher(directory, preset="small", steps=150, blind_slices=(RARE_INTENT,))
    return directory


def test_a_student_that_copies_a_teacher_wrong_on_a_critical_slice_fails_look_naming_teach(
    projects: Projects,
    kubeconfig: str,
    namespace: str,
    tmp_path: Path,
    generic_model: Path,
    blind_teacher: Path,
    ray_jobs: JobSubmissionClient,
) -> None:
    write_traffic(tmp_path / "traffic", rows=900, seed=2)
    projects.create(
        "slices",
        **{
            "spec.teacher.model": str(blind_teacher),
            "spec.teacher.parameters": DELETE,
            "spec.students.candidates": [{"name": "tiny", "preset": "tiny"},
                                         {"name": "tiny-b", "preset": "tiny"}],
            "spec.bar": {**LENIENT_BAR, "threshold": 0.5},
            "spec.source.traffic": [(tmp_path / "traffic").as_uri() + "/*.jsonl"],
            "spec.investigate.alternatives": [
                {"name": "generic", "kind": "off_the_shelf", "model": str(generic_model)},
            ],
        },
    )  # fmt: skip
    status = wait_for(
        "the project to fail",
        lambda: (s := projects.status("slices")).get("phase") == "Failed" and s,
        timeout_s=900,
    )
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["Investigate"]["reason"] == "AlternativesRuledOut", stages["Investigate"]
    assert "short by" in stages["Investigate"]["message"]
    assert stages["Iterate"]["state"] == "Succeeded", stages["Iterate"]
    look = stages["Look"]
    assert look["state"] == "Failed" and look["reason"] == "SlicesBelowBar", look
    assert f"{RARE_INTENT} " in look["message"] and "short by" in look["message"]
    assert status["diagnosis"]["stage"] == "Teach", status["diagnosis"]
    assert status["diagnosis"]["reason"] == "TeacherWrongOnSlice"
    assert projects.condition("slices", "SlicesPass")["status"] == "False"
    # The evidence is in a ConfigMap the status names, readable with kubectl alone.
    name = look["reportConfigMap"]
    found = json.loads(
        kubectl(kubeconfig, "get", "configmap", name, "-n", namespace, "-o", "json").stdout
    )
    assert found["metadata"]["annotations"]["distill.dev/input-hash"] == look["inputHash"]
    rows = _slice_rows(found)
    fraud = rows[RARE_INTENT]
    assert fraud["critical"] and fraud["passes"] is False
    assert fraud["teacher_score"] < 0.85 and fraud["held_out"] > 0
    assert "TeacherWrongOnSlice" in found["data"]["diagnosis"]
    assert RARE_INTENT in found["data"]["slices.txt"]
    wide = kubectl(kubeconfig, "get", "dp", "slices", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[1].split()[-1] == "Teach", wide
    # kubectl distill prints the same: status, the slice numbers, the disagreements, and
    # the teacher job's log as Ray has it.
    table = distill(kubeconfig, "status", "slices", "-n", namespace).stdout
    assert "✗ SlicesPass" in table and "Diagnosis: Teach (TeacherWrongOnSlice)" in table
    shown = distill_json(kubeconfig, "status", "slices", "-n", namespace)
    assert {e["stage"]: e["state"] for e in shown["timeline"] if not e["candidate"]} == {
        name: stage["state"] for name, stage in stages.items()
    }
    assert shown["diagnosis"] == status["diagnosis"]
    printed = distill_json(kubeconfig, "slices", "slices", "-n", namespace)["slices"]
    assert {row["slice"]: row for row in printed} == rows
    table = distill(kubeconfig, "slices", "slices", "-n", namespace).stdout
    line = next(line for line in table.splitlines() if RARE_INTENT in line)
    assert f"{fraud['student_score']:.3g}" in line and "FAIL" in line
    table = distill(kubeconfig, "disagreements", "slices", "-n", namespace, "--limit", "2").stdout
    assert f"{RARE_INTENT}: {fraud['disagreements']} disagreement(s)" in table
    found = distill_json(kubeconfig, "disagreements", "slices", "-n", namespace)["slices"]
    assert {g["slice"]: g["count"] for g in found} == {
        n: r["disagreements"] for n, r in rows.items()
    }
    teach_job = stages["Teach"]["job"]["id"]
    logs = distill(kubeconfig, "logs", "slices", "-n", namespace, "--stage", "teach").stdout
    assert logs.splitlines() == ray_jobs.get_job_logs(teach_job).splitlines()
    assert f"{stages['Teach']['reason']}: " in logs  # the workload's last line, its verdict
