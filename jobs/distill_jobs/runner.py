"""The ``main()`` every workload shares: read a StageInput, run, write a StageResult."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import fsspec

from distill_jobs.contract import StageInput, StageResult, write_result

StageWork = Callable[[StageInput], StageResult]


def load_input(uri: str) -> StageInput:
    with fsspec.open(uri, "r") as handle:
        return StageInput.model_validate_json(handle.read())


def stage_main(work: StageWork, argv: Sequence[str] | None = None) -> int:
    """Parse ``--input URI``, run ``work`` and write its result next to the input."""
    parser = argparse.ArgumentParser(description=work.__doc__)
    parser.add_argument("--input", required=True, help="URI of the StageInput JSON")
    args = parser.parse_args(argv)
    stage_input = load_input(args.input)
    result = work(stage_input)
    write_result(result, stage_input.result_uri())
    print(f"{stage_input.stage}: {result.reason}: {result.message}", file=sys.stderr)
    return 0


def not_built(module: str, issue: int) -> StageWork:
    """Work for a stage whose workload does not exist yet: it says so, never succeeds."""

    def work(stage_input: StageInput) -> StageResult:
        return StageResult(
            stage=stage_input.stage,
            input_hash=stage_input.input_hash(),
            exitConditionMet=False,
            reason="WorkloadNotBuilt",
            message=f"the {stage_input.stage} workload ({module}) is not built yet "
            f"(tracked in issue #{issue}); the stage cannot pass until it is",
        )

    work.__doc__ = f"{module}: not built yet."
    return work
