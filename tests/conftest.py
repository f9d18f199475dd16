"""Shared fixtures: one control plane and one Ray head per session, one namespace per test.

Nothing starts until a test asks for one of these fixtures, so ``tests/unit`` runs
without a cluster. With ``KUBECONFIG`` naming an existing cluster (kind, a dev stack
that is up) the tests use that cluster instead of starting one, as envtest suites do
with ``USE_EXISTING_CLUSTER``.
"""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill_operator.devstack import (
    Cluster,
    DevStackSettings,
    RayHead,
    apply_crds,
    cluster_from_environment,
    kubectl,
)
from distill_operator.launch.rayjob import KUBERAY_VERSION
from kubelet_standin import KubeletStandIn
from kuberay_standin import KubeRayStandIn

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"
CLUSTER_TESTS = Path(__file__).resolve().parent / "cluster"
# Asking for any of these makes a test a cluster test, wherever it lives.
CLUSTER_FIXTURES = frozenset(
    {"control_plane", "kubeconfig", "ray_head", "ray_address", "namespace"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/cluster, and tests using the cluster fixtures, ``cluster``."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(CLUSTER_TESTS) or fixtures & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def devstack_settings() -> DevStackSettings:
    """Timings and sizes of the session's control plane and Ray head."""
    return DevStackSettings()


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id of this test session: it names namespaces and Ray submission ids."""
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, devstack_settings: DevStackSettings
) -> Iterator[Cluster]:
    """The session's cluster, with the CRDs from ``crds/`` installed (if there are any)."""
    cluster = cluster_from_environment(
        state_dir=tmp_path_factory.mktemp("controlplane"), settings=devstack_settings
    )
    cluster.start()
    try:
        apply_crds(cluster.kubeconfig, crd_dir=CRD_DIR, settings=devstack_settings)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: Cluster) -> str:
    """Path of an admin kubeconfig for the session's cluster."""
    return str(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def ray_head(
    tmp_path_factory: pytest.TempPathFactory, devstack_settings: DevStackSettings
) -> Iterator[RayHead]:
    """The session's Ray head on 127.0.0.1."""
    head = RayHead(state_dir=tmp_path_factory.mktemp("ray"), settings=devstack_settings)
    head.start()
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="session")
def ray_address(ray_head: RayHead) -> str:
    """The Ray head's dashboard URL, for ``JobSubmissionClient`` and the operator."""
    return ray_head.dashboard_url


@pytest.fixture(scope="session")
def namespace_numbers() -> Iterator[int]:
    """Numbers for this session's namespaces, in order."""
    return itertools.count(1)


@pytest.fixture
def namespace(kubeconfig: str, run_id: str, namespace_numbers: Iterator[int]) -> Iterator[str]:
    """A fresh namespace ``t-<run id>-<n>``, deleted afterwards.

    Without kube-controller-manager a deleted namespace stays Terminating forever, so
    the delete is only issued, never waited for; a fresh name per test keeps tests apart.
    """
    name = f"t-{run_id}-{next(namespace_numbers)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"distill.dev/test-run": run_id}},
    }
    kubectl(kubeconfig, "create", "-f", "-", input=json.dumps(manifest))
    yield name
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def kuberay_crds(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """KubeRay's own RayJob and RayCluster CRDs, installed by server-side apply."""
    crd_dir = tmp_path_factory.mktemp("kuberay-crds")
    subprocess.run(
        [str(REPO / "hack" / "fetch-kuberay-crds.sh"), KUBERAY_VERSION, str(crd_dir)],
        check=True,
        timeout=600,
    )
    installed = apply_crds(kubeconfig, crd_dir=crd_dir)
    assert "customresourcedefinition.apiextensions.k8s.io/rayjobs.ray.io" in installed
    return installed


@pytest.fixture
def standin(
    kuberay_crds: list[str], kubeconfig: str, namespace: str, ray_address: str
) -> Iterator[KubeRayStandIn]:
    """The KubeRay stand-in, playing KubeRay's RayJob controller in the test's namespace."""
    with KubeRayStandIn(
        kubeconfig=str(kubeconfig), namespace=namespace, ray_address=ray_address
    ).running() as running:
        yield running


@pytest.fixture
def kubelet(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[KubeletStandIn]:
    """The kubelet stand-in: runs the test namespace's Deployments as local processes."""
    standin = KubeletStandIn(kubeconfig=kubeconfig, namespace=namespace, log_dir=tmp_path / "pods")
    with standin.running() as running:
        yield running
