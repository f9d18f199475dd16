"""A training job killed mid-run resumes from its last checkpoint, as a new Ray job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from distill_jobs.contract import read_result
from distill_jobs.tiny import build_tiny_model
from training_inputs import arithmetic_prompts, candidate_input, teacher_rows

from .projects import wait_for

STEPS = 60
CHECKPOINT_EVERY = 10


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from distill_jobs.teachers.generation import LocalGenerator

    teacher = build_tiny_model(directory=tmp_path_factory.mktemp("teacher") / "model", seed=0)
    return teacher_rows(
        LocalGenerator.load(model=str(teacher), device="cpu"), arithmetic_prompts(24)
    )


def submit(ray_jobs: JobSubmissionClient, input_uri: str, job_id: str) -> str:
    return ray_jobs.submit_job(
        entrypoint=f"python -m distill_jobs.train --input {input_uri}", submission_id=job_id
    )


def latest_step(checkpoints: Path) -> int:
    marker = checkpoints / "latest"
    return int(marker.read_text().removeprefix("step-")) if marker.exists() else 0


def test_a_killed_training_job_resumes_from_its_checkpoint_not_from_zero(
    ray_jobs: JobSubmissionClient, tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    stage_input = candidate_input(
        tmp_path,
        rows=rows,
        held_out=[],
        candidate={"name": "tiny", "preset": "tiny"},
        training={
            "workers": 2,
            "cpusPerWorker": 0.5,
            "microBatchSize": 2,
            "epochs": 100,
            "maxSteps": STEPS,
            "checkpointEverySteps": CHECKPOINT_EVERY,
        },
    )
    stage_dir = Path(stage_input.stage_dir().removeprefix("file://"))
    input_uri = f"{stage_input.stage_dir()}/input.json"
    stage_dir.mkdir(parents=True)
    (stage_dir / "input.json").write_text(stage_input.model_dump_json())
    run = f"resume-{tmp_path.name}"[-40:]

    first = submit(ray_jobs, input_uri, f"{run}-a0")
    wait_for(
        "a checkpoint", lambda: latest_step(stage_dir / "checkpoints") >= CHECKPOINT_EVERY, 300
    )
    ray_jobs.stop_job(first)
    wait_for("the job to stop", lambda: ray_jobs.get_job_status(first).is_terminal(), 60)
    assert ray_jobs.get_job_status(first) == JobStatus.STOPPED
    killed_at = latest_step(stage_dir / "checkpoints")
    assert 0 < killed_at < STEPS and read_result(stage_input.result_uri()) is None

    second = submit(ray_jobs, input_uri, f"{run}-a1")
    wait_for("the retry to finish", lambda: ray_jobs.get_job_status(second).is_terminal(), 400)
    assert ray_jobs.get_job_status(second) == JobStatus.SUCCEEDED, ray_jobs.get_job_logs(second)[
        -3000:
    ]
    result = read_result(stage_input.result_uri())
    assert result is not None and result.reason == "BarCleared", result
    assert result.metrics["resumed_from_step"] >= killed_at
    assert result.metrics["steps"] == STEPS
    progress = json.loads((stage_dir / "progress.json").read_text())
    # The loss history goes on across the kill: points from before and after it.
    steps = [step for step, _ in progress["history"]]
    assert steps == sorted(steps) and steps[0] <= killed_at < steps[-1]
