"""Mode ``rayjob``: each stage attempt is one KubeRay ``RayJob`` (ray.io/v1).

The RayJob is named after the stage's ``job_id`` and sets ``spec.jobId`` to it, so both
the Kubernetes object and the Ray submission carry the id saved in status beforehand; a
restarted operator finds the RayJob by name instead of creating a second one (a 409 on
create means the same thing). KubeRay builds a RayCluster from ``rayClusterSpec`` (the
user's template, or :func:`default_cluster_spec`), submits the entrypoint from a
submitter Kubernetes Job (``K8sJobMode``) and, with ``shutdownAfterJobFinishes``,
deletes the cluster ``ttlSecondsAfterFinished`` after the end. The RayJob itself stays,
so its verdict can still be read; :meth:`RayJobLauncher.stop` deletes it (KubeRay's
finalizer then stops the Ray job).

KubeRay reports two statuses that can disagree: ``jobDeploymentStatus`` (KubeRay's own
lifecycle: cluster, submitter, deadlines) and ``jobStatus`` (the Ray job, copied from
the dashboard). :func:`fold_status` folds them into one :class:`JobState`, following
KubeRay v1.6.2's ``rayjob_controller.go``:

======================================  ==========================  ==========
jobDeploymentStatus                     jobStatus                   JobState
======================================  ==========================  ==========
"" (New), Initializing, Waiting         any                         Pending
Retrying                                any                         Pending
Suspending, Suspended                   any                         Pending
Running                                 "" (New), PENDING           Pending
Running                                 RUNNING                     Running
Running                                 SUCCEEDED, FAILED, STOPPED  Running
Complete                                SUCCEEDED                   Succeeded
Complete                                STOPPED                     Stopped
Complete                                anything else               Failed
Failed, ValidationFailed                any                         Failed
(a value this KubeRay does not have)    any                         Pending
======================================  ==========================  ==========

Why: the deployment status is the authority on *whether* the RayJob is over; the job
status only says *how*. KubeRay writes Complete only once the Ray job is SUCCEEDED or
STOPPED (FAILED becomes Failed with reason AppFailed), after the submitter has finished;
until then a terminal ``jobStatus`` under Running is still running, and KubeRay's grace
period bounds the wait. Failed wins over any ``jobStatus``: KubeRay fails a RayJob whose
submitter failed or whose deadline passed while the Ray job still says RUNNING, and then
never updates ``jobStatus`` again. Complete with a job status other than SUCCEEDED or
STOPPED is inconsistent and final, so it counts as Failed rather than waiting forever.
Suspended is not terminal (Kueue suspends RayJobs while they queue; clearing
``spec.suspend`` starts them again), hence Pending. Retrying happens only with a
``backoffLimit``, which this launcher leaves at 0: retries are the stage machine's.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Mapping
from typing import Any, Final, cast

import yaml
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from distill_operator.errors import (
    LaunchError,
    PermanentError,
)
from distill_operator.launch.apierrors import api_message, kubernetes_errors
from distill_operator.launch.base import (
    JobObservation,
    JobSpec,
    JobState,
    ray_job_dashboard,
    secret_key_refs,
    shorten_message,
)

KUBERAY_VERSION: Final = "1.6.2"
"""The KubeRay release whose RayJob schema and status semantics this module follows."""

GROUP: Final = "ray.io"
VERSION: Final = "v1"
PLURAL: Final = "rayjobs"

MAX_RAYJOB_NAME_LENGTH: Final = 47
"""KubeRay appends 6 characters for the RayCluster, whose name may not exceed 53."""

_DNS1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

_PENDING_DEPLOYMENTS: Final = frozenset(
    {"", "Initializing", "Waiting", "Retrying", "Suspending", "Suspended"}
)
_FAILED_DEPLOYMENTS: Final = frozenset({"Failed", "ValidationFailed"})


def fold_status(
    *, deployment_status: str, job_status: str, reason: str = "", message: str = ""
) -> tuple[JobState, str]:
    """Fold a RayJob's two statuses into one state and a message (table in the module doc).

    Args:
        deployment_status: ``status.jobDeploymentStatus`` ("" when unset).
        job_status: ``status.jobStatus`` ("" when unset).
        reason: ``status.reason``, e.g. ``SubmissionFailed``.
        message: ``status.message``.

    Returns:
        The state and a one-line message naming both statuses and KubeRay's explanation.
    """
    summary = f"RayJob {deployment_status or 'New'}, Ray job {job_status or 'not started'}"
    detail = ": ".join(part for part in (reason, message) if part)
    text = f"{summary}; {detail}" if detail else summary
    if deployment_status in _FAILED_DEPLOYMENTS:
        return JobState.FAILED, text
    if deployment_status == "Complete":
        if job_status == "SUCCEEDED":
            return JobState.SUCCEEDED, text
        if job_status == "STOPPED":
            return JobState.STOPPED, text
        return JobState.FAILED, f"{text} (KubeRay completed a Ray job that did not succeed)"
    if deployment_status == "Running":
        if job_status in ("", "PENDING"):
            return JobState.PENDING, text
        if job_status == "RUNNING":
            return JobState.RUNNING, text
        return JobState.RUNNING, f"{text} (waiting for KubeRay to finish the RayJob)"
    if deployment_status in _PENDING_DEPLOYMENTS:
        return JobState.PENDING, text
    return JobState.PENDING, f"{text} (unknown to KubeRay {KUBERAY_VERSION}; still watching)"


def observe_rayjob(rayjob: Mapping[str, Any]) -> JobObservation:
    """What a RayJob object says about its stage job."""
    status: Mapping[str, Any] = rayjob.get("status") or {}
    state, message = fold_status(
        deployment_status=str(status.get("jobDeploymentStatus") or ""),
        job_status=str(status.get("jobStatus") or ""),
        reason=str(status.get("reason") or ""),
        message=shorten_message(str(status.get("message") or "")),
    )
    name = str(rayjob["metadata"]["name"])
    dashboard_url = str(status.get("dashboardURL") or "")
    ray_job_id = str(status.get("jobId") or rayjob.get("spec", {}).get("jobId") or name)
    dashboard = None
    if dashboard_url:
        # KubeRay stores the head service as host:port, without a scheme.
        base = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
        dashboard = ray_job_dashboard(address=base, submission_id=ray_job_id)
    return JobObservation(job_id=name, state=state, message=message, dashboard=dashboard)


def default_cluster_spec(
    *,
    image: str,
    gpu_workers: int = 1,
    gpus_per_worker: int = 1,
    ray_version: str | None = None,
) -> dict[str, Any]:
    """A RayJob ``rayClusterSpec``: a CPU head and one group of GPU workers for training.

    Args:
        image: The Ray image for every pod, e.g. ``rayproject/ray:2.60.0-py311-gpu``; it
            must hold ``distill_jobs`` and the same Ray version as ``ray_version``.
        gpu_workers: Number of GPU worker pods; 0 leaves only the head (CPU-only stages).
        gpus_per_worker: ``nvidia.com/gpu`` per worker pod.
        ray_version: The image's Ray version; defaults to the operator's own Ray.

    Returns:
        A plain dict in KubeRay's RayClusterSpec shape, ready for ``RayJobLauncher``.
    """
    head = {
        "name": "ray-head",
        "image": image,
        "ports": [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
        ],
        "resources": _resources(cpu="2", memory="8Gi"),
    }
    spec: dict[str, Any] = {
        "rayVersion": ray_version or importlib.metadata.version("ray"),
        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [head]}}},
    }
    if gpu_workers > 0:
        worker = {
            "name": "ray-worker",
            "image": image,
            "resources": _resources(cpu="8", memory="32Gi", gpus=gpus_per_worker),
        }
        # GPU nodes are commonly tainted so that only GPU work lands on them.
        gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        spec["workerGroupSpecs"] = [
            {
                "groupName": "gpu",
                "replicas": gpu_workers,
                "minReplicas": gpu_workers,
                "maxReplicas": gpu_workers,
                "rayStartParams": {},
                "template": {"spec": {"containers": [worker], "tolerations": [gpu_toleration]}},
            }
        ]
    return spec


def _resources(*, cpu: str, memory: str, gpus: int = 0) -> dict[str, dict[str, str]]:
    amounts = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def rayjob_manifest(
    *, spec: JobSpec, cluster_spec: Mapping[str, Any], ttl_seconds_after_finished: int
) -> dict[str, Any]:
    """The RayJob object for one stage attempt.

    Raises:
        LaunchError: ``spec.job_id`` is not a name KubeRay accepts for a RayJob.
    """
    if len(spec.job_id) > MAX_RAYJOB_NAME_LENGTH or not _DNS1035_LABEL.match(spec.job_id):
        raise LaunchError(
            f"job id {spec.job_id!r} cannot name a RayJob: KubeRay needs a DNS-1035 label "
            f"(lowercase letters, digits, '-', starting with a letter) of at most "
            f"{MAX_RAYJOB_NAME_LENGTH} characters"
        )
    rayjob_spec: dict[str, Any] = {
        "entrypoint": spec.entrypoint,
        "jobId": spec.job_id,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "rayClusterSpec": copy.deepcopy(dict(cluster_spec)),
    }
    if spec.entrypoint_num_cpus:
        rayjob_spec["entrypointNumCpus"] = spec.entrypoint_num_cpus
    if spec.labels:
        rayjob_spec["metadata"] = dict(spec.labels)  # Ray's job metadata, as in mode submit
    if spec.env:
        rayjob_spec["runtimeEnvYAML"] = yaml.safe_dump({"env_vars": dict(spec.env)})
    if spec.secret_env:
        _add_to_every_ray_container(rayjob_spec["rayClusterSpec"], secret_key_refs(spec))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {"name": spec.job_id, "namespace": spec.namespace, "labels": dict(spec.labels)}
        | ({"ownerReferences": [spec.owner.reference()]} if spec.owner else {}),
        "spec": rayjob_spec,
    }


def _add_to_every_ray_container(cluster_spec: dict[str, Any], env: list[dict[str, Any]]) -> None:
    """Secrets by reference on the head (the driver) and every worker (Ray's tasks), so
    no value sits in the RayJob, in etcd or in Ray's job record."""
    groups = [cluster_spec.get("headGroupSpec") or {}, *cluster_spec.get("workerGroupSpecs", [])]
    for group in groups:
        for container in group.get("template", {}).get("spec", {}).get("containers", []):
            names = {entry["name"] for entry in env}
            kept = [entry for entry in container.get("env", []) if entry.get("name") not in names]
            container["env"] = kept + env


class RayJobLauncher:
    """Runs stage jobs as KubeRay RayJobs, one per stage attempt.

    Args:
        api_client: A Kubernetes API client (``kubernetes.client.ApiClient``).
        template: The ``rayClusterSpec`` every RayJob gets, e.g. from the project spec
            or :func:`default_cluster_spec`. It is copied, never modified.
        ttl_seconds_after_finished: How long KubeRay keeps the finished job's cluster
            (for logs and the dashboard) before deleting it.
        request_timeout_s: Timeout of each call to the API server.
    """

    mode: str = "rayjob"
    takes_secret_refs: bool = True

    def __init__(
        self,
        *,
        api_client: ApiClient,
        template: Mapping[str, Any],
        ttl_seconds_after_finished: int = 300,
        request_timeout_s: float = 30.0,
    ) -> None:
        self._api = CustomObjectsApi(api_client)
        self.template = copy.deepcopy(dict(template))
        self.ttl_seconds_after_finished = ttl_seconds_after_finished
        self.request_timeout_s = request_timeout_s

    def observe(self, *, job_id: str, namespace: str) -> JobObservation | None:
        """The RayJob's folded state, or None when there is no RayJob named ``job_id``."""
        with kubernetes_errors(f"reading RayJob {namespace}/{job_id}"):
            try:
                rayjob = self._api.get_namespaced_custom_object(
                    group=GROUP,
                    version=VERSION,
                    namespace=namespace,
                    plural=PLURAL,
                    name=job_id,
                    _request_timeout=self.request_timeout_s,
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        return observe_rayjob(cast(Mapping[str, Any], rayjob))

    def submit(self, spec: JobSpec) -> JobObservation:
        """Create the RayJob unless it exists; return what its status says."""
        existing = self.observe(job_id=spec.job_id, namespace=spec.namespace)
        if existing is not None:
            return existing
        manifest = rayjob_manifest(
            spec=spec,
            cluster_spec=self.template,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
        )
        action = f"creating RayJob {spec.namespace}/{spec.job_id}"
        with kubernetes_errors(action):
            try:
                created = self._api.create_namespaced_custom_object(
                    group=GROUP,
                    version=VERSION,
                    namespace=spec.namespace,
                    plural=PLURAL,
                    body=manifest,
                    # Unknown fields are an error, not a warning: a typo in the user's
                    # template must not be silently dropped.
                    field_validation="Strict",
                    _request_timeout=self.request_timeout_s,
                )
            except ApiException as error:
                if error.status == 409:  # created by an earlier try: that one is ours
                    return self.observe(job_id=spec.job_id, namespace=spec.namespace) or (
                        JobObservation(job_id=spec.job_id, state=JobState.PENDING)
                    )
                if error.status == 404:
                    raise PermanentError(
                        f"{action}: the API server does not serve {PLURAL}.{GROUP}/{VERSION}; "
                        f"install KubeRay (>= {KUBERAY_VERSION}) or use spec.ray.mode: submit"
                    ) from error
                if error.status in (400, 422):
                    raise LaunchError(f"{action}: rejected: {api_message(error)}") from error
                raise
        return observe_rayjob(cast(Mapping[str, Any], created))

    def stop(self, *, job_id: str, namespace: str) -> None:
        """Delete the RayJob (KubeRay stops its Ray job and cluster); no-op if it is gone."""
        with kubernetes_errors(f"deleting RayJob {namespace}/{job_id}"):
            try:
                self._api.delete_namespaced_custom_object(
                    group=GROUP,
                    version=VERSION,
                    namespace=namespace,
                    plural=PLURAL,
                    name=job_id,
                    propagation_policy="Background",
                    _request_timeout=self.request_timeout_s,
                )
            except ApiException as error:
                if error.status != 404:
                    raise
