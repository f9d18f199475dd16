"""A stand-in for the Deployment controller and the kubelet, for tests only: the test
ground has an API server but no kube-controller-manager, scheduler or container runtime.

It polls the Deployments of one namespace and gives each one with ``replicas != 0`` a
single "pod": a local process of its first container's ``command + args`` (``$(VAR)``
expanded as Kubernetes does; ``python``/``python3`` is this interpreter). The process
runs on this host's network and Python environment: it gets the test process's own
environment plus the container's ``env`` (``value``, ``fieldRef`` with the pod IP
127.0.0.1, ``secretKeyRef``). A missing Secret or key holds the pod in
``CreateContainerConfigError``, retried each poll. An exited process is restarted like
``restartPolicy: Always`` (back-off 1 s, 2 s, 4 s … 10 s); an ``httpGet`` readiness probe
is tried each poll. The Deployment's status is written through the status subresource
the way the Deployment controller writes it.

A new pod template replaces the process, the old one stopped first as with ``Recreate``
(both would want the same ports). A deleted or scaled-to-0 Deployment's process gets
SIGTERM, then SIGKILL after the template's grace period (at most 10 s). There are no
ReplicaSet or Pod objects, no images, resources, volumes, ``envFrom`` or liveness probes,
and never more than one replica.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 10.0
MAX_GRACE_S = 10.0
CONFIG_ERROR = "CreateContainerConfigError"
# The Deployment controller's words, by whether the minimum of replicas is available.
AVAILABLE = {
    True: ("MinimumReplicasAvailable", "Deployment has minimum availability."),
    False: ("MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
}
PROGRESSING = {
    True: ("NewReplicaSetAvailable", 'ReplicaSet "{}" has successfully progressed.'),
    False: ("ReplicaSetUpdated", 'ReplicaSet "{}" is progressing.'),
}
_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` → its value, ``$$`` → ``$``; an unknown ``$(VAR)`` stays as written."""
    return _REFERENCE.sub(lambda m: "$" if m[1] == "$" else env.get(m[2], m[0]), text)


class ConfigError(Exception):
    """The container cannot be set up yet: the kubelet's CreateContainerConfigError."""


@dataclass
class _Pod:
    name: str
    grace_s: float
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    not_before: float = 0.0  # monotonic time of the next start: the crash back-off
    waiting_reason: str | None = None
    waiting_message: str = ""


