"""Answers to held-out prompts: from a local model on a serving worker, or from a teacher.

A local model (an off-the-shelf model, the quantized teacher, a small model given another
system prompt) is loaded and measured in a Ray task with the students' serving
resources (:func:`measure_on_worker`), so its latency and cost compare with a student's.
A teacher answers through its own backend (:func:`open_teacher`, :func:`teacher_answers`),
greedily, with per-request wall time measured around each call.

What goes wrong on the worker (a model that cannot be loaded, a quantization this
hardware cannot run, a metric that cannot score) comes back as a reason and a message,
not as an exception: a user's mistake must reach the result, not Ray's traceback.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distill_jobs.evaluation.excerpts import api_json
from distill_jobs.records import PromptRecord
from distill_jobs.spending import SpendMeter, local_accelerators
from distill_jobs.teachers import (
    ModelNotAvailableError,
    Teacher,
    TeacherBatchError,
    TeacherConfigError,
    make_teacher,
)
from distill_jobs.teachers.generation import HUB_PREFIX, LocalGenerator, check_model_dir
from distill_jobs.training.measure import nearest_rank
from distill_jobs.upstream import StageFailure, first_line, teacher_api_key

Conversation = list[dict[str, Any]]


def system_prompted(messages: Sequence[dict[str, Any]], prompt: str) -> Conversation:
    """``messages`` with ``prompt`` as their one system turn (any other is replaced)."""
    return [
        {"role": "system", "content": prompt},
        *(dict(message) for message in messages if message.get("role") != "system"),
    ]


def check_local_model(model: str, *, field: str) -> None:
    """Refuse a directory that does not exist before any worker starts (hub names are
    found, or not, when loaded).

    Raises:
        StageFailure: ``ModelUnavailable``, naming ``field``.
    """
    try:
        check_model_dir(model)
    except ModelNotAvailableError:
        raise StageFailure(
            "ModelUnavailable",
            f"{field}: the model directory {model.removeprefix('file://')} does not exist; "
            "give a directory the job can read, or an hf:// name in the local cache",
        ) from None


def generation_limit(
    *, tokenizer: Any, references: Sequence[str | None], max_output_tokens: int
) -> int:
    """Tokens to generate per prompt: ``teach.maxOutputTokens``, and when every prompt
    has a reference no more than the longest reference and its end token (as Iterate
    measures students): a model that says the reference and stops needs no more."""
    if not references or any(reference is None for reference in references):
        return max_output_tokens
    longest = max(len(tokenizer(reference)["input_ids"]) for reference in references) + 1
    return max(1, min(max_output_tokens, longest))


def quantization_problem(
    *, quantization: str, on_gpu: bool, cuda: bool = False, bitsandbytes: bool = False
) -> str | None:
    """Why ``quantization`` cannot run where the alternative is measured, or None.

    On CPU workers int8 is torch's dynamic int8; int4, and any quantization on GPU
    workers, needs CUDA and bitsandbytes.
    """
    if not on_gpu:
        if quantization == "int8":
            return None
        return (
            f"{quantization} needs a CUDA GPU with the bitsandbytes package, and alternatives "
            "are measured on the students' workers, which have no GPU "
            "(spec.students.training.gpusPerWorker: 0): use int8 (dynamic int8 on CPU), "
            "or give the workers a GPU and bitsandbytes"
        )
    missing = [
        what
        for present, what in (
            (cuda, "a CUDA device (none is visible to the worker)"),
            (bitsandbytes, "the bitsandbytes package (not installed in the job's image)"),
        )
        if not present
    ]
    if missing:
        return f"{quantization} on a GPU worker needs {' and '.join(missing)}"
    return None


@dataclass(frozen=True)
class LocalMeasurement:
    """A local model measured the way the bar judges it.

    Attributes:
        answers: its greedy answer to each prompt, in order.
        serving: latency_p50_ms, latency_p95_ms, requests_per_second, cost_per_1k_requests.
        parameters: its parameter count (before any quantization).
        max_new_tokens: the generation limit it answered with.
    """

    answers: list[str]
    serving: dict[str, float]
    parameters: int
    max_new_tokens: int


def measure_on_worker(
    *,
    meter: SpendMeter,
    serving: Any,
    model: str,
    field: str,
    quantization: str | None,
    bar: Any,
    conversations: Sequence[Conversation],
    references: Sequence[str | None],
    max_output_tokens: int,
) -> LocalMeasurement:
    """Load ``model`` and measure it in a Ray task with the serving resources.

    Args:
        meter: counts the worker's GPU (one when the workers have any) while it runs.
        serving: the students' Training settings (cpusPerWorker, gpusPerWorker, price).
        model: a directory or hf:// name.
        field: the spec field that names the model, for messages.
        quantization: int8, int4 or None.
        bar: the API Bar.
        conversations: the prompts, each a chat up to the last user turn.
        references: the reference answer of each prompt (None where there is none).
        max_output_tokens: the generation limit (``teach.maxOutputTokens``).

    Raises:
        StageFailure: ModelUnavailable, QuantizationUnavailable or MetricFailed.
    """
    import ray

    from distill_jobs.raycluster import connect

    connect()
    on_gpu = serving.gpus_per_worker > 0
    # One GPU when the workers have any, as Iterate measures students.
    task: Any = ray.remote(num_cpus=serving.cpus_per_worker, num_gpus=1 if on_gpu else 0)(
        measure_local_model
    )
    with meter.holding(1.0 if on_gpu else 0.0):
        measured: dict[str, Any] = ray.get(
            task.remote(
                model=model,
                field=field,
                quantization=quantization,
                on_gpu=on_gpu,
                bar=bar.model_dump(mode="json"),
                conversations=list(conversations),
                references=list(references),
                max_output_tokens=max_output_tokens,
                price=serving.price_per_accelerator_hour,
            )
        )
    if "failure" in measured:
        raise StageFailure(measured["failure"]["reason"], measured["failure"]["message"])
    return LocalMeasurement(**measured)


def measure_local_model(
    *,
    model: str,
    field: str,
    quantization: str | None,
    on_gpu: bool,
    bar: dict[str, Any],
    conversations: list[Conversation],
    references: list[str | None],
    max_output_tokens: int,
    price: float,
) -> dict[str, Any]:
    """The worker's side of :func:`measure_on_worker`: the fields of a LocalMeasurement,
    or ``{"failure": {"reason", "message"}}``."""
    from distill_jobs.metrics import MetricError
    from distill_jobs.training.measure import measure_against_bar

    try:
        generator, parameters = load_local(
            model=model, field=field, quantization=quantization, on_gpu=on_gpu
        )
        limit = generation_limit(
            tokenizer=generator.tokenizer,
            references=references,
            max_output_tokens=max_output_tokens,
        )
        try:
            measured = measure_against_bar(
                generator=generator,
                bar=bar,
                conversations=conversations,
                references=references,
                max_new_tokens=limit,
                price_per_accelerator_hour=price,
            )
        except MetricError as error:
            raise StageFailure(
                "MetricFailed", f"spec.bar.metric {bar['metric']}: {error}"
            ) from None
    except StageFailure as failure:
        return {"failure": {"reason": failure.reason, "message": str(failure)}}
    serving = measured.metrics()
    serving.pop("score")  # scored again per answer by the driver, slice by slice
    return {
        "answers": measured.answers,
        "serving": serving,
        "parameters": parameters,
        "max_new_tokens": limit,
    }


def load_local(
    *, model: str, field: str, quantization: str | None, on_gpu: bool
) -> tuple[LocalGenerator, int]:
    """The model as a generator, quantized when asked, and its parameter count.

    Raises:
        StageFailure: ``ModelUnavailable`` or ``QuantizationUnavailable``.
    """
    import torch

    from distill_jobs.teachers.generation import load_causal_lm

    if quantization is not None:
        problem = quantization_problem(
            quantization=quantization,
            on_gpu=on_gpu,
            cuda=torch.cuda.is_available(),
            bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        )
        if problem is not None:
            raise StageFailure("QuantizationUnavailable", f"{field}.quantization: {problem}")
    try:
        if quantization is not None and on_gpu:
            causal_lm, tokenizer = _load_bitsandbytes(model=model, quantization=quantization)
            return LocalGenerator(model=causal_lm, tokenizer=tokenizer), causal_lm.num_parameters()
        causal_lm, tokenizer = load_causal_lm(model=model, device=None if on_gpu else "cpu")
    except ModelNotAvailableError as error:
        raise StageFailure("ModelUnavailable", f"{field}: {first_line(error)}") from None
    parameters = sum(parameter.numel() for parameter in causal_lm.parameters())
    if quantization is not None:  # int8 on CPU (quantization_problem refused the rest)
        causal_lm = _dynamic_int8(causal_lm, field=field)
    return LocalGenerator(model=causal_lm, tokenizer=tokenizer), parameters


def _dynamic_int8(causal_lm: Any, *, field: str) -> Any:
    """torch's dynamic int8: Linear weights stored as int8, activations quantized per
    batch at run time; CPU only."""
    import torch

    quantize: Callable[..., Any] | None = getattr(torch.ao.quantization, "quantize_dynamic", None)
    if quantize is None:
        raise StageFailure(
            "QuantizationUnavailable",
            f"{field}.quantization: int8 on CPU uses torch.ao.quantization.quantize_dynamic, "
            f"which this torch ({torch.__version__}) no longer has",
        )
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; it still works here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor", category=UserWarning
        )
        return quantize(causal_lm, {torch.nn.Linear}, dtype=torch.qint8)


def _load_bitsandbytes(*, model: str, quantization: str) -> tuple[Any, Any]:
    """The model loaded in 8 or 4 bits by bitsandbytes on the worker's GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    check_model_dir(model)
    name = model.removeprefix("file://").removeprefix(HUB_PREFIX)
    config = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
        if quantization == "int4"
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left")
        causal_lm = AutoModelForCausalLM.from_pretrained(
            name, quantization_config=config, device_map={"": 0}
        )
    except OSError as error:
        raise ModelNotAvailableError(f"cannot load {model!r}: {error}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return causal_lm.eval(), tokenizer


# --- teachers ---------------------------------------------------------------------------


def open_teacher(*, teacher: Any, teach: Any) -> Teacher:
    """The teacher of ``spec.teacher``, answering greedily (evaluation is never sampled,
    whatever ``teach.temperature`` collected with) and without logprobs.

    Raises:
        StageFailure: ``ApiKeyMissing``, ``ModelUnavailable`` or ``InvalidInput``.
    """
    teacher_json = {**api_json(teacher), "topLogprobs": 0}
    teach_json = {**api_json(teach), "temperature": 0.0}
    api_key = teacher_api_key(teacher_json, environ=os.environ)
    try:
        return make_teacher(teacher=teacher_json, teach=teach_json, api_key=api_key)
    except ModelNotAvailableError as error:
        raise StageFailure("ModelUnavailable", f"spec.teacher.model: {first_line(error)}") from None
    except TeacherConfigError as error:
        raise StageFailure("InvalidInput", str(error)) from None


@dataclass(frozen=True)
class TimedAnswers:
    """A teacher's answers, in the order asked, and each request's latency.

    Attributes:
        answers: one per prompt.
        latencies_ms: one per prompt: the wall time of the call that answered it.
        seconds: the wall time of every call together.
    """

    answers: list[str]
    latencies_ms: list[float]
    seconds: float

    def serving(self, *, cost_per_1k_requests: float | None) -> dict[str, float | None]:
        """Latency percentiles and throughput as measured; the cost as priced (an API's
        cost is what it charges, not what its hardware costs)."""
        return {
            "latency_p50_ms": round(nearest_rank(self.latencies_ms, percent=50), 3),
            "latency_p95_ms": round(nearest_rank(self.latencies_ms, percent=95), 3),
            "requests_per_second": round(len(self.answers) / self.seconds, 3)
            if self.seconds > 0
            else None,
            "cost_per_1k_requests": cost_per_1k_requests,
        }


def teacher_answers(
    teacher: Teacher,
    records: Sequence[PromptRecord],
    *,
    batch_size: int,
    meter: SpendMeter,
    clock: Callable[[], float] = time.perf_counter,
) -> TimedAnswers:
    """Ask ``teacher`` in calls of ``batch_size`` prompts, timing each call; ``meter``
    counts the tokens it reports, and a local teacher's GPU time.

    Raises:
        StageFailure: ``TeacherUnavailable`` when any prompt went unanswered.
    """
    answers: list[str] = []
    latencies: list[float] = []
    seconds = 0.0
    # A local (hf) teacher runs in this process: on a GPU when there is one.
    accelerators = local_accelerators() if teacher.name.startswith("hf:") else 0.0
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        began = clock()
        try:
            with meter.holding(accelerators):
                answered = teacher.answer(batch)
        except TeacherBatchError as error:
            meter.asked_teacher(error.answered)  # answered before the rest failed: billed
            raise StageFailure(
                "TeacherUnavailable",
                f"{teacher.name} left held-out prompts unanswered: {first_line(error)}",
            ) from None
        took = clock() - began
        meter.asked_teacher(answered)
        seconds += took
        by_id = {record.id: record.output for record in answered}
        answers.extend(by_id[record.id] for record in batch)
        latencies.extend([1000.0 * took] * len(batch))
    return TimedAnswers(answers=answers, latencies_ms=latencies, seconds=seconds)
