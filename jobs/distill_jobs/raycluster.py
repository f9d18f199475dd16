"""Joining Ray from a workload: the cluster that launched it, or a private local one.

Under a Ray job ``RAY_ADDRESS`` names the cluster. Run alone (``python -m``), a workload
starts an in-process cluster of its own (``address="local"``, never a stale
``ray_current_cluster`` file), with token auth off: Ray 2.60 turns token auth on for
later job submissions after a bare ``ray.init()`` writes ``~/.ray/auth_token``.
"""

from __future__ import annotations

import os

import ray


def connect(*, num_cpus: int | None = None) -> None:
    """``ray.init`` once, on the launching cluster if there is one."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
