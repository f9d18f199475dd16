"""Source → Teach → Iterate under the real operator, on the real control plane and local Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill_jobs.tiny import build_tiny_model
from manifests import example_manifest

from .pipeline import LENIENT_BAR, TRAINING, seed_investigate_result, write_traffic
from .projects import Projects, wait_for


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The teacher: a "small" tiny model, so that a copy of it is the larger student."""
    directory = tmp_path_factory.mktemp("teacher") / "model"
    return build_tiny_model(directory=directory, seed=0, preset="small")


# Two candidates on the same teacher data: a tiny one from scratch, and "mentor", a copy
# of the teacher itself. At a learning rate this small neither moves much, so the copy
# keeps answering as the teacher does and the tiny one does not: the bar decides who passes.
CANDIDATES = [{"name": "tiny", "preset": "tiny"}, {"name": "mentor", "pretrained": "TEACHER"}]


EARLIER = ("Define", "Investigate", "Source", "Teach")


def finished_iterate(projects: Projects, name: str, generation: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = projects.status(name)
        if status.get("observedGeneration") != generation:
            return None
        stopped_early = status.get("phase") == "Failed" and status.get("stage") in EARLIER
        assert not stopped_early, f"the project stopped before Iterate: {status}"
        iterate = projects.stage(name, "Iterate")
        return iterate if iterate.get("finishedAt") else None

    return wait_for("Iterate to finish", probe, timeout_s=600)  # type: ignore[no-any-return]


def test_source_then_teach_succeed_under_the_operator_with_their_counts_in_status(
    projects: Projects, namespace: str, tmp_path: Path, tiny_teacher: Path
) -> None:
    traffic_rows = write_traffic(tmp_path / "traffic")
    overrides = {
        "spec.artifacts.uri": projects.artifacts,
        "spec.source.traffic": [(tmp_path / "traffic").as_uri() + "/*.jsonl"],
        "spec.teacher.model": str(tiny_teacher),
        "spec.teacher.topLogprobs": 5,
        "spec.teach": {"maxOutputTokens": 8, "batchSize": 16, "reviewSampleRate": 0.1},
        # No oversampling: every training row is a distinct traffic row.
        "spec.source.allowOversampling": False,
        "spec.source.criticalSlices": [{"name": "refund-fraud", "minCount": 20}],
        "spec.bar": LENIENT_BAR,
        "spec.students": {
            "candidates": [
                {**c, "pretrained": str(tiny_teacher)} if "pretrained" in c else c
                for c in CANDIDATES
            ],
            "training": TRAINING,
        },
    }
    # Investigate reads the bar: seed its result for both bars this test uses.
    for threshold in (0.0, 0.5):
        bar = {**LENIENT_BAR, "threshold": threshold}
        manifest = example_manifest("pipeline", **{**overrides, "spec.bar": bar})
        seed_investigate_result(manifest, namespace)
    projects.create("pipeline", **overrides)
    teach = wait_for(
        "Teach to finish",
        lambda: (s := projects.stage("pipeline", "Teach")).get("finishedAt") and s,
        timeout_s=300,
    )
    source = projects.stage("pipeline", "Source")
    assert source["state"] == "Succeeded", source
    assert source["metrics"]["raw"] == traffic_rows
    assert source["metrics"]["train"] + source["metrics"]["held_out"] <= traffic_rows
    assert source["metrics"]["train_refund-fraud"] >= 20
    assert teach["state"] == "Succeeded", teach
    assert 0 < teach["metrics"]["kept"] <= source["metrics"]["train"]
    assert projects.condition("pipeline", "DataSourced")["status"] == "True"
    assert projects.condition("pipeline", "TeacherOutputsFiltered")["status"] == "True"

    # Iterate: both candidates clear a bar of 0, so the smaller is kept.
    iterate = finished_iterate(projects, "pipeline", generation=1)
    assert iterate["state"] == "Succeeded", iterate
    candidates = {c["name"]: c for c in iterate["candidates"]}
    assert {c["state"] for c in candidates.values()} == {"Succeeded"}
    assert (
        candidates["tiny"]["metrics"]["parameters"] < candidates["mentor"]["metrics"]["parameters"]
    )
    assert candidates["tiny"]["job"]["id"] != candidates["mentor"]["job"]["id"]
    student = projects.status("pipeline")["student"]
    assert student["name"] == "tiny" and student["uri"].endswith("/student")
    assert projects.condition("pipeline", "StudentSelected")["status"] == "True"
    before = {stage: projects.stage("pipeline", stage) for stage in ("Source", "Teach")}

    # Raise the bar: only the teacher's copy still clears it, so it is kept instead, and
    # Source and Teach are re-used, not run again.
    projects.patch("pipeline", {"spec": {"bar": {"threshold": 0.5}}})
    iterate = finished_iterate(projects, "pipeline", generation=2)
    assert iterate["state"] == "Succeeded", iterate
    candidates = {c["name"]: c for c in iterate["candidates"]}
    assert candidates["mentor"]["state"] == "Succeeded", candidates["mentor"]
    assert candidates["tiny"]["state"] == "Failed"
    assert "short by" in candidates["tiny"]["message"], candidates["tiny"]
    assert projects.status("pipeline")["student"]["name"] == "mentor"
    for stage, earlier in before.items():
        now = projects.stage("pipeline", stage)
        assert now["resultUri"] == earlier["resultUri"] and now["state"] == "Succeeded"
