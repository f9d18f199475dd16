"""Project inputs of the pipeline tests: traffic files, and results seeded where a stage's
workload belongs to a later issue."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

from distill_jobs.contract import StageInput, StageResult, write_result
from distill_operator.api import ProjectSpec, Stage
from distill_operator.stages import BY_STAGE

SLICES = {"billing": 60, "shipping": 50, "login": 40, "refund-fraud": 30}
# Two DeepSpeed workers, four steps at a learning rate so small the students barely move:
# training runs for real and stays quick.
TRAINING = {
    "workers": 2,
    "cpusPerWorker": 0.5,
    "microBatchSize": 8,
    "maxSteps": 4,
    "learningRate": 1e-6,
    "warmupSteps": 1,
    "deepspeed": {"zeroStage": 2, "precision": "fp32"},
}
# A bar any student clears: the tests that use it are about what happens after.
LENIENT_BAR = {"metric": "exact_match", "threshold": 0.0, "costPer1kRequests": 1000.0,
               "latencyP95Ms": 60000.0}  # fmt: skip


def write_traffic(
    directory: Path,
    *,
    seed: int = 7,
    slices: dict[str, int] | None = None,
    references: bool = False,
) -> int:
    """Chat-JSONL traffic with distinct prompts and a rare critical slice, in two files;
    with ``references``, each row's known-good answer is its prompt's first word."""
    rng = random.Random(seed)
    rows = []
    for slice_name, count in (slices or SLICES).items():
        for _ in range(count):
            words = " ".join("".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(8))
            row = {"messages": [{"role": "user", "content": words}], "slice": slice_name}
            rows.append({**row, "reference": words.split()[0]} if references else row)
    rng.shuffle(rows)
    directory.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2
    for index, part in enumerate((rows[:half], rows[half:])):
        lines = "\n".join(json.dumps(row) for row in part)
        (directory / f"traffic-{index}.jsonl").write_text(lines + "\n")
    return len(rows)


def seed_investigate_result(manifest: dict[str, Any], namespace: str) -> None:
    """Write a missed-the-bar result for each of Investigate's alternatives, where their
    jobs would have written them, for tests about the stages after Investigate.

    Results are content-addressed by stage input (spec excerpt and upstream results, not
    the project's uid), so the operator re-uses these exactly as it re-uses any earlier
    run's. Investigate itself is tested for real in test_evaluate_pipeline.py.
    """
    spec = ProjectSpec.model_validate(manifest["spec"])
    project = f"{namespace}/{manifest['metadata']['name']}"

    def stage_input(stage: Stage, excerpt: dict[str, Any], upstream: dict[str, str]) -> StageInput:
        return StageInput(
            project=project,
            project_uid="seeded-by-test",
            stage=stage.value,
            spec=excerpt,
            upstream=upstream,
            artifacts_uri=spec.artifacts.uri,
        )

    source = stage_input(Stage.SOURCE, BY_STAGE[Stage.SOURCE].spec_excerpt(spec), {})
    investigate = BY_STAGE[Stage.INVESTIGATE]
    assert investigate.parts is not None
    for name, excerpt in investigate.parts(spec):
        part = stage_input(Stage.INVESTIGATE, excerpt, {"Source": source.result_uri()})
        result = StageResult(
            stage=Stage.INVESTIGATE.value,
            input_hash=part.input_hash(),
            exitConditionMet=False,
            reason="BarMissed",
            message=f"{name} misses the bar (seeded by the test)",
        )
        write_result(result, part.result_uri())
