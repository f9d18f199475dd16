"""kubectl, as built with the control plane (not whatever ``kubectl`` is on PATH)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from distill_operator.devstack.binaries import resolve_binaries
from distill_operator.devstack.errors import KubectlError
from distill_operator.devstack.procs import wait_until
from distill_operator.devstack.settings import DevStackSettings

_FIELD_MANAGER = "distill-devstack"


def kubectl(
    kubeconfig: Path | str,
    *args: str,
    check: bool = True,
    input: str | None = None,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the cluster of ``kubeconfig``.

    Args:
        kubeconfig: Path of the kubeconfig to use.
        *args: kubectl's arguments, e.g. ``"get", "ns"``.
        check: Raise when kubectl exits non-zero.
        input: Text for kubectl's stdin (``-f -``).
        timeout_s: Deadline; the settings' default when None.

    Returns:
        The finished process, stdout and stderr as text.

    Raises:
        KubectlError: ``check`` is set and kubectl failed; the message carries stderr.
    """
    binary = resolve_binaries().kubectl
    timeout = DevStackSettings().kubectl_timeout_s if timeout_s is None else timeout_s
    argv = [str(binary), "--kubeconfig", str(kubeconfig), *args]
    result = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise KubectlError(
            f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


def crd_files(crd_dir: Path) -> list[Path]:
    """The CRD manifests in ``crd_dir`` (``*.yaml``), sorted; empty when there are none."""
    return sorted(crd_dir.glob("*.yaml")) if crd_dir.is_dir() else []


def apply_crds(
    kubeconfig: Path | str, *, crd_dir: Path, settings: DevStackSettings | None = None
) -> list[str]:
    """Server-side apply every CRD in ``crd_dir`` and wait until each is Established.

    Server-side apply because large CRDs (KubeRay's) overflow client-side apply's
    last-applied annotation.

    Args:
        kubeconfig: The cluster.
        crd_dir: Directory of ``*.yaml`` CRD manifests.
        settings: Timings; defaults when None.

    Returns:
        The applied objects' names (``customresourcedefinition.apiextensions.k8s.io/...``);
        empty when the directory holds no manifests.

    Raises:
        KubectlError: Apply failed or a CRD did not become Established in time.
    """
    timings = settings or DevStackSettings()
    files = crd_files(crd_dir)
    if not files:
        return []
    file_args = [arg for path in files for arg in ("-f", str(path))]
    applied = kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={_FIELD_MANAGER}",
        "-o",
        "name",
        *file_args,
        timeout_s=timings.kubectl_timeout_s,
    )
    names = applied.stdout.split()
    # Creating a custom resource right after apply fails until the CRD is Established.
    # Polled here rather than with `kubectl wait`, which errors out instead of waiting
    # while a fresh CRD has no status.conditions yet.
    if not wait_until(
        lambda: _all_established(kubeconfig, names),
        timeout_s=timings.crd_established_timeout_s,
        poll_interval_s=timings.poll_interval_s,
    ):
        raise KubectlError(f"CRDs not Established after {timings.crd_established_timeout_s}s")
    return names


def _all_established(kubeconfig: Path | str, names: list[str]) -> bool:
    listed = kubectl(kubeconfig, "get", *names, "-o", "json", check=False)
    if listed.returncode != 0:
        return False
    document = json.loads(listed.stdout)
    items = document.get("items", []) if document.get("kind") == "List" else [document]
    return len(items) == len(names) and all(
        any(
            condition.get("type") == "Established" and condition.get("status") == "True"
            for condition in (item.get("status") or {}).get("conditions") or []
        )
        for item in items
    )
