"""The stage contract shared by the operator and the workloads.

A stage attempt gets a :class:`StageInput` (as JSON, in a file or on the command line)
and writes a :class:`StageResult` to ``<artifacts>/<namespace>/<name>/<stage>/<input-hash>/
result.json``. Results are content-addressed by the input hash, so an unchanged input
re-uses its result and a restarted operator never needs to run it twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field

RESULT_FILE = "result.json"
# A running job may report progress beside its result: shown to people, never decided on.
PROGRESS_FILE = "progress.json"
# The operator resolves the teacher's Secret into this variable of a stage job's env;
# the key is never in the spec, the input file or status.
TEACHER_API_KEY_ENV = "DISTILL_TEACHER_API_KEY"


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
