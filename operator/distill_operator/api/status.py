"""The DistillationProject status, shaped by the Kubernetes API conventions.

``stage`` and ``phase`` summarise; ``stages`` has one entry per stage in order;
``conditions`` are metav1.Condition-shaped and follow kstatus (Ready, Reconciling,
Stalled) so Argo CD and Flux read health as is, plus one per stage exit condition.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from distill_operator.api.rules import ApiModel


class Stage(StrEnum):
    """The seven DISTILL stages, in order."""

    DEFINE = "Define"
    INVESTIGATE = "Investigate"
    SOURCE = "Source"
    TEACH = "Teach"
    ITERATE = "Iterate"
    LOOK = "Look"
    LAUNCH = "Launch"

    @property
    def exit_condition_type(self) -> str:
        """The condition type that says whether this stage's exit condition holds."""
        return EXIT_CONDITION_TYPES[self]


EXIT_CONDITION_TYPES = {
    Stage.DEFINE: "TaskDefined",
    Stage.INVESTIGATE: "AlternativesRuledOut",
    Stage.SOURCE: "DataSourced",
    Stage.TEACH: "TeacherOutputsFiltered",
    Stage.ITERATE: "StudentSelected",
    Stage.LOOK: "SlicesPass",
    Stage.LAUNCH: "StudentLaunched",
}


class StageState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"

    def is_terminal(self) -> bool:
        return self in (StageState.SUCCEEDED, StageState.FAILED, StageState.SKIPPED)


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    BASELINE_SUFFICIENT = "BaselineSufficient"
    MONITORING = "Monitoring"
    SUSPENDED = "Suspended"

    def is_terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.BASELINE_SUFFICIENT)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    observed_generation: int = Field(default=0, ge=0)
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")


MAX_JOB_MESSAGE = 1000


class JobRecord(ApiModel):
    """The job of a stage attempt; its id is saved here before it is submitted."""

    mode: str = Field(description="submit, rayjob, or deployment (the router on kubernetes).")
    id: str = Field(description="Ray submission id, RayJob name, or Deployment name.")
    state: str = Field(default="", description="The job's last observed state.")
    message: str = Field(
        default="",
        max_length=MAX_JOB_MESSAGE,
        description="What the platform last said of the job, or why it could not be asked.",
    )
    dashboard: str | None = Field(default=None, description="Where to read the job's logs.")
    submitted_at: str | None = Field(default=None, description="When the job was submitted.")


MAX_STAGE_METRICS = 32
MAX_CANDIDATE_METRICS = 16
MAX_CANDIDATES = 16  # Investigate's alternatives (up to 16), Iterate's students (8)


class JobRunStatus(ApiModel):
    """Where one unit of Ray work stands: one job per attempt, one result.

    A stage that runs work is one such unit; Iterate is split into one per student
    candidate. Retries, deadlines and results work the same way for both.
    """

    max_metrics: ClassVar[int] = MAX_STAGE_METRICS

    state: StageState = StageState.PENDING
    reason: str = Field(default="", description="Why it is in its state (CamelCase).")
    message: str = Field(default="")
    attempt: int = Field(default=0, ge=0, description="Attempt number (0 is the first).")
    input_hash: str | None = Field(default=None, description="Content hash of the stage input.")
    started_at: str | None = None
    finished_at: str | None = None
    next_attempt_at: str | None = Field(default=None, description="When a retry is due.")
    job: JobRecord | None = None
    result_uri: str | None = Field(default=None, description="StageResult JSON of the attempt.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_STAGE_METRICS,
        description="The result's headline numbers (counts, scores); full tables stay in "
        "the artifact store, at resultUri.",
    )


class CandidateStatus(JobRunStatus):
    """One part of a stage that runs a job per part: a student candidate of Iterate
    (trained and measured) or an alternative of Investigate (evaluated)."""

    max_metrics: ClassVar[int] = MAX_CANDIDATE_METRICS

    name: str = Field(max_length=63, description="The candidate's or alternative's name.")
    student_uri: str | None = Field(
        default=None,
        description="The model it is about: the trained student (a model directory), or "
        "the alternative's model.",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_CANDIDATE_METRICS,
        description="Training progress while it runs (step, loss, tokensPerSecond), then "
        "the result's headline numbers (parameters, score, latency_p95_ms, cost_per_1k_requests).",
    )


class StageStatus(JobRunStatus):
    """Where one stage stands."""

    name: Stage
    exit_condition: str = Field(default="", description="The exit condition, and whether it holds.")
    candidates: list[CandidateStatus] = Field(
        default_factory=list,
        max_length=MAX_CANDIDATES,
        description="Investigate and Iterate: one entry per alternative or student "
        "candidate, each evaluated or trained by its own job. Iterate keeps the smallest "
        "candidate that clears the bar; an alternative that clears it ends the project.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        exclude_if=lambda candidates: not candidates,  # other stages' status stays as it was
    )
    report_config_map: str | None = Field(
        default=None,
        description="Look: the ConfigMap (same namespace) with the slice table, the "
        "disagreements and the diagnosis, so kubectl shows them without the artifact store.",
    )


class Diagnosis(ApiModel):
    """Where the DISTILL debugging map points when a project fails or is weak."""

    stage: Stage = Field(description="The stage at fault.")
    reason: str = Field(max_length=1024, description="CamelCase, e.g. BroadWeakness.")
    message: str = Field(default="", max_length=4096, description="The evidence.")


class Student(ApiModel):
    """The student that is (or will be) served."""

    name: str
    uri: str | None = None
    score: float | None = None


