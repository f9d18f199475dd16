"""The local test ground: a control plane, a Ray head and the operator, on loopback.

``distill dev up`` / ``distill dev down`` call :func:`up` and :func:`down`; the test
suite's fixtures use :class:`ControlPlane`, :class:`RayHead` and
:class:`OperatorProcess` directly, one control plane and one Ray head per session.
Modules:

- ``settings``: versions, locations and timings.
- ``binaries``: kube-apiserver, etcd and kubectl from ``KUBEBUILDER_ASSETS`` or the cache.
- ``controlplane``: etcd + kube-apiserver, or the cluster ``KUBECONFIG`` names.
- ``kubectl``: the kubectl helper and CRD installation.
- ``ray_head``: a Ray head bound to 127.0.0.1 and stopped without touching others.
- ``operator_process``: the operator as a stoppable, killable child.
- ``stack``: the detached stack and its ``state.json``.
- ``procs``, ``probes``: process and HTTP plumbing.
"""

from distill_operator.devstack.binaries import (
    ControlPlaneBinaries,
    controlplane_cache_dir,
    resolve_binaries,
)
from distill_operator.devstack.controlplane import (
    Cluster,
    ControlPlane,
    ExistingCluster,
    cluster_from_environment,
    existing_kubeconfig,
)
from distill_operator.devstack.errors import (
    BinariesUnavailableError,
    DevStackError,
    KubectlError,
    StackStateError,
    StartupError,
)
from distill_operator.devstack.kubectl import apply_crds, crd_files, kubectl
from distill_operator.devstack.operator_process import OPERATOR_ARGV, OperatorProcess
from distill_operator.devstack.procs import ProcessRecord, is_running
from distill_operator.devstack.ray_head import RAY_LOOPBACK_ENV, RayHead, RayHeadRecord
from distill_operator.devstack.settings import (
    K8S_VERSION,
    DevStackSettings,
    default_state_dir,
    repo_root,
)
from distill_operator.devstack.stack import DevStackInfo, down, is_up, read_state, up

__all__ = [
    "K8S_VERSION",
    "OPERATOR_ARGV",
    "RAY_LOOPBACK_ENV",
    "BinariesUnavailableError",
    "Cluster",
    "ControlPlane",
    "ControlPlaneBinaries",
    "DevStackError",
    "DevStackInfo",
    "DevStackSettings",
    "ExistingCluster",
    "KubectlError",
    "OperatorProcess",
    "ProcessRecord",
    "RayHead",
    "RayHeadRecord",
    "StackStateError",
    "StartupError",
    "apply_crds",
    "cluster_from_environment",
    "controlplane_cache_dir",
    "crd_files",
    "default_state_dir",
    "down",
    "existing_kubeconfig",
    "is_running",
    "is_up",
    "kubectl",
    "read_state",
    "repo_root",
    "resolve_binaries",
    "up",
]
