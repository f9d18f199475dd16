"""Look: the chosen student against the teacher on Source's held-out set, slice by slice.

Both answer every held-out prompt greedily and are scored with the bar's metric. The
student passes when its overall score clears the bar and every critical slice clears
its own threshold (``SlicesPass``, else ``SlicesBelowBar`` naming every failing slice
and its gap). When it fails, or a slice is far below the bar, the result carries a
:mod:`~distill_jobs.evaluation.diagnosis` naming the stage at fault.

Artifacts, in the stage dir: ``slices.json`` (the slice table), ``disagreements.jsonl``
(up to ``look.maxDisagreements`` per slice) and ``summary.json`` (ConfigMap data).
The models are small next to the training: they run in the driver, no Ray task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from distill_jobs.contract import StageInput
from distill_jobs.evaluation.answering import generation_limit, open_teacher, teacher_answers
from distill_jobs.evaluation.diagnosis import diagnose
from distill_jobs.evaluation.excerpts import LookSpec
from distill_jobs.evaluation.held_out import (
    check_metric,
    mean,
    read_held_out_prompts,
    scorable_prompts,
    score_answers,
)
from distill_jobs.evaluation.outcome import Outcome
from distill_jobs.evaluation.report import kept_disagreements, summary
from distill_jobs.evaluation.slices import (
    CriticalBar,
    Judgement,
    SliceRow,
    judge,
    normalise_answer,
    slice_table,
)
from distill_jobs.records import UNSLICED, PromptRecord
from distill_jobs.spending import SpendMeter, local_accelerators
from distill_jobs.store import write_json, write_jsonl
from distill_jobs.training import data
from distill_jobs.upstream import (
    StageFailure,
    first_line,
    refuse_leaks,
    upstream_artifacts,
    upstream_result,
)

FILES = MappingProxyType(
    {"slices": "slices.json", "disagreements": "disagreements.jsonl", "summary": "summary.json"}
)


@dataclass(frozen=True)
class Answers:
    """Both models' answers to the held-out prompts, scored, in the prompts' order."""

    student: list[str]
    teacher: list[str]
    student_scores: list[float]
    teacher_scores: list[float]


def look(stage_input: StageInput, meter: SpendMeter) -> Outcome:
    """Judge Iterate's chosen student against the teacher on the held-out set; ``meter``
    counts what that spends."""
    spec = LookSpec.parse(stage_input.spec)
    check_metric(spec.bar)
    source = upstream_artifacts(stage_input, stage="Source", names=("held_out",))
    teach = upstream_artifacts(stage_input, stage="Teach", names=("train",))
    student_name, student_uri = chosen_student(stage_input)
    held_out = read_held_out_prompts(source["held_out"])
    prompts = scorable_prompts(held_out, bar=spec.bar)
    training_rows = training_rows_by_slice(teach["train"], held_out=held_out)
    answers = answer_both(spec, prompts=prompts, student_uri=student_uri, meter=meter)
    judgements = judge_prompts(prompts, answers)
    critical = critical_bars(spec)
    rows = slice_table(judgements, critical=critical, training_rows=training_rows)
    bar = spec.bar.threshold
    overall = mean(answers.student_scores) or 0.0
    met, failures = judge(rows, overall=overall, bar_threshold=bar)
    diagnosis = diagnose(rows, overall=overall, bar_threshold=bar)
    targets = {critical_bar.name: critical_bar.threshold for critical_bar in critical}
    disagreements = disagreement_rows(prompts, answers, judgements, targets=targets, bar=bar)
    metrics = look_metrics(student_name, rows=rows, answers=answers, judgements=judgements)
    artifacts = write_report(
        stage_input.stage_dir(),
        rows=rows,
        disagreements=kept_disagreements(disagreements, per_slice=spec.look.max_disagreements),
        overall=overall_line(metrics, metric=str(spec.bar.metric)),
        diagnosis=f"{diagnosis.stage}: {diagnosis.reason}: {diagnosis.message}"
        if diagnosis
        else None,
    )
    message = (
        pass_message(student_name, metrics, rows=rows)
        if met
        else f"{student_name} is below the bar on held-out data: {'; '.join(failures)}"
    )
    return Outcome(
        met=met,
        reason="SlicesPass" if met else "SlicesBelowBar",
        message=message,
        metrics=metrics,
        artifacts={**artifacts, "student": student_uri},
        diagnosis=diagnosis,
    )


def chosen_student(stage_input: StageInput) -> tuple[str, str]:
    """The name and model URI of the student Iterate chose (its passed result)."""
    result = upstream_result(stage_input, stage="Iterate", names=("student",))
    return str(result.metrics.get("student") or "student"), result.artifacts["student"]


def training_rows_by_slice(uri: str, *, held_out: Sequence[PromptRecord]) -> Counter[str]:
    """Rows of Teach's train.jsonl per slice, after checking none is a held-out prompt
    (a leak would make every number of this stage meaningless)."""
    rows = data.read_rows(uri)
    refuse_leaks(
        (str(row["id"]) for row in rows),
        held_out={prompt.id for prompt in held_out},
        where="Teach's train",
    )
    return Counter(str(row.get("slice") or UNSLICED) for row in rows)


def critical_bars(spec: LookSpec) -> list[CriticalBar]:
    return [
        CriticalBar(
            name=critical.name,
            threshold=critical.threshold if critical.threshold is not None else spec.bar.threshold,
            min_count=critical.min_count,
        )
        for critical in spec.source.critical_slices
    ]


def answer_both(
    spec: LookSpec, *, prompts: Sequence[PromptRecord], student_uri: str, meter: SpendMeter
) -> Answers:
    """The student's and the teacher's greedy answers, scored with the bar's metric."""
    references = [prompt.reference for prompt in prompts]
    with meter.holding(local_accelerators()):  # the student runs in this process
        student = student_answers(
            student_uri, prompts=prompts, batch_size=spec.bar.batch_size, teach=spec.teach
        )
    teacher = open_teacher(teacher=spec.teacher, teach=spec.teach)
    try:
        # One call: the backend batches (batchSize) or keeps requests in flight (concurrency).
        answered = teacher_answers(teacher, prompts, batch_size=len(prompts), meter=meter).answers
    finally:
        teacher.close()
    return Answers(
        student=student,
        teacher=answered,
        student_scores=score_answers(bar=spec.bar, answers=student, references=references),
        teacher_scores=score_answers(bar=spec.bar, answers=answered, references=references),
    )