class ServiceJobStatus(JobRunStatus):
    """A job of the lifecycle rather than of a stage: the router, or a drift check."""

    max_metrics: ClassVar[int] = MAX_CANDIDATE_METRICS

    name: str = Field(max_length=63, description="router, or drift-<check number>.")
    metrics: dict[str, float] = Field(default_factory=dict, max_length=MAX_CANDIDATE_METRICS)


class Serving(ApiModel):
    """The router in front of the student and the teacher, and the rollout through it."""

    router: ServiceJobStatus | None = Field(
        default=None,
        description="The router's job (a Deployment on kubernetes, a Ray job on ray); it "
        "outlives re-distillations.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Where the running router listens (OpenAI API: /v1/chat/completions); "
        "the operator reads its /metrics there.",
    )
    service: str | None = Field(
        default=None,
        description="platform kubernetes: the router's Service, the stable in-cluster URL "
        "for clients.",
    )
    live: Student | None = Field(
        default=None, description="The student answering traffic since its rollout finished."
    )
    candidate: Student | None = Field(default=None, description="The student being rolled out.")
    revision: int = Field(default=0, ge=0, description="The routing revision written last.")
    mode: str = Field(default="teacher", description="teacher, shadow, canary or full.")
    percent: int = Field(default=0, ge=0, le=100, description="canary: the student's share.")
    step: int | None = Field(
        default=None, ge=0, description="The rollout step in progress (index in launch.steps)."
    )
    step_started_at: str | None = Field(
        default=None, description="When the router began serving the step."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_CANDIDATE_METRICS,
        description="The current revision's numbers: studentRequests, fallbackRate, "
        "comparisons, agreement.",
    )
    message: str = Field(default="", max_length=4096)


class Trigger(ApiModel):
    """Why a re-distillation began."""

    reason: str = Field(description="Drifted, Scheduled or SpecChanged.")
    message: str = Field(default="", max_length=4096)
    at: str


class LifecycleStatus(ApiModel):
    """Drift checks of the live student and re-distillations."""

    redistillations: int = Field(
        default=0, ge=0, description="Loops back to Source on fresh traffic (drift, schedule)."
    )
    last_trigger: Trigger | None = None
    next_scheduled_at: str | None = Field(default=None, description="Next cron re-distillation.")
    drift_checks: int = Field(default=0, ge=0, description="Drift checks started so far.")
    next_drift_check_at: str | None = None
    drift_check: ServiceJobStatus | None = Field(
        default=None, description="The latest drift check's job (distill_jobs.monitor)."
    )
    drift: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_CANDIDATE_METRICS,
        description="The latest check's numbers: sliceShift, lengthShift, liveAgreement.",
    )
    drifted: bool | None = Field(default=None, description="Whether the latest check found drift.")
    drift_message: str = Field(default="", max_length=4096)


class Spend(ApiModel):
    """What was spent: accelerator time, teacher tokens, and their price when known."""

    accelerator_seconds: float = Field(
        default=0.0,
        ge=0.0,
        description="GPU-seconds (GPUs held x wall seconds); CPU-only work counts 0.",
    )
    estimated_accelerator_seconds: float = Field(
        default=0.0,
        ge=0.0,
        description="The part of acceleratorSeconds estimated by the operator (requested "
        "GPUs x wall time since submit) for attempts whose job reported nothing: it died, "
        "was stopped, or ran past its deadline.",
    )
    teacher_input_tokens: int = Field(
        default=0, ge=0, description="Prompt tokens sent to the teacher."
    )
    teacher_output_tokens: int = Field(default=0, ge=0, description="Tokens the teacher generated.")
    price: float | None = Field(
        default=None,
        ge=0.0,
        description="acceleratorSeconds/3600 x students.training.pricePerAcceleratorHour + "
        "tokens x teacher.pricing, in that currency. Absent when some of it has no price "
        "(teacher tokens without teacher.pricing): never a guess.",
    )


class StageCost(Spend):
    """What one stage's attempts spent, summed over every attempt and re-distillation."""

    name: Stage
    attempts: int = Field(
        default=0, ge=0, description="Attempts counted (failed ones too: they also spent)."
    )


class CostLedger(ApiModel):
    """What the project spent, per stage and in total. Each job attempt is counted once,
    when it ends; a result re-used for an unchanged input costs nothing again."""

    stages: list[StageCost] = Field(
        default_factory=list,
        max_length=7,
        description="One entry per stage that has spent anything, in DISTILL order.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    total: Spend = Field(default_factory=Spend, description="The sum of stages.")


class ProjectStatus(ApiModel):
    """Where the project stands: the current stage, each stage, conditions."""

    observed_generation: int = Field(default=0, ge=0)
    stage: Stage | None = Field(default=None, description="The stage in progress (or last).")
    phase: Phase = Phase.PENDING
    stages: list[StageStatus] = Field(default_factory=list, max_length=7)
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    student: Student | None = None
    diagnosis: Diagnosis | None = Field(
        default=None,
        description="When the project fails or is weak: the stage at fault and the evidence "
        "(broad weakness → Source; specific slices → Teach or Look; decay → Launch).",
    )
    serving: Serving | None = Field(default=None, description="Launch: the router and rollout.")
    lifecycle: LifecycleStatus = Field(default_factory=LifecycleStatus)
    cost: CostLedger | None = Field(
        default=None,
        description="The cost ledger: accelerator-seconds and teacher tokens per stage and "
        "in total, priced where the spec gives prices.",
    )
    pending_generation: int | None = Field(
        default=None,
        description="A spec generation applied while a stage ran: picked up when it ends.",
    )
