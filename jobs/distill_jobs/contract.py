"""The stage contract shared by the operator and the workloads.

A stage attempt gets a :class:`StageInput` (as JSON, in a file or on the command line)
and writes a :class:`StageResult` to ``<artifacts>/<namespace>/<name>/<stage>/<input-hash>/
result.json``. Results are content-addressed by the input hash, so an unchanged input
re-uses its result and a restarted operator never needs to run it twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from enum import StrEnum
from typing import Any, TypeVar

import fsspec
from pydantic import BaseModel, ConfigDict, Field

_Model = TypeVar("_Model", bound="BaseModel")

RESULT_FILE = "result.json"
# A running job may report progress beside its result: shown to people, never decided on.
PROGRESS_FILE = "progress.json"
# The operator resolves the teacher's Secret into this variable of a stage job's env;
# the key is never in the spec, the input file or status.
TEACHER_API_KEY_ENV = "DISTILL_TEACHER_API_KEY"
ROUTER_TOKEN_ENV = "DISTILL_ROUTER_TOKEN"  # the bearer token clients of the router send


class StageInput(BaseModel):
    """What one stage attempt needs: a spec excerpt, upstream artifacts, the attempt."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(description="namespace/name of the DistillationProject.")
    project_uid: str
    stage: str
    attempt: int = 0
    spec: dict[str, Any] = Field(
        description="The part of the project spec this stage reads (and nothing else, "
        "so that unrelated edits do not change the input hash)."
    )
    upstream: dict[str, str] = Field(
        default_factory=dict, description="Result URIs of the stages this one builds on."
    )
    artifacts_uri: str = Field(description="Root URI of the project's artifact store.")

    def input_hash(self) -> str:
        """Content hash of what decides the result; the attempt number is left out."""
        decisive = {"stage": self.stage, "spec": self.spec, "upstream": self.upstream}
        canonical = json.dumps(decisive, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def stage_dir(self) -> str:
        namespace, name = self.project.split("/", 1)
        root = self.artifacts_uri.rstrip("/")
        return f"{root}/{namespace}/{name}/{self.stage.lower()}/{self.input_hash()}"

    def result_uri(self) -> str:
        return f"{self.stage_dir()}/{RESULT_FILE}"


class Diagnosis(BaseModel):
    """Which stage a weak or failing project points to (the DISTILL debugging map):
    broad weakness → Source; specific slices → Teach (the teacher is wrong there) or
    Look (the evaluation cannot tell); decay over time → Launch."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="The stage at fault, e.g. Source.")
    reason: str = Field(description="CamelCase, e.g. BroadWeakness.")
    message: str = Field(description="The evidence, in words.")


class StageResult(BaseModel):
    """What a stage attempt found: whether its exit condition holds, and why."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    stage: str
    input_hash: str
    exit_condition_met: bool = Field(alias="exitConditionMet")
    reason: str = Field(description="CamelCase reason, e.g. BaselineSufficient.")
    message: str
    outcome: str | None = Field(
        default=None,
        description="A project-level outcome the stage decides, e.g. BaselineSufficient.",
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    diagnosis: Diagnosis | None = Field(
        default=None, description="The stage at fault when the result is weak or failing."
    )


class Spend(BaseModel):
    """What one stage attempt spent, reported among its result's metrics under
    :data:`SPEND_KEYS`; the operator sums attempts into ``status.cost``.

    Accelerators are GPUs: work on CPUs counts 0 accelerator-seconds (the bar's cost per
    1k requests, a projection of serving, is measured apart from this). A local (hf)
    teacher on GPUs spends accelerator time; an API teacher spends tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    accelerator_seconds: float = Field(default=0.0, ge=0.0, description="GPUs held x seconds.")
    teacher_input_tokens: int = Field(default=0, ge=0, description="Prompt tokens sent.")
    teacher_output_tokens: int = Field(default=0, ge=0, description="Tokens generated.")

    def metrics(self) -> dict[str, float | int]:
        """The result metrics that report it."""
        return {
            SPEND_ACCELERATOR_SECONDS: round(self.accelerator_seconds, 3),
            SPEND_TEACHER_INPUT_TOKENS: self.teacher_input_tokens,
            SPEND_TEACHER_OUTPUT_TOKENS: self.teacher_output_tokens,
        }

    @classmethod
    def reported(cls, metrics: dict[str, Any]) -> Spend | None:
        """What a result's metrics report, or None when they report nothing (a workload
        that does not report, or an older one): then the operator estimates."""
        if not any(key in metrics for key in SPEND_KEYS):
            return None
        numbers = {}
        for key in SPEND_KEYS:
            value = metrics.get(key, 0)
            usable = isinstance(value, int | float) and not isinstance(value, bool)
            numbers[key] = value if usable and math.isfinite(value) and value >= 0 else 0
        return cls(
            accelerator_seconds=float(numbers[SPEND_ACCELERATOR_SECONDS]),
            teacher_input_tokens=int(numbers[SPEND_TEACHER_INPUT_TOKENS]),
            teacher_output_tokens=int(numbers[SPEND_TEACHER_OUTPUT_TOKENS]),
        )


SPEND_ACCELERATOR_SECONDS = "accelerator_seconds"
SPEND_TEACHER_INPUT_TOKENS = "teacher_input_tokens"
SPEND_TEACHER_OUTPUT_TOKENS = "teacher_output_tokens"
SPEND_KEYS = (SPEND_ACCELERATOR_SECONDS, SPEND_TEACHER_INPUT_TOKENS, SPEND_TEACHER_OUTPUT_TOKENS)


def write_result(result: StageResult, uri: str) -> None:
    """Write a result atomically enough for object stores: one put of the whole file."""
    payload = result.model_dump_json(by_alias=True, indent=2)
    with fsspec.open(uri, "w", auto_mkdir=True) as handle:
        handle.write(payload)


def read_result(uri: str) -> StageResult | None:
    """The result at ``uri``, or None when the stage has not written one yet."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return StageResult.model_validate_json(handle.read())


def read_progress(uri: str) -> dict[str, Any] | None:
    """A job's progress report, or None when there is none or it is unreadable: a
    half-written file is simply skipped (progress is shown, never decided on)."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "r") as handle:
            progress = json.load(handle)
    except (OSError, ValueError):  # missing (FileNotFoundError), or not JSON
        return None
    return progress if isinstance(progress, dict) else None


# --- Launch: the router (``distill_jobs.serve``) and the operator ---------------------
# The operator writes the routing (which student, which rollout step) to one file per
# project; the router polls it, so a rollout step or a new student never restarts the
# router, and a re-distillation keeps the live student serving until the new one is
# rolled out. The router writes where it listens into its own stage directory.
ROUTING_FILE = "routing.json"
ENDPOINT_FILE = "endpoint.json"

# Prometheus metrics of the router. Counters carry the routing ``revision`` they were
# counted under, so the operator reads one rollout step's numbers without deltas.
METRIC_REQUESTS = "distill_router_requests_total"  # labels: revision, served_by
METRIC_FALLBACKS = "distill_router_fallbacks_total"  # labels: revision
METRIC_COMPARISONS = "distill_router_comparisons_total"  # labels: revision, agree
METRIC_LATENCY = "distill_router_request_seconds"  # histogram; labels: model
METRIC_REVISION = "distill_router_revision"  # gauge: the routing revision in force


class RoutingMode(StrEnum):
    """How the router answers.

    teacher: the teacher answers everything (before the first rollout, after a
        rollback with no earlier student); the student is not asked.
    shadow: the teacher answers; the student is asked too, and every request is
        compared and counted as a fallback when the student was not confident.
    canary: ``percent`` of requests go to the student, the rest to the teacher.
    full: every request goes to the student.
    A request routed to the student whose confidence is below the bar goes to the
    teacher instead (a fallback); a ``sampleRate`` share of the requests the student
    answers is also asked of the teacher and compared.
    """

    TEACHER = "teacher"
    SHADOW = "shadow"
    CANARY = "canary"
    FULL = "full"


class Routing(BaseModel):
    """``routing.json``: what the router does now."""

    model_config = ConfigDict(extra="forbid")

    revision: int = Field(ge=0, description="Bumped on every change; labels the metrics.")
    mode: RoutingMode
    percent: int = Field(default=0, ge=0, le=100, description="canary: student share.")
    student: str | None = Field(default=None, description="The student's model directory.")
    student_name: str | None = None
    confidence_rule: str = Field(
        default="mean_logprob",
        pattern=r"^(mean_logprob|entropy)$",
        description="mean_logprob: the mean log-probability of the student's tokens, "
        "confident when >= threshold; entropy: the mean entropy of its next-token "
        "distributions, confident when <= threshold.",
    )
    confidence_threshold: float = -1.0
    sample_rate: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of student answers also asked of "
        "the teacher and compared (shadow compares every request).",
    )
    metric: str = Field(
        default="exact_match",
        description="The bar's metric: agreement is "
        "the student's answer scoring >= 0.5 against the teacher's.",
    )
    metric_function: str | None = None


class Endpoint(BaseModel):
    """``endpoint.json``: where a router attempt listens, once it does."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL, e.g. http://127.0.0.1:40123.")
    attempt: int = Field(ge=0, description="The router job attempt that wrote it.")


def launch_dir(*, artifacts_uri: str, project: str) -> str:
    """The project's Launch directory: routing, and one directory per router input."""
    namespace, name = project.split("/", 1)
    return f"{artifacts_uri.rstrip('/')}/{namespace}/{name}/launch"


def routing_uri(*, artifacts_uri: str, project: str) -> str:
    return f"{launch_dir(artifacts_uri=artifacts_uri, project=project)}/{ROUTING_FILE}"


def read_model(uri: str, model: type[_Model]) -> _Model | None:
    """A small JSON file as ``model``, or None while it is missing or half-written."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "r") as handle:
            return model.model_validate_json(handle.read())
    except (OSError, ValueError):
        return None


def write_model(value: BaseModel, uri: str) -> None:
    with fsspec.open(uri, "w", auto_mkdir=True) as handle:
        handle.write(value.model_dump_json(indent=2))
