"""Launch and lifecycle: the student behind a router, rolled out step by step, then watched.

The router (``distill_jobs.serve``) is one long-running job per project that outlives
re-distillations (a Deployment behind the project's Service, or a Ray job); the
operator steers it through ``routing.json`` and reads its Prometheus metrics. The
rollout steps are decided here, in the operator: a step holds for its duration and
advances only while agreement and fallback rate stay within the spec's bounds, judged
on the counters of the routing revision the step runs under.
Drift checks (``distill_jobs.monitor``) are jobs of their own once a student is live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from distill_jobs.contract import (
    METRIC_COMPARISONS,
    METRIC_FALLBACKS,
    METRIC_REQUESTS,
    METRIC_REVISION,
    Endpoint,
    Routing,
    RoutingMode,
)
from distill_operator.api import ProjectSpec, Serving, Stage
from distill_operator.api.spec import RolloutMode, RolloutStep, RouterPlatform
from distill_operator.launch.base import DEPLOYMENT_MODE
from distill_operator.stages.base import StageDefinition, dumped_spec

FULL = RolloutStep(mode=RolloutMode.FULL, hold_seconds=0)


def exit_condition(spec: ProjectSpec) -> str:
    steps = " -> ".join(
        f"{s.percent}%" if s.mode == RolloutMode.CANARY else s.mode.value for s in steps_of(spec)
    )
    return f"student serving behind the router ({steps}), drift watched"


def steps_of(spec: ProjectSpec) -> list[RolloutStep]:
    return list(spec.launch.steps) or [FULL]


def step_name(step: RolloutStep) -> str:
    return f"canary {step.percent}%" if step.mode == RolloutMode.CANARY else step.mode.value


def router_excerpt(spec: ProjectSpec) -> dict[str, Any]:
    """The router's input: only what needs a new router process (the teacher, where it
    listens, the default output limit); the rollout and the student reach it through
    routing.json."""
    dumped = dumped_spec(spec)
    host, port = spec.launch.router.bind()
    return {
        "teacher": dumped["teacher"],
        "router": dumped["launch"]["router"] | {"host": host, "port": port},
        # A request naming no limit gets the one the teacher's answers were collected at.
        "maxOutputTokens": spec.teach.max_output_tokens,
    }


def job_mode(spec: ProjectSpec, definition: StageDefinition) -> str:
    """How a unit's job runs: the router on kubernetes as a Deployment, the rest on Ray."""
    on_kubernetes = spec.launch.router.platform == RouterPlatform.KUBERNETES
    return DEPLOYMENT_MODE if definition is ROUTER and on_kubernetes else spec.ray.mode.value


def monitor_excerpt(spec: ProjectSpec, *, check: int) -> dict[str, Any]:
    """A drift check's input; ``check`` makes each check's input (and result) its own."""
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    lifecycle = {k: v for k, v in dumped["lifecycle"].items() if k.startswith(("max", "sample"))}
    return {"source": dumped["source"], "lifecycle": lifecycle, "check": check}


DEFINITION = StageDefinition(
    stage=Stage.LAUNCH,
    exit_condition=exit_condition,
    upstream=(Stage.ITERATE, Stage.LOOK),
)
ROUTER = StageDefinition(
    stage=Stage.LAUNCH,
    exit_condition=lambda spec: "the router answers",
    workload="distill_jobs.serve",
    reads=("teacher",),
    serves=True,
)
MONITOR = StageDefinition(
    stage=Stage.LAUNCH,
    exit_condition=lambda spec: "live traffic still looks like the training data",
    workload="distill_jobs.monitor",
    upstream=(Stage.SOURCE,),
)


def routing(spec: ProjectSpec, serving: Serving) -> Routing:
    """routing.json for where the rollout stands."""
    student = serving.candidate or serving.live
    mode = RoutingMode(serving.mode)
    return Routing(
        revision=serving.revision,
        mode=mode,
        percent=serving.percent,
        student=student.uri if student and mode != RoutingMode.TEACHER else None,
        student_name=student.name if student and mode != RoutingMode.TEACHER else None,
        confidence_rule=spec.launch.confidence_rule.value,
        confidence_threshold=spec.launch.confidence_threshold,
        sample_rate=spec.launch.sample_rate,
        metric=spec.bar.metric.value,
        metric_function=spec.bar.metric_function,
    )


