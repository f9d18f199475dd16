"""Dry mode: jobs are recorded and reported pending, never run.

For measuring the operator itself (``bench/scale.py``, the spec fuzzing test): every
project is reconciled, passes or stalls in Define, and waits in its first job stage
with a job that never starts, so no Ray cluster, GPU or model is involved. Jobs live in
this process's memory: a restarted dry operator submits them again, harmlessly.
"""

from __future__ import annotations

import threading

from distill_operator.launch.base import JobObservation, JobSpec, JobState

DRY_RUN_MESSAGE = "dry run: the operator records jobs and never runs them"


class DryLauncher:
    """A launcher for every mode that accepts jobs and leaves them pending."""

    takes_secret_refs: bool = True  # nothing is resolved: no Secret value is ever read

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._jobs: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # calls come from asyncio.to_thread workers

    def observe(self, *, job_id: str, namespace: str) -> JobObservation | None:
        with self._lock:
            if (namespace, job_id) not in self._jobs:
                return None
        return JobObservation(job_id=job_id, state=JobState.PENDING, message=DRY_RUN_MESSAGE)

    def submit(self, spec: JobSpec) -> JobObservation:
        with self._lock:
            self._jobs.add((spec.namespace, spec.job_id))
        return JobObservation(job_id=spec.job_id, state=JobState.PENDING, message=DRY_RUN_MESSAGE)

    def stop(self, *, job_id: str, namespace: str) -> None:
        with self._lock:
            self._jobs.discard((namespace, job_id))
