"""The operator as a child process, so tests can stop, kill and restart it like a pod."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from distill_operator.devstack.errors import DevStackError
from distill_operator.devstack.procs import ManagedProcess, ProcessRecord
from distill_operator.devstack.ray_head import RAY_LOOPBACK_ENV
from distill_operator.devstack.settings import DevStackSettings

#: How the operator is started unless a test asks for another command.
OPERATOR_ARGV = (sys.executable, "-m", "distill_operator", "--all-namespaces")


def operator_env(
    *, kubeconfig: Path, ray_address: str, artifacts_uri: str, base: Mapping[str, str]
) -> dict[str, str]:
    """The operator's environment: ``base`` plus where its cluster, Ray and artifacts are.

    Args:
        kubeconfig: ``KUBECONFIG``.
        ray_address: ``DISTILL_RAY_ADDRESS``, the Ray dashboard URL.
        artifacts_uri: ``DISTILL_ARTIFACTS_URI``, the default artifact store.
        base: The environment passed through.
    """
    return {
        **base,
        **RAY_LOOPBACK_ENV,
        "KUBECONFIG": str(kubeconfig),
        "DISTILL_RAY_ADDRESS": ray_address,
        "DISTILL_ARTIFACTS_URI": artifacts_uri,
        # Log lines reach the file as they happen, not when a buffer fills.
        "PYTHONUNBUFFERED": "1",
    }


class OperatorProcess:
    """``python -m distill_operator --all-namespaces`` with its log in the state dir."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        ray_address: str,
        state_dir: Path,
        artifacts_uri: str | None = None,
        argv: Sequence[str] = OPERATOR_ARGV,
        extra_env: Mapping[str, str] | None = None,
        settings: DevStackSettings | None = None,
        fate_share: bool = True,
    ) -> None:
        """Describe the operator; nothing starts until :meth:`start`.

        Args:
            kubeconfig: The cluster it watches.
            ray_address: The Ray dashboard URL it submits jobs to.
            state_dir: Holds ``operator.log`` (appended to across restarts) and, by
                default, the artifact store.
            artifacts_uri: Default artifact store; ``file://<state_dir>/artifacts`` when None.
            argv: The command; tests may run a stand-in.
            extra_env: Added to (and overriding) the environment.
            settings: Timings; defaults when None.
            fate_share: Stop the operator when this process dies.
        """
        self.state_dir = state_dir
        self.settings = settings or DevStackSettings()
        self.log_path = state_dir / "operator.log"
        artifacts = artifacts_uri or (state_dir / "artifacts").resolve().as_uri()
        env = operator_env(
            kubeconfig=kubeconfig, ray_address=ray_address, artifacts_uri=artifacts, base=os.environ
        )
        self._process = ManagedProcess(
            name="operator",
            argv=argv,
            log_path=self.log_path,
            env={**env, **(extra_env or {})},
            fate_share=fate_share,
        )
        self._starts = 0

    @property
    def env(self) -> Mapping[str, str]:
        """The environment the operator runs with."""
        return self._process.env

    @property
    def record(self) -> ProcessRecord:
        """The running operator's record."""
        return self._process.record

    @property
    def pid(self) -> int:
        """The running operator's pid."""
        return self._process.record.pid

    def start(self) -> None:
        """Start the operator (a restart appends to the same log)."""
        self._starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(f"--- distill-devstack: operator start #{self._starts} ---\n")
        self._process.start()

    def is_running(self) -> bool:
        """Whether the operator runs."""
        return self._process.is_running()

    def exit_code(self) -> int | None:
        """Its exit status, or None while running."""
        return self._process.exit_code()

    def stop(self) -> None:
        """SIGTERM, wait for a graceful exit, SIGKILL after the grace.

        Raises:
            DevStackError: It survived SIGKILL.
        """
        survivors = self._process.stop(
            timeout_s=self.settings.stop_timeout_s, poll_interval_s=self.settings.poll_interval_s
        )
        if survivors:
            raise DevStackError(f"operator processes survived SIGKILL: {sorted(survivors)}")

    def kill(self) -> None:
        """SIGKILL at once, as a crash or an evicted pod would end it."""
        self._process.kill()

    def restart(self) -> None:
        """Stop gracefully, then start again."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Everything the operator logged, over all its starts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
