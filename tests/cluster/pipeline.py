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


def write_traffic(directory: Path, *, seed: int = 7) -> int:
    """Chat-JSONL traffic with distinct prompts and a rare critical slice, in two files."""
    rng = random.Random(seed)
    rows = []
    for slice_name, count in SLICES.items():
        for _ in range(count):
            words = " ".join("".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(8))
            rows.append({"messages": [{"role": "user", "content": words}], "slice": slice_name})
    rng.shuffle(rows)
    directory.mkdir(parents=True)
    half = len(rows) // 2
    for index, part in enumerate((rows[:half], rows[half:])):
        lines = "\n".join(json.dumps(row) for row in part)
        (directory / f"traffic-{index}.jsonl").write_text(lines + "\n")
    return len(rows)


def seed_investigate_result(manifest: dict[str, Any], namespace: str) -> None:
    """Investigate's workload is issue #5's; write its result where a run would have.

    Results are content-addressed by stage input, so the operator re-uses this one
    exactly as it re-uses any earlier run's.
    """
    spec = ProjectSpec.model_validate(manifest["spec"])
    stage_input = StageInput(
        project=f"{namespace}/{manifest['metadata']['name']}",
        project_uid="seeded-by-test",
        stage=Stage.INVESTIGATE.value,
        spec=BY_STAGE[Stage.INVESTIGATE].spec_excerpt(spec),
        artifacts_uri=spec.artifacts.uri,
    )
    result = StageResult(
        stage=Stage.INVESTIGATE.value,
        input_hash=stage_input.input_hash(),
        exitConditionMet=True,
        reason="AlternativesRuledOut",
        message="seeded by the test: every alternative misses the bar",
    )
    write_result(result, stage_input.result_uri())
