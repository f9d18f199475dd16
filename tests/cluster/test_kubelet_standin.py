"""The kubelet stand-in against the real API server: later tests trust what it runs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import config
from kubernetes.client import AppsV1Api, CoreV1Api, V1Deployment, V1Secret

from kubelet_standin import KubeletStandIn

from .projects import unused_loopback_port, wait_for

WAIT_S = 30.0
# Records what the pod was given, then serves /healthz (and 404 elsewhere) on $PORT.
SCRIPT = """
import http.server, json, os, sys
with open(os.environ["OUT"], "w") as out:
    names = ("POD_IP", "POD_NAME", "TOKEN")
    json.dump({"env": {n: os.environ.get(n) for n in names}, "args": sys.argv[1:]}, out)
print("serving", flush=True)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""


@pytest.fixture
def apis(kubeconfig: str) -> tuple[AppsV1Api, CoreV1Api]:
    client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    return AppsV1Api(client), CoreV1Api(client)


def deployment(name: str, env: list[dict[str, Any]], port: int) -> V1Deployment:
    labels = {"app": name}
    container = {
        "name": "main",
        "image": "python:3.11",  # never pulled: the stand-in runs the command here
        "command": ["python", "-c", SCRIPT],
        "args": ["$(POD_IP)", "$$(POD_IP)", "$(NOT_SET)"],
        "env": [{"name": "PORT", "value": str(port)}, *env],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
    }
    made = V1Deployment.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
                },
            },
        }
    )
    assert made is not None
    return made


def create_secret(core: CoreV1Api, namespace: str, name: str, data: dict[str, str]) -> None:
    secret = V1Secret.from_dict({"metadata": {"name": name}, "stringData": data})
    assert secret is not None
    core.create_namespaced_secret(namespace, secret)


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def read(apps: AppsV1Api, name: str, namespace: str) -> dict[str, Any]:
    """The Deployment as raw JSON, as the stand-in reads it: camelCase, times as stored."""
    response: Any = apps.read_namespaced_deployment(name, namespace, _preload_content=False)
    return cast(dict[str, Any], json.loads(response.data))


def status(apps: AppsV1Api, name: str, namespace: str) -> dict[str, Any]:
    return cast(dict[str, Any], read(apps, name, namespace).get("status") or {})


def observed(apps: AppsV1Api, name: str, namespace: str, generation: int) -> dict[str, Any] | None:
    seen = status(apps, name, namespace)
    return seen if seen.get("observedGeneration") == generation else None


def is_available(
    apps: AppsV1Api, name: str, namespace: str, generation: int = 1
) -> dict[str, Any] | None:
    """The status once it reports generation ``generation`` available, else None."""
    seen = status(apps, name, namespace)
    conditions = {c["type"]: c for c in seen.get("conditions", [])}
    available = conditions.get("Available", {}).get("status") == "True"
    current = seen.get("observedGeneration", 0) >= generation
    return seen if available and current and seen.get("availableReplicas") == 1 else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_deployment_runs_restarts_and_stops_as_a_local_process(
    kubelet: KubeletStandIn,
    apis: tuple[AppsV1Api, CoreV1Api],
    namespace: str,
    tmp_path: Path,
) -> None:
    apps, core = apis
    create_secret(core, namespace, "api", {"token": "s3cret"})
    out = tmp_path / "seen.json"
    env = [
        {"name": "OUT", "value": str(out)},
        field_env("POD_IP", "status.podIP"),
        field_env("POD_NAME", "metadata.name"),
        secret_env("TOKEN", "api", "token"),
    ]
    apps.create_namespaced_deployment(namespace, deployment("web", env, unused_loopback_port()))

    seen = wait_for("web available", lambda: is_available(apps, "web", namespace), WAIT_S)
    conditions = {c["type"]: c for c in seen["conditions"]}
    assert (seen["observedGeneration"], seen["replicas"], seen["readyReplicas"]) == (1, 1, 1)
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    given = json.loads(out.read_text())
    pod = given["env"]["POD_NAME"]
    assert pod.startswith("web-standin-")
    assert (
        conditions["Progressing"]["message"] == f'ReplicaSet "{pod}" has successfully progressed.'
    )
    assert given["env"] == {"POD_IP": "127.0.0.1", "POD_NAME": pod, "TOKEN": "s3cret"}
    assert given["args"] == ["127.0.0.1", "$(POD_IP)", "$(NOT_SET)"]
    # Status is written only when it changes: a steady Deployment's resourceVersion holds.
    version = read(apps, "web", namespace)["metadata"]["resourceVersion"]
    time.sleep(1)
    assert read(apps, "web", namespace)["metadata"]["resourceVersion"] == version

    first = kubelet.pid_of("web")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for("web restarted", lambda: kubelet.restarts("web") == 1, WAIT_S)
    wait_for("web available again", lambda: is_available(apps, "web", namespace), WAIT_S)
    second = kubelet.pid_of("web")
    assert second is not None and second != first
    assert kubelet.log_of("web").count("serving") == 2  # one log across restarts

    apps.delete_namespaced_deployment("web", namespace)
    wait_for("web's process gone", lambda: not alive(second), WAIT_S)
    assert kubelet.pid_of("web") is None


