"""Faults the operator lives through (issue #8): its API server restarting under it, and
a project deleted while the operator itself is down. Real components only: a real
kube-apiserver and etcd, KubeRay's real RayJob CRD, the real operator process; projects
run in rayjob mode, so no Ray is needed (a RayJob is created and nothing runs it)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from distill_operator import naming
from distill_operator.devstack import ControlPlane, DevStackSettings, apply_crds, kubectl
from distill_operator.devstack.operator_process import OperatorProcess
from distill_operator.launch.rayjob import KUBERAY_VERSION

from .projects import RAY_IMAGE, Projects, namespaced_operator, wait_for

REPO = Path(__file__).resolve().parents[2]
RAYJOB = {"spec.ray.mode": "rayjob", "spec.ray.image": RAY_IMAGE, "spec.policy.maxRetries": 0}
OUTAGE_S = 5.0


@pytest.fixture
def own_control_plane(
    tmp_path: Path, devstack_settings: DevStackSettings
) -> Iterator[ControlPlane]:
    """A control plane of this test's own, with our CRDs and KubeRay's: restarting its
    API server leaves the session's shared one (and every other test) alone."""
    plane = ControlPlane(state_dir=tmp_path / "controlplane", settings=devstack_settings)
    with plane:
        apply_crds(plane.kubeconfig, crd_dir=REPO / "crds", settings=devstack_settings)
        kuberay_dir = tmp_path / "kuberay-crds"
        fetch = REPO / "hack" / "fetch-kuberay-crds.sh"
        subprocess.run([str(fetch), KUBERAY_VERSION, str(kuberay_dir)], check=True, timeout=600)
        apply_crds(plane.kubeconfig, crd_dir=kuberay_dir, settings=devstack_settings)
        yield plane


def rayjob_operator(kubeconfig: Path, namespace: str, state_dir: Path) -> OperatorProcess:
    """The operator watching one namespace; its Ray address is never used (rayjob mode)."""
    return namespaced_operator(
        kubeconfig=kubeconfig,
        namespace=namespace,
        ray_address="http://127.0.0.1:1",
        state_dir=state_dir,
    )


def create_namespace(kubeconfig: Path, name: str) -> str:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kubectl(kubeconfig, "create", "-f", "-", input=json.dumps(manifest))
    return name


def custom_api(kubeconfig: Path) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))


def rayjobs_of(custom: client.CustomObjectsApi, namespace: str, project: str) -> list[str]:
    """Names of the RayJobs labelled as the project's, from the live API."""
    listed = custom.list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayjobs", label_selector=f"{naming.PROJECT_LABEL}={project}"
    )
    return sorted(item["metadata"]["name"] for item in listed["items"])


def launched(custom: client.CustomObjectsApi, projects: Projects, name: str) -> str | None:
    """The name of the project's running Source RayJob once it exists: the operator saves
    the name in status first and creates the RayJob after, so both are checked."""
    stage = projects.stage(name, "Source")
    job: dict[str, Any] = stage.get("job") or {}
    if stage.get("state") != "Running" or not job.get("id"):
        return None
    return job["id"] if job["id"] in rayjobs_of(custom, projects.namespace, name) else None


def edit_seen(projects: Projects, name: str) -> bool:
    """Whether the operator has seen the project's latest spec. Mid-stage it is held
    for when the running stage ends (status.pendingGeneration, Reconciling:
    SpecChangePending); status.observedGeneration moves only then."""
    project = projects.get(name)
    generation = project["metadata"]["generation"]
    status = project.get("status", {})
    reconciling = projects.condition(name, "Reconciling")
    return bool(
        status.get("pendingGeneration") == generation
        and reconciling.get("observedGeneration") == generation
        and reconciling.get("reason") == "SpecChangePending"
    )


def test_restarted_apiserver_keeps_objects_and_answers_the_same_kubeconfig(
    own_control_plane: ControlPlane,
) -> None:
    create_namespace(own_control_plane.kubeconfig, "kept")
    server = own_control_plane.server

    own_control_plane.restart_apiserver(downtime_s=1.0)

    assert own_control_plane.server == server
    # Same port, serving certificate and token: the kubeconfig written at start still
    # verifies and authenticates, and etcd kept the namespace.
    kept = kubectl(own_control_plane.kubeconfig, "get", "namespace", "kept", "-o", "name")
    assert kept.stdout.strip() == "namespace/kept"


def test_operator_reconnects_after_an_apiserver_restart_and_catches_up(
    own_control_plane: ControlPlane, tmp_path: Path
) -> None:
    kubeconfig = own_control_plane.kubeconfig
    namespace = create_namespace(kubeconfig, "faults")
    operator = rayjob_operator(kubeconfig, namespace, tmp_path / "operator")
    operator.start()
    try:
        custom = custom_api(kubeconfig)
        projects = Projects(custom, namespace, (tmp_path / "artifacts").as_uri())
        projects.create("before", **RAYJOB)
        first_job = wait_for("before's Source RayJob", lambda: launched(custom, projects, "before"))
        assert rayjobs_of(custom, namespace, "before") == [first_job]

        own_control_plane.restart_apiserver(downtime_s=OUTAGE_S)

        # Changes made once it is back, while the operator's watch is still reconnecting.
        projects.create("after", **RAYJOB)
        projects.patch("before", {"spec": {"bar": {"threshold": 0.92}}})

        after_job = wait_for("after's Source RayJob", lambda: launched(custom, projects, "after"))
        wait_for("before's edit to be seen", lambda: edit_seen(projects, "before"))
        before_job = wait_for(
            "before's Source RayJob", lambda: launched(custom, projects, "before")
        )
        # Let a duplicate launch, if the catch-up made one, reach the API server.
        time.sleep(3)
        assert operator.is_running(), operator.log_text()
        assert rayjobs_of(custom, namespace, "after") == [after_job]
        assert rayjobs_of(custom, namespace, "before") == [before_job]
        assert before_job == first_job  # the edit left Source's input alone: no relaunch
    finally:
        operator.stop()


def test_project_deleted_while_the_operator_is_down_goes_once_it_is_back(
    kubeconfig: str, namespace: str, kuberay_crds: list[str], tmp_path: Path
) -> None:
    operator = rayjob_operator(Path(kubeconfig), namespace, tmp_path / "operator")
    operator.start()
    try:
        custom = custom_api(Path(kubeconfig))
        projects = Projects(custom, namespace, (tmp_path / "artifacts").as_uri())
        projects.create("orphaned", **RAYJOB)
        job = wait_for("its Source RayJob", lambda: launched(custom, projects, "orphaned"))
        assert rayjobs_of(custom, namespace, "orphaned") == [job]

        operator.stop()
        projects.delete("orphaned")
        # The finalizer holds it until an operator has stopped its job.
        time.sleep(2)
        held = projects.get("orphaned")
        assert held["metadata"]["deletionTimestamp"]
        assert "distill.dev/finalizer" in held["metadata"]["finalizers"]
        assert rayjobs_of(custom, namespace, "orphaned") == [job]

        operator.start()
        wait_for("the project to go", lambda: not project_exists(projects, "orphaned"))
        assert rayjobs_of(custom, namespace, "orphaned") == []
    finally:
        operator.stop()


def project_exists(projects: Projects, name: str) -> bool:
    try:
        projects.get(name)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
