"""Helpers of the cluster tests: waiting on the live API, reading projects."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from distill_operator import api
from distill_operator.devstack.operator_process import OperatorProcess
from manifests import example_manifest

WAIT_S = 90.0
RAY_IMAGE = "rayproject/ray:2.60.0-py311"


def unused_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def namespaced_operator(
    *, kubeconfig: str | Path, namespace: str, ray_address: str, state_dir: Path, **env: str
) -> OperatorProcess:
    """An operator of a test's own, watching that test's namespace alone (so no other
    test's operator or project is in its way), polling every second unless ``env`` says."""
    return OperatorProcess(
        kubeconfig=Path(kubeconfig),
        ray_address=ray_address,
        state_dir=state_dir,
        argv=(sys.executable, "-m", "distill_operator", "--namespace", namespace),
        extra_env={"DISTILL_POLL_SECONDS": "1", **env},
    )


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Projects:
    """Create and read DistillationProjects in one test's namespace."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, artifacts: str) -> None:
        self.custom, self.namespace, self.artifacts = custom, namespace, artifacts

    def create(self, name: str, **overrides: Any) -> dict[str, Any]:
        """The example project, with this test's artifact store and (unless overridden)
        traffic that does not exist, so its first job, Source's, fails fast: NoTraffic."""
        defaults = {
            "spec.artifacts.uri": self.artifacts,
            "spec.source.traffic": [f"{self.artifacts}/no-traffic/*.jsonl"],
        }
        manifest = example_manifest(name, **{**defaults, **overrides})
        return self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, manifest
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name
        )

    def names(self) -> list[str]:
        """The projects in the namespace, being deleted or not."""
        listed = self.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL
        )
        return [item["metadata"]["name"] for item in listed["items"]]

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status", {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = self.status(name).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind), {})

    def stage(self, name: str, stage: str) -> dict[str, Any]:
        stages = self.status(name).get("stages", [])
        return next((s for s in stages if s["name"] == stage), {})

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the project, as `kubectl patch --type merge` sends."""
        return self.custom.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name, patch
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.PLURAL, name
        )