def test_a_missing_secret_or_key_holds_the_pod_until_it_is_there(
    kubelet: KubeletStandIn,
    apis: tuple[AppsV1Api, CoreV1Api],
    namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    apps, core = apis
    out = tmp_path / "seen.json"
    env = [{"name": "OUT", "value": str(out)}, secret_env("TOKEN", "late", "token")]
    apps.create_namespaced_deployment(namespace, deployment("lost", env, unused_loopback_port()))

    reason = wait_for("a waiting reason", lambda: kubelet.waiting_reason("lost"), WAIT_S)
    assert reason == "CreateContainerConfigError"
    assert 'secret "late" not found' in caplog.text
    seen = wait_for("lost's status", lambda: status(apps, "lost", namespace), WAIT_S)
    conditions = {c["type"]: c for c in seen["conditions"]}
    assert conditions["Available"]["status"] == "False"
    assert conditions["Available"]["reason"] == "MinimumReplicasUnavailable"
    assert conditions["Progressing"]["reason"] == "ReplicaSetUpdated"
    assert seen.get("availableReplicas", 0) == 0 and seen["unavailableReplicas"] == 1
    assert kubelet.pid_of("lost") is None and kubelet.log_of("lost") == ""

    create_secret(core, namespace, "late", {"other": "x"})
    missing_key = f"couldn't find key token in Secret {namespace}/late"
    wait_for("the missing key reported", lambda: missing_key in caplog.text, WAIT_S)
    assert kubelet.waiting_reason("lost") == "CreateContainerConfigError"
    assert kubelet.pid_of("lost") is None and not out.exists()

    core.patch_namespaced_secret("late", namespace, {"stringData": {"token": "t0ken"}})
    wait_for("lost available", lambda: is_available(apps, "lost", namespace), WAIT_S)
    assert json.loads(out.read_text())["env"]["TOKEN"] == "t0ken"
    assert kubelet.waiting_reason("lost") is None and kubelet.restarts("lost") == 0


def test_a_new_template_replaces_the_pod_and_a_scale_to_zero_stops_it(
    kubelet: KubeletStandIn, apis: tuple[AppsV1Api, CoreV1Api], namespace: str, tmp_path: Path
) -> None:
    apps, _ = apis
    out = tmp_path / "seen.json"
    env = [{"name": "OUT", "value": str(out)}, field_env("POD_NAME", "metadata.name")]
    apps.create_namespaced_deployment(namespace, deployment("web", env, unused_loopback_port()))
    wait_for("web available", lambda: is_available(apps, "web", namespace), WAIT_S)
    first, first_pod = kubelet.pid_of("web"), json.loads(out.read_text())["env"]["POD_NAME"]
    assert first is not None

    template = {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}
    apps.patch_namespaced_deployment("web", namespace, template)
    wait_for("the old process gone", lambda: not alive(first), WAIT_S)
    seen = wait_for(
        "generation 2 available", lambda: is_available(apps, "web", namespace, 2), WAIT_S
    )
    second_pod = json.loads(out.read_text())["env"]["POD_NAME"]
    assert second_pod.startswith("web-standin-") and second_pod != first_pod
    assert f'"{second_pod}"' in {c["type"]: c for c in seen["conditions"]}["Progressing"]["message"]
    assert kubelet.restarts("web") == 0  # a new pod, not a restart

    second = kubelet.pid_of("web")
    assert second is not None
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_for("the process gone at 0 replicas", lambda: not alive(second), WAIT_S)
    scaled = wait_for("generation 3 observed", lambda: observed(apps, "web", namespace, 3), WAIT_S)
    assert scaled.get("replicas", 0) == 0 and scaled.get("unavailableReplicas", 0) == 0
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    wait_for("web back at 1", lambda: is_available(apps, "web", namespace, 4), WAIT_S)
    assert json.loads(out.read_text())["env"]["POD_NAME"] == second_pod  # a scale keeps it
