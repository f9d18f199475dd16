"""Mode ``deployment``: the router as a Kubernetes Deployment and Service (apps/v1, v1).

Only the router runs this way (``spec.launch.router.platform: kubernetes``): it serves
until stopped, which is what a Deployment is for, while stage work stays on Ray. The
Deployment is named after the router's ``job_id`` (saved in status first, so a restarted
operator finds it); a new router input is a new Deployment, and the old one is deleted.
The Service, ``<project>-router``, selects whichever router pods the project has, so
clients keep one address across router restarts. Both are owned by the project (garbage
collected with it where a controller manager runs; the operator also deletes them when
the project goes).

A Deployment has no end: it is Running once its replica is available on the current
generation, Failed when the deployment controller gives up (``Progressing`` False,
``ProgressDeadlineExceeded``), and Pending otherwise. A router that cannot start writes
a failed result naming the field to fix, which decides before the pod's back-off does.

Secrets reach the pod by ``secretKeyRef``: no key value is ever part of the Deployment.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, V1Deployment
from kubernetes.client.exceptions import ApiException

from distill_operator import naming
from distill_operator.errors import LaunchError
from distill_operator.launch.apierrors import api_message, kubernetes_errors
from distill_operator.launch.base import (
    DEPLOYMENT_MODE,
    JobObservation,
    JobSpec,
    JobState,
    secret_key_refs,
)

FIELD_MANAGER: Final = "distill-operator"
JOB_LABEL: Final = "distill.dev/job"
COMPONENT: Final = {"app.kubernetes.io/component": "router"}
SERVICE_PORT: Final = 80
PROGRESS_DEADLINE_SECONDS: Final = 600
DEFAULT_RESOURCES: Final[Mapping[str, Any]] = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"memory": "4Gi"},
}


@dataclass(frozen=True)
class RouterPod:
    """What the project's spec says of the router's pod."""

    image: str
    port: int
    resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))


def _labels(spec: JobSpec) -> dict[str, str]:
    return {
        **spec.labels,
        **COMPONENT,
        "app.kubernetes.io/name": "distill-router",
        "app.kubernetes.io/managed-by": "distill-operator",
        JOB_LABEL: spec.job_id,
    }


def _metadata(spec: JobSpec, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": spec.namespace, "labels": _labels(spec)}
    if spec.owner is not None:
        meta["ownerReferences"] = [spec.owner.reference()]
    return meta


def _env(spec: JobSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # The router advertises the pod's address in endpoint.json when it binds 0.0.0.0.
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOME", "value": "/tmp"},  # caches go to the one writable place
    ]
    env += [{"name": name, "value": value} for name, value in spec.env.items()]
    return env + secret_key_refs(spec)


def _probe(*, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def router_deployment(spec: JobSpec, pod: RouterPod) -> dict[str, Any]:
    """The Deployment of one router job: one replica, non-root, read-only root filesystem.

    Raises:
        LaunchError: the job id cannot name a Deployment's pods.
    """
    if len(spec.job_id) > naming.MAX_JOB_ID:
        raise LaunchError(f"job id {spec.job_id!r} is too long to name a Deployment")
    selector = {JOB_LABEL: spec.job_id}
    container = {
        "name": "router",
        "image": pod.image,
        "command": shlex.split(spec.entrypoint),
        "env": _env(spec),
        "ports": [{"name": "http", "containerPort": pod.port, "protocol": "TCP"}],
        # Loading the student and a local teacher can take minutes: the startup probe
        # gives it ten before liveness counts.
        "startupProbe": _probe(period=5, failures=120),
        "readinessProbe": _probe(period=5, failures=3),
        "livenessProbe": _probe(period=10, failures=6),
        "resources": dict(pod.resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, spec.job_id),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": _labels(spec)},
                "spec": {
                    "automountServiceAccountToken": False,  # the router never calls the API
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,  # the Ray images' user
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def router_service(spec: JobSpec) -> dict[str, Any]:
    """The project's router Service: a stable address over whichever router pods run."""
    project = spec.labels[naming.PROJECT_LABEL]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, naming.router_service(project))
        | {"labels": {naming.PROJECT_LABEL: project, **COMPONENT}},
        "spec": {
            "type": "ClusterIP",
            "selector": {naming.PROJECT_LABEL: project, **COMPONENT},
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def observe_deployment(deployment: Mapping[str, Any]) -> JobObservation:
    """A router Deployment's state, from what the deployment controller wrote."""
    name = deployment["metadata"]["name"]
    status = deployment.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("status") == "False":
        return JobObservation(name, JobState.FAILED, progressing.get("message") or "no progress")
    current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
    available = status.get("availableReplicas") or 0
    if current and available >= 1:
        return JobObservation(name, JobState.RUNNING, f"{available} replica available")
    failure = conditions.get("ReplicaFailure") or {}
    why = failure.get("message") if failure.get("status") == "True" else None
    return JobObservation(name, JobState.PENDING, why or "no replica available yet")


class DeploymentLauncher:
    """Runs the router as a Deployment (named by the job id) behind the project's Service.

    Args:
        api_client: A Kubernetes API client.
        pod: The router pod's image, port and resources, from the project's spec.
        request_timeout_s: Timeout of each call to the API server.
    """

    mode: str = DEPLOYMENT_MODE
    takes_secret_refs: bool = True

    def __init__(
        self, *, api_client: ApiClient, pod: RouterPod, request_timeout_s: float = 30.0
    ) -> None:
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._client = api_client
        self.pod = pod
        self.request_timeout_s = request_timeout_s

    def _as_dict(self, model: object) -> dict[str, Any]:
        return cast(dict[str, Any], self._client.sanitize_for_serialization(model))  # type: ignore[no-untyped-call]

    def observe(self, *, job_id: str, namespace: str) -> JobObservation | None:
        """The Deployment's state, or None when there is no Deployment named ``job_id``."""
        with kubernetes_errors(f"reading Deployment {namespace}/{job_id}"):
            try:
                found = self._apps.read_namespaced_deployment(
                    job_id, namespace, _request_timeout=self.request_timeout_s
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        return observe_deployment(self._as_dict(found))

    def submit(self, spec: JobSpec) -> JobObservation:
        """Apply the Service and create the Deployment unless it exists."""
        self._apply_service(spec)
        existing = self.observe(job_id=spec.job_id, namespace=spec.namespace)
        if existing is not None:
            return existing
        action = f"creating Deployment {spec.namespace}/{spec.job_id}"
        body = V1Deployment.from_dict(router_deployment(spec, self.pod))
        assert body is not None
        with kubernetes_errors(action):
            try:
                created = self._apps.create_namespaced_deployment(
                    spec.namespace,
                    body,
                    field_validation="Strict",
                    _request_timeout=self.request_timeout_s,
                )
            except ApiException as error:
                if error.status == 409:  # an earlier try created it: that one is ours
                    return self.observe(job_id=spec.job_id, namespace=spec.namespace) or (
                        JobObservation(spec.job_id, JobState.PENDING)
                    )
                if error.status in (400, 422):
                    raise LaunchError(f"{action}: rejected: {api_message(error)}") from error
                raise
        return observe_deployment(self._as_dict(created))

    def _apply_service(self, spec: JobSpec) -> None:
        service = router_service(spec)
        name = service["metadata"]["name"]
        action = f"applying Service {spec.namespace}/{name}"
        with kubernetes_errors(action):
            try:
                self._core.patch_namespaced_service(
                    name,
                    spec.namespace,
                    service,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type="application/apply-patch+yaml",  # server-side apply
                    _request_timeout=self.request_timeout_s,
                )
            except ApiException as error:
                if error.status in (400, 422):
                    raise LaunchError(f"{action}: rejected: {api_message(error)}") from error
                raise

    def stop(self, *, job_id: str, namespace: str) -> None:
        """Delete the Deployment (its pods go with it); no-op if it is gone."""
        with kubernetes_errors(f"deleting Deployment {namespace}/{job_id}"):
            try:
                self._apps.delete_namespaced_deployment(
                    job_id,
                    namespace,
                    propagation_policy="Background",
                    _request_timeout=self.request_timeout_s,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

    def delete_service(self, *, project: str, namespace: str) -> None:
        """Delete the project's router Service (the project is going); no-op if gone."""
        name = naming.router_service(project)
        with kubernetes_errors(f"deleting Service {namespace}/{name}"):
            try:
                self._core.delete_namespaced_service(
                    name, namespace, _request_timeout=self.request_timeout_s
                )
            except ApiException as error:
                if error.status != 404:
                    raise