def student_answers(
    uri: str, *, prompts: Sequence[PromptRecord], batch_size: int, teach: Any
) -> list[str]:
    """The student's greedy answers, generated as Iterate measured it."""
    from distill_jobs.teachers import ModelNotAvailableError
    from distill_jobs.teachers.generation import LocalGenerator
    from distill_jobs.training.measure import validation_answers
    from distill_jobs.training.storage import local_copy

    try:
        generator = LocalGenerator.load(model=local_copy(uri))
    except (ModelNotAvailableError, OSError) as error:
        raise StageFailure(
            "ModelUnavailable", f"Iterate's student (artifacts.student {uri}): {first_line(error)}"
        ) from None
    limit = generation_limit(
        tokenizer=generator.tokenizer,
        references=[prompt.reference for prompt in prompts],
        max_output_tokens=teach.max_output_tokens,
    )
    return validation_answers(
        generator=generator,
        conversations=[prompt.messages for prompt in prompts],
        max_new_tokens=limit,
        batch_size=max(batch_size, 8),
    )


def judge_prompts(prompts: Sequence[PromptRecord], answers: Answers) -> list[Judgement]:
    return [
        Judgement(
            id=prompt.id,
            slice=prompt.slice,
            student_score=answers.student_scores[i],
            teacher_score=answers.teacher_scores[i],
            agrees=normalise_answer(answers.student[i]) == normalise_answer(answers.teacher[i]),
        )
        for i, prompt in enumerate(prompts)
    ]


def disagreement_rows(
    prompts: Sequence[PromptRecord],
    answers: Answers,
    judgements: Sequence[Judgement],
    *,
    targets: dict[str, float],
    bar: float,
) -> list[dict[str, Any]]:
    """Every prompt the two answered differently; an answer is correct when its score
    reaches its slice's threshold."""
    rows = []
    for i, prompt in enumerate(prompts):
        if judgements[i].agrees:
            continue
        target = targets.get(prompt.slice, bar)
        rows.append(
            {
                "id": prompt.id,
                "slice": prompt.slice,
                "prompt": prompt.prompt_text,
                "reference": prompt.reference,
                "student": answers.student[i],
                "teacher": answers.teacher[i],
                "student_correct": answers.student_scores[i] >= target,
                "teacher_correct": answers.teacher_scores[i] >= target,
            }
        )
    return rows


def look_metrics(
    student: str,
    *,
    rows: Sequence[SliceRow],
    answers: Answers,
    judgements: Sequence[Judgement],
) -> dict[str, Any]:
    score = mean(answers.student_scores) or 0.0
    teacher = mean(answers.teacher_scores) or 0.0
    return {
        "student": student,
        "score": round(score, 6),
        "teacher_score": round(teacher, 6),
        "agreement": round(mean([float(j.agrees) for j in judgements]) or 0.0, 6),
        "held_out_prompts": len(judgements),
        "slices": len(rows),
        "failing_slices": sum(1 for row in rows if row.passes is False),
        "disagreements": sum(1 for j in judgements if not j.agrees),
        "quality_ratio": round(score / teacher, 6) if teacher > 0 else None,
        **{
            f"score_{row.slice}": round(row.student_score, 6)
            for row in rows
            if row.critical and row.student_score is not None
        },
    }


def write_report(
    stage_dir: str,
    *,
    rows: Sequence[SliceRow],
    disagreements: Sequence[dict[str, Any]],
    overall: str,
    diagnosis: str | None,
) -> dict[str, str]:
    """slices.json, disagreements.jsonl and summary.json; their URIs by artifact name."""
    uris = {name: f"{stage_dir}/{file}" for name, file in FILES.items()}
    write_json(uris["slices"], [row.as_dict() for row in rows])
    write_jsonl(uris["disagreements"], disagreements)
    write_json(
        uris["summary"],
        summary(
            rows=rows,
            disagreements=disagreements,
            overall=overall,
            diagnosis=diagnosis,
            table_uri=uris["slices"],
        ),
    )
    return uris


def overall_line(metrics: dict[str, Any], *, metric: str) -> str:
    return (
        f"student {metrics['student']} {metrics['score']:.4g} vs teacher "
        f"{metrics['teacher_score']:.4g} ({metric}, {metrics['held_out_prompts']} held-out "
        f"prompts, agreement {metrics['agreement']:.0%}, {metrics['disagreements']} "
        "disagreements)"
    )


def pass_message(student: str, metrics: dict[str, Any], *, rows: Sequence[SliceRow]) -> str:
    critical = [
        f"{row.slice} {row.student_score:.4g} ≥ {row.threshold:.4g}"
        for row in rows
        if row.critical and row.student_score is not None and row.threshold is not None
    ]
    slices = f"; critical slices: {', '.join(critical)}" if critical else ""
    return (
        f"{student} clears the bar on {metrics['held_out_prompts']} held-out prompts: "
        f"score {metrics['score']:.4g} (teacher {metrics['teacher_score']:.4g}, agreement "
        f"{metrics['agreement']:.0%}){slices}"
    )
