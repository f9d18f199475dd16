"""Investigate, one alternative per job: is there a cheaper way to clear the bar?

The alternative answers Source's held-out prompts; its answers are scored with the bar's
metric, overall and per slice, and its latency and cost are measured (a local model on
a worker like a student's, an API by wall time and its stated price). The bar's
:func:`~distill_jobs.bar.verdict` then says whether it clears the bar (``BarCleared``)
or by how much it misses (``BarMissed``), the way Iterate says it of a student.

Kinds:
- ``off_the_shelf``: ``alternative.model`` as it is.
- ``quantized_teacher``: the (local) teacher, int8 or int4.
- ``prompt_variant``: ``alternative.prompt`` as the system turn of every prompt, given to
  ``alternative.model`` when set, else to the teacher (local, or its API).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from distill_jobs.bar import verdict
from distill_jobs.contract import StageInput
from distill_jobs.evaluation.answering import (
    check_local_model,
    measure_on_worker,
    open_teacher,
    quantization_problem,
    system_prompted,
    teacher_answers,
)
from distill_jobs.evaluation.excerpts import AlternativeSpec
from distill_jobs.evaluation.held_out import (
    check_metric,
    mean,
    read_held_out_prompts,
    scorable_prompts,
    score_answers,
)
from distill_jobs.evaluation.outcome import Outcome
from distill_jobs.records import PromptRecord
from distill_jobs.spending import SpendMeter
from distill_jobs.store import write_jsonl
from distill_jobs.upstream import StageFailure, upstream_artifacts

ANSWERS_FILE = "answers.jsonl"
MAX_SLICE_SCORES = 8  # score_<slice> metrics of the largest slices; answers.jsonl has all


@dataclass(frozen=True)
class Answered:
    """An alternative's answers and what serving them costs.

    Attributes:
        model: the model directory, or ``backend:model`` of an API.
        answers: one per held-out prompt, in order.
        serving: latency_p50_ms, latency_p95_ms, requests_per_second, cost_per_1k_requests
            (None when unknown).
        parameters: its parameter count, when known.
    """

    model: str
    answers: list[str]
    serving: dict[str, float | None]
    parameters: int | None


def investigate(stage_input: StageInput, meter: SpendMeter) -> Outcome:
    """Evaluate the input's alternative on the held-out set and judge it by the bar;
    ``meter`` counts what that spends."""
    spec = AlternativeSpec.parse(stage_input.spec)
    check_metric(spec.bar)
    source = upstream_artifacts(stage_input, stage="Source", names=("held_out",))
    prompts = scorable_prompts(read_held_out_prompts(source["held_out"]), bar=spec.bar)
    answered = ANSWERERS[spec.alternative.kind.value](spec, prompts, meter)
    references = [prompt.reference for prompt in prompts]
    scores = score_answers(bar=spec.bar, answers=answered.answers, references=references)
    metrics = {
        "parameters": answered.parameters,
        "score": round(mean(scores) or 0.0, 6),
        **answered.serving,
        "held_out_prompts": len(prompts),
        **slice_scores(prompts, scores),
    }
    answers_uri = f"{stage_input.stage_dir()}/{ANSWERS_FILE}"
    write_jsonl(
        answers_uri,
        (
            {
                "id": prompt.id,
                "slice": prompt.slice,
                "reference": prompt.reference,
                "answer": answer,
                "score": score,
            }
            for prompt, answer, score in zip(prompts, answered.answers, scores, strict=True)
        ),
    )
    met, message = verdict(spec.bar, name=spec.alternative.name, metrics=metrics)
    return Outcome(
        met=met,
        reason="BarCleared" if met else "BarMissed",
        message=message,
        metrics=metrics,
        artifacts={"model": answered.model, "answers": answers_uri},
    )


def slice_scores(prompts: Sequence[PromptRecord], scores: Sequence[float]) -> dict[str, float]:
    """``score_<slice>`` of the :data:`MAX_SLICE_SCORES` largest slices."""
    by_slice: dict[str, list[float]] = {}
    for prompt, score in zip(prompts, scores, strict=True):
        by_slice.setdefault(prompt.slice, []).append(score)
    largest = sorted(by_slice, key=lambda name: (-len(by_slice[name]), name))[:MAX_SLICE_SCORES]
    return {f"score_{name}": round(mean(by_slice[name]) or 0.0, 6) for name in sorted(largest)}


def off_the_shelf(
    spec: AlternativeSpec, prompts: Sequence[PromptRecord], meter: SpendMeter
) -> Answered:
    model = str(spec.alternative.model)
    return _local(spec, prompts, meter, model=model, field=f"{spec.field}.model")


def quantized_teacher(
    spec: AlternativeSpec, prompts: Sequence[PromptRecord], meter: SpendMeter
) -> Answered:
    quantization = str(spec.alternative.quantization)
    if spec.teacher.backend.value != "hf":
        raise StageFailure(
            "QuantizationUnavailable",
            f"{spec.field}: a quantized_teacher needs a local teacher (spec.teacher.backend: "
            f"hf); {spec.teacher.backend.value} is an API, whose weights cannot be quantized",
        )
    if spec.serving.gpus_per_worker == 0:  # refused before any worker starts
        problem = quantization_problem(quantization=quantization, on_gpu=False)
        if problem is not None:
            raise StageFailure("QuantizationUnavailable", f"{spec.field}.quantization: {problem}")
    return _local(
        spec,
        prompts,
        meter,
        model=spec.teacher.model,
        field="spec.teacher.model",
        quantization=quantization,
    )


def prompt_variant(
    spec: AlternativeSpec, prompts: Sequence[PromptRecord], meter: SpendMeter
) -> Answered:
    prompt = str(spec.alternative.prompt)
    variants = [
        record.model_copy(update={"messages": system_prompted(record.messages, prompt)})
        for record in prompts
    ]
    if spec.alternative.model is not None:
        model, field = spec.alternative.model, f"{spec.field}.model"
        return _local(spec, variants, meter, model=model, field=field)
    if spec.teacher.backend.value == "hf":
        return _local(spec, variants, meter, model=spec.teacher.model, field="spec.teacher.model")
    teacher = open_teacher(teacher=spec.teacher, teach=spec.teach)
    try:
        timed = teacher_answers(teacher, variants, batch_size=spec.bar.batch_size, meter=meter)
    finally:
        teacher.close()
    return Answered(
        model=teacher.name,
        answers=timed.answers,
        serving=timed.serving(cost_per_1k_requests=spec.alternative.cost_per_1k_requests),
        parameters=spec.teacher.parameters,
    )


def _local(
    spec: AlternativeSpec,
    prompts: Sequence[PromptRecord],
    meter: SpendMeter,
    *,
    model: str,
    field: str,
    quantization: str | None = None,
) -> Answered:
    check_local_model(model, field=field)
    measured = measure_on_worker(
        meter=meter,
        serving=spec.serving,
        model=model,
        field=field,
        quantization=quantization,
        bar=spec.bar,
        conversations=[prompt.messages for prompt in prompts],
        references=[prompt.reference for prompt in prompts],
        max_output_tokens=spec.teach.max_output_tokens,
    )
    return Answered(
        model=model,
        answers=measured.answers,
        serving=dict(measured.serving),
        parameters=measured.parameters,
    )


Answerer = Callable[[AlternativeSpec, Sequence[PromptRecord], SpendMeter], Answered]
ANSWERERS: MappingProxyType[str, Answerer]
ANSWERERS = MappingProxyType(
    {
        "off_the_shelf": off_the_shelf,
        "quantized_teacher": quantized_teacher,
        "prompt_variant": prompt_variant,
    }
)