class KubeletStandIn:
    """Plays the Deployment controller and the kubelet for one namespace, on a thread."""

    def __init__(
        self, *, kubeconfig: str, namespace: str, poll_s: float = 0.2, log_dir: Path
    ) -> None:
        self.namespace, self.poll_s, self.log_dir = namespace, poll_s, log_dir
        client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self._apps, self._core = AppsV1Api(client), CoreV1Api(client)
        self._pods: dict[str, _Pod] = {}  # by Deployment name
        # Held while pods change, so running()'s exit cannot race a poll that overran.
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet-standin", daemon=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[KubeletStandIn]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stopping.set()
            self._thread.join(timeout=MAX_GRACE_S + 5)
            with self._lock:
                _terminate(list(self._pods.values()))
                self._pods.clear()

    def pid_of(self, name: str) -> int | None:
        pod = self._pods.get(name)
        process = pod.process if pod else None
        return process.pid if process and process.poll() is None else None

    def restarts(self, name: str) -> int:
        pod = self._pods.get(name)
        return max(pod.starts - 1, 0) if pod else 0

    def waiting_reason(self, name: str) -> str | None:
        pod = self._pods.get(name)
        return pod.waiting_reason if pod else None

    def log_of(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                # Raw JSON: camelCase keys, and times as stored, to compare with what we wrote.
                listed: Any = self._apps.list_namespaced_deployment(
                    self.namespace, _preload_content=False
                )
                deployments = {d["metadata"]["name"]: d for d in json.loads(listed.data)["items"]}
                with self._lock:
                    gone = [name for name in self._pods if name not in deployments]
                    _terminate([self._pods.pop(name) for name in gone])
                    for deployment in deployments.values():
                        self._reconcile(deployment)
            except Exception:  # a stand-in keeps going, like a controller's requeue
                log.exception("kubelet stand-in: reconcile failed")

    def _reconcile(self, deployment: Mapping[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        name, template = meta["name"], spec["template"]
        deleting = bool(meta.get("deletionTimestamp"))  # foreground deletion: no GC here
        wanted = spec.get("replicas", 1) != 0 and not deleting
        # Like a pod-template-hash: a new template makes a new pod, a scale does not.
        digest = hashlib.sha256(f"{meta['uid']}{json.dumps(template, sort_keys=True)}".encode())
        pod_name = f"{name}-standin-{digest.hexdigest()[:5]}"
        pod = self._pods.get(name)
        if pod and (not wanted or pod.name != pod_name):
            _terminate([self._pods.pop(name)])
            pod = None
        if wanted and pod is None:
            grace = template["spec"].get("terminationGracePeriodSeconds", 30)
            pod = self._pods[name] = _Pod(pod_name, grace_s=min(grace, MAX_GRACE_S))
        ready = pod is not None and self._keep_running(name, pod, template["spec"])
        if not deleting:
            self._write_status(deployment, pod_name, replicas=int(wanted), ready=ready)

    def _keep_running(self, name: str, pod: _Pod, pod_spec: Mapping[str, Any]) -> bool:
        """(Re)start the pod's process when due; whether it is ready."""
        container = pod_spec["containers"][0]
        if pod.process and pod.process.poll() is not None:
            backoff = min(2.0 ** (pod.starts - 1), MAX_BACKOFF_S)
            pod.process, pod.not_before = None, time.monotonic() + backoff
            pod.waiting_reason = "CrashLoopBackOff"
        if pod.process is None:
            if time.monotonic() < pod.not_before:
                return False
            try:
                env = self._env(pod, container)
                argv = [expand(a, env) for a in container.get("command", [])]
                argv += [expand(a, env) for a in container.get("args", [])]
                if not argv:
                    raise ConfigError("no command: the stand-in has no image entrypoint")
            except ConfigError as error:
                if (pod.waiting_reason, pod.waiting_message) != (CONFIG_ERROR, str(error)):
                    log.warning("kubelet stand-in: %s: %s: %s", pod.name, CONFIG_ERROR, error)
                pod.waiting_reason, pod.waiting_message = CONFIG_ERROR, str(error)
                return False
            if argv[0] in ("python", "python3"):
                argv[0] = sys.executable
            try:
                with (self.log_dir / f"{name}.log").open("ab") as out:
                    # Its own session, so stopping it reaches its children, as a container's.
                    pod.process = subprocess.Popen(
                        argv,
                        env=os.environ | env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as error:  # e.g. no such program: back off, as from a crash
                log.warning("kubelet stand-in: %s: RunContainerError: %s", pod.name, error)
                pod.waiting_reason = "RunContainerError"
                pod.not_before = time.monotonic() + MAX_BACKOFF_S
                return False
            pod.starts += 1
            pod.waiting_reason, pod.waiting_message = None, ""
        probe = container.get("readinessProbe", {}).get("httpGet")
        return probe is None or _http_ok(probe, container)

    def _env(self, pod: _Pod, container: Mapping[str, Any]) -> dict[str, str]:
        """The container's own env: all that ``$(VAR)`` may name, as in Kubernetes."""
        env: dict[str, str] = {}
        fields = {
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "metadata.name": pod.name,
            "metadata.namespace": self.namespace,
        }
        for var in container.get("env", []):
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = expand(var.get("value", ""), env)
            elif source.get("fieldRef", {}).get("fieldPath") in fields:
                env[var["name"]] = fields[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                value = self._secret_value(source["secretKeyRef"])
                if value is not None:
                    env[var["name"]] = value
            else:
                raise ConfigError(f"the stand-in cannot resolve {var['name']}: {source}")
        return env

    def _secret_value(self, ref: Mapping[str, Any]) -> str | None:
        """The key's value; None if it is missing but optional."""
        secret, key, optional = ref["name"], ref["key"], ref.get("optional", False)
        try:
            read: Any = self._core.read_namespaced_secret(
                secret, self.namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status != 404:
                raise
            if optional:
                return None
            raise ConfigError(f'secret "{secret}" not found') from None
        data = json.loads(read.data).get("data") or {}
        if key in data:
            return base64.b64decode(data[key]).decode()
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in Secret {self.namespace}/{secret}")

    def _write_status(
        self, deployment: Mapping[str, Any], pod_name: str, *, replicas: int, ready: bool
    ) -> None:
        current = deployment.get("status") or {}
        available = int(ready and replicas > 0)
        minimum = available >= replicas  # maxUnavailable 25% of one replica rounds down to 0
        (reason, message), (progress, progressed) = AVAILABLE[minimum], PROGRESSING[minimum]
        conditions = [
            _condition(current, "Available", minimum, reason, message),
            _condition(current, "Progressing", True, progress, progressed.format(pod_name)),
        ]
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": replicas - available,
            "conditions": conditions,
        }
        # The server drops zero counts (omitempty): an absent count reads as 0.
        if any(current.get(key, 0) != value for key, value in status.items()):
            # A merge patch replaces the conditions list whole; the client's default, a
            # strategic merge, would merge it by type.
            self._apps.patch_namespaced_deployment_status(
                deployment["metadata"]["name"],
                self.namespace,
                {"status": status},
                _content_type="application/merge-patch+json",
            )


def _condition(
    current: Mapping[str, Any], kind: str, true: bool, reason: str, message: str
) -> dict[str, str]:
    """The condition as the controller sets it: left alone while status and reason hold."""
    status = "True" if true else "False"
    old = next((c for c in current.get("conditions", []) if c["type"] == kind), None)
    if old and old["status"] == status and old["reason"] == reason:
        return dict(old)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    since = old["lastTransitionTime"] if old and old["status"] == status else now
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": since,
    }


def _http_ok(probe: Mapping[str, Any], container: Mapping[str, Any]) -> bool:
    port = probe["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
    # http.client, not urllib: no proxy from the environment, no redirects followed.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", probe.get("path", "/"))
        return 200 <= connection.getresponse().status < 400
    except OSError:
        return False
    finally:
        connection.close()


def _terminate(pods: list[_Pod]) -> None:
    """SIGTERM every pod's process group, then SIGKILL what outlives its grace period."""
    running = [(p.process, p.grace_s) for p in pods if p.process and p.process.poll() is None]
    for process, _ in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    start = time.monotonic()
    for process, grace_s in running:
        try:
            process.wait(timeout=max(0.0, start + grace_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
