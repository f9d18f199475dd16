"""A stand-in for the KubeRay operator, for tests only: KubeRay's pods cannot run here.

It watches (polls) the RayJobs of one namespace and, for each, runs the entrypoint on the
local Ray cluster (submission id = ``spec.jobId``, else the RayJob's name) and writes the
RayJob's status through the status subresource the way KubeRay v1.6's controller does:
``jobDeploymentStatus`` New → Initializing → Running → Complete | Failed, with
``jobStatus`` copied from Ray, ``jobId``, ``dashboardURL`` (host:port), ``startTime``,
``endTime``, ``rayJobInfo``, ``reason`` and ``message``. A deleted RayJob's Ray job is
stopped, as KubeRay's finalizer does. There is no RayCluster and no submitter Job.

Faults make it misbehave the ways the real one can, per RayJob name.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import yaml
from kubernetes import config
from kubernetes.client import CustomObjectsApi
from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class Fault(StrEnum):
    # The submitter Job failed (e.g. lost its pod) while the Ray job keeps RUNNING.
    DEPLOYMENT_FAILED_WHILE_RUNNING = "deployment-failed-while-running"
    # The submitter Job failed whatever Ray says of the job (e.g. it is still PENDING).
    DEPLOYMENT_FAILED = "deployment-failed"
    # The cluster never becomes ready: the RayJob stays Initializing.
    STUCK_INITIALIZING = "stuck-initializing"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_ms(milliseconds: int | None) -> str | None:
    if not milliseconds:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeRayStandIn:
    """Plays KubeRay's RayJob controller for one namespace, on a background thread."""

    def __init__(
        self, *, kubeconfig: str, namespace: str, ray_address: str, poll_s: float = 0.2
    ) -> None:
        self.namespace = namespace
        self.ray_address = ray_address
        self.poll_s = poll_s
        self.faults: dict[str, Fault] = {}
        self.default_fault: Fault | None = None  # for RayJobs named by someone else
        client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self._api = CustomObjectsApi(client)
        self._ray = JobSubmissionClient(ray_address)
        self._live: set[str] = set()  # RayJobs whose Ray job we started and may still run
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kuberay-standin", daemon=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[KubeRayStandIn]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stopping.set()
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                listed = self._api.list_namespaced_custom_object(
                    group="ray.io", version="v1", namespace=self.namespace, plural="rayjobs"
                )
                items = cast(dict[str, Any], listed)["items"]
                rayjobs = {item["metadata"]["name"]: item for item in items}
                for name in self._live - rayjobs.keys():  # deleted: KubeRay's finalizer stops it
                    with contextlib.suppress(RuntimeError):
                        self._ray.stop_job(name)
                    self._live.discard(name)
                for rayjob in rayjobs.values():
                    self._reconcile(rayjob)
            except Exception:  # a stand-in keeps going, like a controller's requeue
                log.exception("kuberay stand-in: reconcile failed")

    def _reconcile(self, rayjob: Mapping[str, Any]) -> None:
        name, spec = rayjob["metadata"]["name"], rayjob["spec"]
        status: dict[str, Any] = dict(rayjob.get("status") or {})
        fault = self.faults.get(name, self.default_fault)
        deployment = status.get("jobDeploymentStatus", "")
        if deployment == "":
            status |= {
                "jobDeploymentStatus": "Initializing",
                "jobId": spec.get("jobId") or name,
                "rayClusterName": f"{name}-stand",
                "startTime": _now(),
            }
        elif deployment == "Initializing" and fault is not Fault.STUCK_INITIALIZING:
            self._submit(submission_id=status["jobId"], spec=spec)
            self._live.add(name)
            status |= {
                "jobDeploymentStatus": "Running",
                "dashboardURL": self.ray_address.split("://", 1)[-1],
            }
        elif deployment == "Running":
            info = self._ray.get_job_info(status["jobId"])
            job_status = str(info.status.value)
            status |= {"jobStatus": job_status, "message": info.message or ""}
            status["rayJobInfo"] = {
                key: value
                for key, value in (
                    ("startTime", _from_ms(info.start_time)),
                    ("endTime", _from_ms(info.end_time)),
                )
                if value
            }
            deployment_failed = fault is Fault.DEPLOYMENT_FAILED or (
                fault is Fault.DEPLOYMENT_FAILED_WHILE_RUNNING and job_status == "RUNNING"
            )
            if deployment_failed:
                status |= {
                    "jobDeploymentStatus": "Failed",
                    "reason": "SubmissionFailed",
                    "message": "Job submission has failed. Reason: BackoffLimitExceeded. "
                    "Message: Job has reached the specified backoff limit",
                    "endTime": _now(),
                }
            elif job_status in TERMINAL:
                failed = job_status == "FAILED"
                status |= {
                    "jobDeploymentStatus": "Failed" if failed else "Complete",
                    "reason": "AppFailed" if failed else "",
                    "endTime": _now(),
                }
                self._live.discard(name)
        if status != (rayjob.get("status") or {}):
            self._api.patch_namespaced_custom_object_status(
                group="ray.io",
                version="v1",
                namespace=self.namespace,
                plural="rayjobs",
                name=name,
                body={"status": status},
            )

    def _submit(self, *, submission_id: str, spec: Mapping[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # 404: not submitted yet
            self._ray.get_job_info(submission_id)
            return
        self._ray.submit_job(
            entrypoint=spec["entrypoint"],
            submission_id=submission_id,
            runtime_env=yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or None,
            metadata=dict(spec.get("metadata") or {}),
            entrypoint_num_cpus=spec.get("entrypointNumCpus") or None,
        )
