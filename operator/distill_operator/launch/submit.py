"""Mode ``submit``: stage jobs go to an existing Ray cluster through its job-submission API.

The stage's ``job_id`` is Ray's ``submission_id``, so Ray itself remembers what was
launched: before submitting, the launcher asks Ray whether that id exists and, if it does,
reports it instead of starting a second job. A race that ends in Ray's "already exists"
is the same answer.

Ray's ``JobSubmissionClient`` reports every HTTP failure as a ``RuntimeError`` whose text
carries the status code; :func:`_http_status` reads it back so that "no such job" (404)
is told apart from a dashboard that is down (connection refused, 5xx).

Ray 2.60 pitfall: a cluster started after a bare ``ray.init()`` wrote ``~/.ray/auth_token``
runs with token auth and answers 401; the local stack runs Ray with
``RAY_AUTH_MODE=disabled``. A 401 is reported as a :class:`PermanentError`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import requests
from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobSubmissionClient

from distill_operator.errors import LaunchError, PermanentError, UnreachableError
from distill_operator.launch.base import (
    JobObservation,
    JobSpec,
    JobState,
    ray_job_dashboard,
    shorten_message,
)

RAY_JOB_STATES: Final[Mapping[str, JobState]] = types.MappingProxyType(
    {
        "PENDING": JobState.PENDING,
        "RUNNING": JobState.RUNNING,
        "SUCCEEDED": JobState.SUCCEEDED,
        "FAILED": JobState.FAILED,
        "STOPPED": JobState.STOPPED,
    }
)
"""Ray's ``JobStatus`` values and the launcher state each one means."""

_STATUS_CODE: Final = re.compile(r"status code (\d{3})")


def job_state_from_ray(status: str) -> JobState:
    """The launcher state for one of Ray's ``JobStatus`` values.

    Args:
        status: ``JobStatus`` or its string value, e.g. ``"RUNNING"``.

    Returns:
        The matching state; a status this Ray does not document yet counts as pending,
        which keeps the operator watching rather than deciding on something unknown.
    """
    return RAY_JOB_STATES.get(str(getattr(status, "value", status)), JobState.PENDING)


def _http_status(error: RuntimeError) -> int | None:
    """The HTTP status code in a ``JobSubmissionClient`` error, if it carries one."""
    match = _STATUS_CODE.search(str(error))
    return int(match.group(1)) if match else None


def _observation(*, address: str, job_id: str, details: JobDetails) -> JobObservation:
    message = details.message or ""
    if details.error_type:
        message = f"{details.error_type}: {message}" if message else str(details.error_type)
    return JobObservation(
        job_id=job_id,
        state=job_state_from_ray(details.status),
        message=shorten_message(message),
        dashboard=ray_job_dashboard(address=address, submission_id=job_id),
    )


class SubmitLauncher:
    """Runs stage jobs on an existing Ray cluster via its dashboard's job-submission API.

    Ray has no namespaces: job ids must be unique across the cluster, which they are
    because they are derived from the project's uid.

    Args:
        address: The Ray dashboard URL, e.g. ``http://127.0.0.1:8265``.
    """

    mode: str = "submit"
    takes_secret_refs: bool = False

    def __init__(self, *, address: str) -> None:
        self.address = address
        # Built on first use: the constructor itself calls the dashboard, and an
        # unreachable Ray must surface as a transient error from a call, not here.
        self._client: JobSubmissionClient | None = None

    def observe(self, *, job_id: str, namespace: str) -> JobObservation | None:
        """The job's state as Ray reports it, or None when Ray has no such submission id."""
        with self._ray_errors(f"reading job {job_id}"):
            try:
                details = self._connected().get_job_info(job_id)
            except RuntimeError as error:
                if _http_status(error) == 404:
                    return None
                raise
        return _observation(address=self.address, job_id=job_id, details=details)

    def submit(self, spec: JobSpec) -> JobObservation:
        """Submit the job unless Ray already has its id; return what Ray reports."""
        existing = self.observe(job_id=spec.job_id, namespace=spec.namespace)
        if existing is not None:
            return existing
        runtime_env: dict[str, Any] = {"env_vars": dict(spec.env)} if spec.env else {}
        with self._ray_errors(f"submitting job {spec.job_id}"):
            try:
                self._connected().submit_job(
                    entrypoint=spec.entrypoint,
                    submission_id=spec.job_id,
                    runtime_env=runtime_env or None,
                    metadata=dict(spec.labels),
                    entrypoint_num_cpus=spec.entrypoint_num_cpus or None,
                )
            except RuntimeError as error:
                # Another submitter won the race for this id: that job is ours too.
                if "already exists" not in str(error):
                    raise
        submitted = self.observe(job_id=spec.job_id, namespace=spec.namespace)
        return submitted or JobObservation(
            job_id=spec.job_id,
            state=JobState.PENDING,
            message="submitted",
            dashboard=ray_job_dashboard(address=self.address, submission_id=spec.job_id),
        )

    def stop(self, *, job_id: str, namespace: str) -> None:
        """Ask Ray to stop the job (asynchronously); no-op when Ray has no such job.

        The job's record is kept, not deleted: Ray does not support re-using a deleted
        submission id, and the record is what makes a restarted operator find the job.
        """
        with self._ray_errors(f"stopping job {job_id}"):
            try:
                self._connected().stop_job(job_id)
            except RuntimeError as error:
                if _http_status(error) != 404:
                    raise

    def _connected(self) -> JobSubmissionClient:
        if self._client is None:
            self._client = JobSubmissionClient(self.address)
        return self._client

    @contextmanager
    def _ray_errors(self, action: str) -> Iterator[None]:
        """Translate Ray client failures into the operator's error types."""
        try:
            yield
        except (ConnectionError, requests.exceptions.RequestException) as error:
            raise UnreachableError(
                f"{action}: Ray at {self.address} unreachable: {error}"
            ) from error
        except AuthenticationError as error:
            raise PermanentError(
                f"{action}: Ray at {self.address} refused our credentials: {error}"
            ) from error
        except RuntimeError as error:
            status = _http_status(error)
            if status is None:
                raise  # not an HTTP answer: a bug or a broken install, not a retry
            if status >= 500:
                raise UnreachableError(f"{action}: Ray at {self.address}: {error}") from error
            raise LaunchError(f"{action}: Ray at {self.address} refused: {error}") from error
