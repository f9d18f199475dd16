"""The launcher interface the operator drives, and the job states it understands."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from distill_operator import api

MAX_MESSAGE_CHARS: Final = 1000
"""Ray puts up to 20,000 characters of logs in a failed job's message; status wants a line."""

DEPLOYMENT_MODE = "deployment"
"""The launcher mode of a router on kubernetes (the others are spec.ray.mode's)."""


class JobState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    # The platform could not be asked (Ray's dashboard down): the job may be running,
    # so the attempt goes on under its deadline.
    UNKNOWN = "Unknown"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)


@dataclass(frozen=True)
class Owner:
    """The project a job belongs to, for the ownerReferences of what a launcher creates."""

    name: str
    uid: str

    def reference(self) -> dict[str, str]:
        """The ownerReference naming the project."""
        kind = f"{api.GROUP}/{api.VERSION}"
        return {"apiVersion": kind, "kind": api.KIND, "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class JobSpec:
    """One stage attempt's job. ``job_id`` is chosen (and saved in status) beforehand."""

    job_id: str
    namespace: str
    entrypoint: str
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # CPUs reserved for the stage's driver: on a saturated cluster the job waits
    # (PENDING) for them instead of overcommitting the node.
    entrypoint_num_cpus: float = 0.0
    owner: Owner | None = None
    # (env var, Secret name, key): for launchers whose platform reads Secrets itself (a
    # pod's secretKeyRef), so the value never enters the object they create.
    secret_env: tuple[tuple[str, str, str], ...] = ()


def secret_key_refs(spec: JobSpec) -> list[dict[str, Any]]:
    """``spec.secret_env`` as container env entries: the kubelet reads the Secret."""
    return [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for variable, secret, key in spec.secret_env
    ]


@dataclass(frozen=True)
class JobObservation:
    """What the launcher sees of a job it was asked about."""

    job_id: str
    state: JobState
    message: str = ""
    dashboard: str | None = None


class Launcher(Protocol):
    """Submits and watches stage jobs. Every method is idempotent by ``job_id``."""

    mode: str
    # True: give it ``JobSpec.secret_env`` as references; False: resolve them into env.
    takes_secret_refs: bool

    def observe(self, *, job_id: str, namespace: str) -> JobObservation | None:
        """The job's state, or None when no job with this id exists."""
        ...

    def submit(self, spec: JobSpec) -> JobObservation:
        """Start the job unless one with the same id exists; return what is there."""
        ...

    def stop(self, *, job_id: str, namespace: str) -> None:
        """Stop (and, where the platform keeps objects, delete) the job; no-op if gone."""
        ...


def shorten_message(message: str, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The message's head and tail: the error's summary leads, the last log lines end it."""
    if len(message) <= limit:
        return message
    marker = " [...] "
    head = (limit - len(marker)) // 3
    return message[:head] + marker + message[len(message) - (limit - len(marker) - head) :]


def ray_job_dashboard(*, address: str, submission_id: str) -> str:
    """The Ray dashboard page of one job."""
    return f"{address.rstrip('/')}/#/jobs/{submission_id}"
