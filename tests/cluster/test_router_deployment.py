"""The router's Deployment launcher against a real kube-apiserver (apps/v1 and v1 schemas,
strict field validation). No controller manager runs here: the tests write a
Deployment's status the way the deployment controller does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import config
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from distill_operator.launch.base import JobSpec, JobState, Owner
from distill_operator.launch.deployment import DeploymentLauncher, RouterPod

pytestmark = pytest.mark.cluster

JOB = "dp-0a1b2c3d-launch-router-a0-12345678"
OWNER = Owner(name="intents", uid="5b0e8a54-1111-2222-3333-444455556666")
SECRET_VALUE = "sk-never-in-the-deployment"


@pytest.fixture
def api_client(kubeconfig: str) -> Iterator[ApiClient]:
    client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    yield client
    client.close()


@pytest.fixture
def launcher(api_client: ApiClient) -> DeploymentLauncher:
    return DeploymentLauncher(api_client=api_client, pod=RouterPod(image="jobs:1", port=8000))


def router_job(namespace: str) -> JobSpec:
    return JobSpec(
        job_id=JOB,
        namespace=namespace,
        entrypoint="python -m distill_jobs.serve --input file:///artifacts/launch/input.json",
        labels={
            "distill.dev/project": OWNER.name,
            "distill.dev/stage": "Launch",
            "distill.dev/candidate": "router",
        },
        owner=OWNER,
        secret_env=(("DISTILL_TEACHER_API_KEY", "teacher-key", "token"),),
    )


def as_dict(api_client: ApiClient, model: object) -> dict[str, Any]:
    return cast(dict[str, Any], api_client.sanitize_for_serialization(model))  # type: ignore[no-untyped-call]


def write_status(api_client: ApiClient, namespace: str, status: dict[str, Any]) -> None:
    AppsV1Api(api_client).patch_namespaced_deployment_status(JOB, namespace, {"status": status})


def test_the_router_becomes_an_owned_hardened_deployment_behind_the_projects_service(
    api_client: ApiClient, launcher: DeploymentLauncher, namespace: str
) -> None:
    seen = launcher.submit(router_job(namespace))
    assert seen.state == JobState.PENDING and seen.message == "no replica available yet"
    deployment = as_dict(
        api_client, AppsV1Api(api_client).read_namespaced_deployment(JOB, namespace)
    )
    service = as_dict(
        api_client, CoreV1Api(api_client).read_namespaced_service("intents-router", namespace)
    )
    for made in (deployment, service):
        [owner] = made["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "DistillationProject", OWNER.name, OWNER.uid)  # fmt: skip

    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["image"] == "jobs:1"
    assert container["command"] == [
        *("python", "-m", "distill_jobs.serve"),
        *("--input", "file:///artifacts/launch/input.json"),
    ]
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # The API key is a reference: its value is nowhere in the object.
    env = {item["name"]: item for item in container["env"]}
    assert env["DISTILL_TEACHER_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "teacher-key", "key": "token"}  # fmt: skip
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert SECRET_VALUE not in str(deployment)
    # Restricted Pod Security: non-root, no escalation, no capabilities, read-only root.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The Service reaches this pod (and any later router of the project) on port 80.
    selector = service["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_a_deployment_is_running_once_available_and_failed_when_it_stops_progressing(
    api_client: ApiClient, launcher: DeploymentLauncher, namespace: str
) -> None:
    launcher.submit(router_job(namespace))
    write_status(api_client, namespace, {"observedGeneration": 1, "replicas": 1,
                                         "availableReplicas": 1, "readyReplicas": 1})  # fmt: skip
    running = launcher.observe(job_id=JOB, namespace=namespace)
    assert running is not None and running.state == JobState.RUNNING

    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": f'ReplicaSet "{JOB}-7d9f" has timed out progressing.',
    }
    write_status(api_client, namespace, {"availableReplicas": 0, "conditions": [stuck]})
    failed = launcher.observe(job_id=JOB, namespace=namespace)
    assert failed is not None and failed.state == JobState.FAILED
    assert "has timed out progressing" in failed.message


def test_submitting_twice_creates_one_deployment_and_stop_deletes_it_once(
    api_client: ApiClient, launcher: DeploymentLauncher, namespace: str
) -> None:
    launcher.submit(router_job(namespace))
    launcher.submit(router_job(namespace))
    apps = AppsV1Api(api_client)
    assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items] == [JOB]
    launcher.stop(job_id=JOB, namespace=namespace)
    launcher.stop(job_id=JOB, namespace=namespace)  # already gone: no error
    assert launcher.observe(job_id=JOB, namespace=namespace) is None
    launcher.delete_service(project=OWNER.name, namespace=namespace)
    launcher.delete_service(project=OWNER.name, namespace=namespace)
    with pytest.raises(ApiException) as gone:
        CoreV1Api(api_client).read_namespaced_service("intents-router", namespace)
    assert gone.value.status == 404