@dataclass(frozen=True)
class RevisionCounts:
    """The router's counters of one routing revision."""

    student: int = 0  # answered by the student
    teacher: int = 0  # answered by the teacher (fallbacks included)
    fallbacks: int = 0
    agree: int = 0
    disagree: int = 0

    def asked_student(self, mode: str) -> int:
        """Requests the student was asked: every one in shadow, else those routed to it."""
        if mode == RoutingMode.SHADOW:
            return self.student + self.teacher
        return self.student + self.fallbacks

    @property
    def comparisons(self) -> int:
        return self.agree + self.disagree


@dataclass(frozen=True)
class RouterSeen:
    """What a pass saw of the router: where it listens, the revision in force, counters."""

    endpoint: Endpoint | None = None
    revision: int | None = None
    counts: Mapping[int, RevisionCounts] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class StepJudgement:
    """``rollback`` with why, or ``advance``, or neither (hold on)."""

    numbers: dict[str, float]
    summary: str
    rollback: bool = False
    advance: bool = False


def judge_step(
    spec: ProjectSpec, step: RolloutStep, counts: RevisionCounts, *, held_seconds: float
) -> StepJudgement:
    """A step is judged once the student was asked ``minRequests`` times; a bound broken
    then rolls back at once; a step within bounds advances when its hold is over."""
    launch = spec.launch
    asked = counts.asked_student(step.mode.value)
    fallback_rate = counts.fallbacks / asked if asked else 0.0
    agreement = counts.agree / counts.comparisons if counts.comparisons else None
    numbers = {
        "studentRequests": float(asked),
        "fallbackRate": round(fallback_rate, 4),
        "comparisons": float(counts.comparisons),
    }
    parts = [f"{asked} student requests", f"fallback rate {fallback_rate:.2f}"]
    if agreement is not None:
        numbers["agreement"] = round(agreement, 4)
        parts.append(f"agreement {agreement:.2f} over {counts.comparisons} compared")
    summary = ", ".join(parts)
    if asked < launch.min_requests:
        return StepJudgement(numbers, f"{summary}; judged after {launch.min_requests}")
    broken = []
    if fallback_rate > launch.max_fallback_rate:
        broken.append(f"fallback rate {fallback_rate:.2f} > {launch.max_fallback_rate:g}")
    if agreement is not None and agreement < launch.min_agreement:
        broken.append(f"agreement {agreement:.2f} < {launch.min_agreement:g}")
    if broken:
        return StepJudgement(numbers, f"{'; '.join(broken)} ({summary})", rollback=True)
    done = held_seconds >= step.hold_seconds
    return StepJudgement(numbers, summary, advance=done)


def read_router_metrics(text: str, endpoint: Endpoint) -> RouterSeen:
    """The router's Prometheus exposition → the revision in force and counters by revision."""
    revision: int | None = None
    tallies: dict[int, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == METRIC_REVISION:
                revision = int(sample.value)
                continue
            labels = sample.labels
            if "revision" not in labels or not labels["revision"].isdigit():
                continue
            tally = tallies.setdefault(int(labels["revision"]), {})
            if sample.name == METRIC_REQUESTS:
                key = labels.get("served_by", "")
            elif sample.name == METRIC_FALLBACKS:
                key = "fallbacks"
            elif sample.name == METRIC_COMPARISONS:
                key = "agree" if labels.get("agree") == "true" else "disagree"
            else:
                continue
            if key in ("student", "teacher", "fallbacks", "agree", "disagree"):
                tally[key] = tally.get(key, 0) + int(sample.value)
    counts = {number: RevisionCounts(**tally) for number, tally in tallies.items()}
    return RouterSeen(endpoint=endpoint, revision=revision, counts=counts)
