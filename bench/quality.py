"""Quality of distillation on the synthetic task: does a student at most 1/10 of the
teacher's size keep at least 95% of the teacher's metric?

The operator's own stage inputs, run through the real workloads on a local Ray (no
control plane): the spec is ``examples/intent-classifier.yaml`` (the demo's, its latency
and cost targets lifted), pointed at
a teacher trained here on the synthetic ticket task (``distill_jobs.synthetic``, on a
sample of its own) and at traffic the teacher never saw, with the rare critical slice
``refund-fraud`` (about 3% of traffic). Source splits the traffic, Teach collects the
teacher's answers on the training prompts, Iterate trains every candidate with DeepSpeed,
and Look scores each student and the teacher on Source's held-out prompts, per slice.

``python bench/quality.py [--rows 2000] [--cache DIR]`` prints a table and writes
``bench/results/quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "intent-classifier.yaml"
SIZE_TARGET, QUALITY_TARGET = 0.1, 0.95


def run(*, root: Path, rows: int, cache: Path) -> dict[str, Any]:
    from distill_jobs import evaluate, source, synthetic, teach, train
    from distill_jobs.contract import StageInput, StageResult, write_result
    from distill_jobs.raycluster import connect
    from distill_operator.api import ProjectSpec, Stage
    from distill_operator.stages import BY_STAGE

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    teacher = synthetic.train_teacher(root / "teacher", cache_dir=cache)
    seconds["teacher"] = time.perf_counter() - started
    synthetic.write_traffic(root / "traffic", rows=rows, seed=0)
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["teacher"]["model"] = str(teacher.path)
    manifest["spec"]["source"]["traffic"] = [(root / "traffic").as_uri() + "/*.jsonl"]
    manifest["spec"]["artifacts"]["uri"] = (root / "artifacts").as_uri()
    # Quality is measured here, not serving: latency and cost (which depend on what else
    # the machine runs) must not keep a student from Look.
    manifest["spec"]["bar"].update(latencyP95Ms=60000.0, costPer1kRequests=1000.0)
    spec = ProjectSpec.model_validate(manifest["spec"])

    def stage_input(stage: Stage, excerpt: dict[str, Any], **upstream: str) -> StageInput:
        return StageInput(
            project="bench/quality",
            project_uid="bench",
            stage=stage.value,
            spec=excerpt,
            upstream=upstream,
            artifacts_uri=spec.artifacts.uri,
        )

    def done(name: str, work: Any, given: StageInput) -> StageResult:
        began = time.perf_counter()
        result: StageResult = work(given)
        seconds[name] = time.perf_counter() - began
        write_result(result, given.result_uri())
        if not result.exit_condition_met and given.stage != Stage.ITERATE.value:
            raise SystemExit(f"{name}: {result.reason}: {result.message}")
        return result

    connect()
    sourced = stage_input(Stage.SOURCE, BY_STAGE[Stage.SOURCE].spec_excerpt(spec))
    done("source", source.work, sourced)
    taught = stage_input(
        Stage.TEACH, BY_STAGE[Stage.TEACH].spec_excerpt(spec), Source=sourced.result_uri()
    )
    done("teach", teach.work, taught)
    iterate = BY_STAGE[Stage.ITERATE]
    assert iterate.parts is not None
    students = []
    for name, excerpt in iterate.parts(spec):
        trained_input = stage_input(
            Stage.ITERATE, excerpt, Source=sourced.result_uri(), Teach=taught.result_uri()
        )
        trained = done(f"train {name}", train.work, trained_input)
        if "student" not in trained.artifacts:
            raise SystemExit(f"train {name}: {trained.reason}: {trained.message}")
        looked = done(
            f"look {name}",
            evaluate.work,
            stage_input(
                Stage.LOOK,
                BY_STAGE[Stage.LOOK].spec_excerpt(spec),
                Source=sourced.result_uri(),
                Teach=taught.result_uri(),
                Iterate=trained_input.result_uri(),
            ),
        )
        with open(looked.artifacts["slices"].removeprefix("file://")) as handle:
            slices = json.load(handle)
        students.append(
            {
                "name": name,
                "parameters": int(trained.metrics["parameters"]),
                "score": looked.metrics["score"],
                "teacher_score": looked.metrics["teacher_score"],
                "slices": {row["slice"]: row["student_score"] for row in slices},
                "teacher_slices": {row["slice"]: row["teacher_score"] for row in slices},
                "held_out": {row["slice"]: row["held_out"] for row in slices},
                "training_rows": {row["slice"]: row["training_rows"] for row in slices},
                "look": looked.reason,
            }
        )
    return {"teacher": {"parameters": teacher.parameters}, "students": students,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}  # fmt: skip


def judged(figures: dict[str, Any]) -> dict[str, Any]:
    """Each student's size and quality as fractions of the teacher's, and the target."""
    teacher_parameters = figures["teacher"]["parameters"]
    for student in figures["students"]:
        student["size_fraction"] = student["parameters"] / teacher_parameters
        teacher_score = student["teacher_score"]
        student["quality_fraction"] = student["score"] / teacher_score if teacher_score else None
    meets = [
        s["name"]
        for s in figures["students"]
        if s["size_fraction"] <= SIZE_TARGET and (s["quality_fraction"] or 0) >= QUALITY_TARGET
    ]
    figures["target"] = {"size_at_most": SIZE_TARGET, "quality_at_least": QUALITY_TARGET,
                         "met_by": meets, "met": bool(meets)}  # fmt: skip
    return figures


def table(figures: dict[str, Any]) -> str:
    students = figures["students"]
    slices = sorted({name for s in students for name in s["slices"]})
    head = ["model", "parameters", "size", "overall", "quality", *slices]
    teacher = students[0]
    lines = [
        ["teacher", f"{figures['teacher']['parameters']:,}", "1", f"{teacher['teacher_score']:.3f}",
         "1", *(_score(teacher["teacher_slices"].get(n)) for n in slices)],
        *(
            [s["name"], f"{s['parameters']:,}", f"1/{1 / s['size_fraction']:.0f}",
             f"{s['score']:.3f}", f"{s['quality_fraction']:.1%}",
             *(_score(s["slices"].get(n)) for n in slices)]
            for s in students
        ),
        ["held-out n", "", "", "", "", *(str(teacher["held_out"].get(n, 0)) for n in slices)],
        ["training rows", "", "", "", "",
         *(str(teacher["training_rows"].get(n, 0)) for n in slices)],
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [head, *lines]) for i in range(len(head))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [head, *lines]
    )


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2000, help="traffic rows")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "distill-operator" / "demo")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="distill-quality-"))
    began = time.perf_counter()
    try:
        figures = judged(run(root=root, rows=args.rows, cache=args.cache))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["seconds"]["total"] = round(time.perf_counter() - began, 1)
    figures["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(table(figures))
    target = figures["target"]
    verdict = f"met by {', '.join(target['met_by'])}" if target["met"] else "NOT met"
    print(f"\ntarget (a student ≤ 1/10 of the teacher's parameters keeps ≥ 95% of its "
          f"metric): {verdict}; seconds {figures['seconds']}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    return 0 if target["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
