"""The DistillationProject API (distill.dev/v1alpha1): spec, status, and their rules."""

from distill_operator.api.spec import ProjectSpec
from distill_operator.api.status import (
    CandidateStatus,
    Condition,
    ConditionStatus,
    CostLedger,
    Diagnosis,
    JobRecord,
    JobRunStatus,
    LifecycleStatus,
    Phase,
    ProjectStatus,
    ServiceJobStatus,
    Serving,
    Spend,
    Stage,
    StageCost,
    StageState,
    StageStatus,
    Student,
    Trigger,
)

GROUP = "distill.dev"
VERSION = "v1alpha1"
KIND = "DistillationProject"
PLURAL = "distillationprojects"
SINGULAR = "distillationproject"
SHORT_NAMES = ("dp", "distill")

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "CandidateStatus",
    "Condition",
    "ConditionStatus",
    "CostLedger",
    "Diagnosis",
    "JobRecord",
    "JobRunStatus",
    "LifecycleStatus",
    "Phase",
    "ProjectSpec",
    "ProjectStatus",
    "ServiceJobStatus",
    "Serving",
    "Spend",
    "Stage",
    "StageCost",
    "StageState",
    "StageStatus",
    "Student",
    "Trigger",
]
