"""A local Ray head on loopback, for job submission from the operator and the tests.

Two environment variables matter (see DESIGN.md, pitfalls): ``RAY_AUTH_MODE=disabled``
so a token some earlier ``ray.init()`` left in ``~/.ray`` does not turn job submission
into 401s, and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, without which Ray on Linux swaps
``--node-ip-address 127.0.0.1`` for the host's external address and binds on all
interfaces. Jobs inherit both from the head.

Stopping is scoped to this head. ``ray stop`` is not used: it stops every Ray cluster
of the user on the machine (other sessions' heads included). Instead the ``ray start
--block`` process gets SIGTERM and tears its node down in order (with Ray's 30 s drain
turned off), and then every process still carrying a marker variable that names this
head's temp dir is stopped: workers and job drivers live outside the head's process
group, so the group alone would miss them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel, ConfigDict

from distill_operator.devstack.errors import DevStackError, StartupError
from distill_operator.devstack.probes import http_get
from distill_operator.devstack.procs import (
    ManagedProcess,
    ProcessRecord,
    free_ports,
    group_members,
    is_running,
    pids_with_environ,
    stop_processes,
    wait_until,
)
from distill_operator.devstack.settings import DevStackSettings

#: Set in the environment of the head and so of everything it spawns; value: temp dir.
RAY_HEAD_MARKER_ENV = "DISTILL_RAY_HEAD"

#: Environment the head, its jobs and every Ray client of the dev stack need.
RAY_LOOPBACK_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class RayHeadRecord(BaseModel):
    """A running head as the dev stack's state file keeps it."""

    model_config = ConfigDict(frozen=True)

    leader: ProcessRecord
    temp_dir: Path
    dashboard_url: str
    gcs_address: str


def ray_head_processes(*, leader: ProcessRecord, temp_dir: Path) -> set[int]:
    """Live pids of one head: its ``ray start`` group plus everything carrying its marker."""
    return group_members(leader) | pids_with_environ(key=RAY_HEAD_MARKER_ENV, value=str(temp_dir))


def stop_ray_head(record: RayHeadRecord, *, settings: DevStackSettings) -> set[int]:
    """Stop one head's processes (and only its) and remove its temp dir.

    Returns:
        Pids that survived SIGKILL (empty on success).
    """
    # `ray start --block` tears its node down in order on SIGTERM; then sweep up what
    # lives outside its process group (workers, job drivers).
    stop_processes(
        lambda: {record.leader.pid} if is_running(record.leader) else set(),
        timeout_s=settings.stop_timeout_s,
        poll_interval_s=settings.poll_interval_s,
    )
    survivors = stop_processes(
        lambda: ray_head_processes(leader=record.leader, temp_dir=record.temp_dir),
        timeout_s=settings.stop_timeout_s,
        poll_interval_s=settings.poll_interval_s,
    )
    if not survivors:
        shutil.rmtree(record.temp_dir, ignore_errors=True)
    return survivors


class RayHead:
    """``ray start --head`` on 127.0.0.1 with free ports and a temp dir of its own."""

    def __init__(
        self,
        *,
        state_dir: Path,
        settings: DevStackSettings | None = None,
        fate_share: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the head; nothing starts until :meth:`start`.

        Args:
            state_dir: Where the head's console log goes. Ray's own logs go under its
                temp dir, which is kept short (see ``DevStackSettings.ray_temp_root``).
            settings: CPUs, memory and timings; defaults when None.
            fate_share: Stop the head when this process dies (tests); False keeps it
                running after it exits (``distill dev up``).
            extra_env: Set in the head's environment, which its jobs inherit, as a Ray
                pod's env (e.g. from a secretKeyRef) is seen by the jobs on that pod.
        """
        self.state_dir = state_dir
        self.settings = settings or DevStackSettings()
        self._fate_share = fate_share
        self._extra_env = dict(extra_env or {})
        self._process: ManagedProcess | None = None
        self._record: RayHeadRecord | None = None
        self._ports: tuple[int, ...] = ()

    @property
    def record(self) -> RayHeadRecord:
        """The running head's addresses and identity.

        Raises:
            RuntimeError: Not started.
        """
        if self._record is None:
            raise RuntimeError("the Ray head was not started")
        return self._record

    @property
    def dashboard_url(self) -> str:
        """``http://127.0.0.1:PORT``: the address for ``JobSubmissionClient``."""
        return self.record.dashboard_url

    @property
    def gcs_address(self) -> str:
        """``127.0.0.1:PORT``: the address for ``ray.init(address=...)``."""
        return self.record.gcs_address

    @property
    def temp_dir(self) -> Path:
        """Ray's session directory root (logs, sockets) of this head."""
        return self.record.temp_dir

    def pids(self) -> set[int]:
        """Live pids of every process of this head, jobs included."""
        return ray_head_processes(leader=self.record.leader, temp_dir=self.record.temp_dir)

    def start(self) -> None:
        """Start the head and wait until its job API answers and its node is alive.

        A start after :meth:`stop` takes the same ports: a Ray cluster that was down and
        came back, where its clients left it (its jobs are gone, as they would be).

        Raises:
            StartupError: It exited or did not become ready; the message ends with its log.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temp_dir = Path(tempfile.mkdtemp(prefix="distill-ray-", dir=self.settings.ray_temp_root))
        # A restart keeps the ports, so clients (the operator) find the head where it was.
        self._ports = self._ports or tuple(free_ports(4))
        gcs_port, dashboard_port, client_port, agent_port = self._ports
        bin_dir = Path(sys.executable).parent
        argv = [
            str(bin_dir / "ray"),
            "start",
            "--head",
            # Stay in the foreground: one pid to watch, and Ray reaps its group if it dies.
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--port={gcs_port}",
            f"--dashboard-port={dashboard_port}",
            # These two default to fixed ports (10001, 52365): a second head would clash.
            f"--ray-client-server-port={client_port}",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--temp-dir={temp_dir}",
            f"--num-cpus={self.settings.ray_num_cpus}",
            "--disable-usage-stats",
        ]
        if self.settings.ray_object_store_memory_bytes is not None:
            argv.append(f"--object-store-memory={self.settings.ray_object_store_memory_bytes}")
        env = {
            **os.environ,
            **self._extra_env,
            **RAY_LOOPBACK_ENV,
            RAY_HEAD_MARKER_ENV: str(temp_dir),
            # On SIGTERM, tear down at once instead of draining for up to 30 s: nothing
            # here serves traffic that draining would protect.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            # Job entrypoints say `python ...`: make that this environment's Python.
            "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        }
        self._process = ManagedProcess(
            name="ray-head",
            argv=argv,
            log_path=self.state_dir / "ray-head.log",
            env=env,
            fate_share=self._fate_share,
        )
        leader = self._process.start()
        self._record = RayHeadRecord(
            leader=leader,
            temp_dir=temp_dir,
            dashboard_url=f"http://127.0.0.1:{dashboard_port}",
            gcs_address=f"127.0.0.1:{gcs_port}",
        )
        try:
            self._wait_ready(self._process)
        except BaseException:
            self.stop()
            raise

    def _head_node_alive(self) -> bool:
        # The job API answers before the raylet registers; jobs need the node.
        answer = http_get(
            f"{self.dashboard_url}/api/v0/nodes", timeout_s=self.settings.probe_timeout_s
        )
        if answer is None or answer.status != 200:
            return False
        try:
            nodes = json.loads(answer.body)["data"]["result"]["result"]
        except (ValueError, KeyError, TypeError):
            return False
        return any(node.get("is_head_node") and node.get("state") == "ALIVE" for node in nodes)

    def _wait_ready(self, process: ManagedProcess) -> None:
        def ready() -> bool:
            if not process.is_running():
                return True  # stop polling; reported below
            jobs = http_get(
                f"{self.dashboard_url}/api/jobs/", timeout_s=self.settings.probe_timeout_s
            )
            return jobs is not None and jobs.status == 200 and self._head_node_alive()

        answered = wait_until(
            ready,
            timeout_s=self.settings.ray_start_timeout_s,
            poll_interval_s=self.settings.poll_interval_s,
        )
        if answered and process.is_running():
            return
        why = (
            f"exited with code {process.exit_code()}"
            if not process.is_running()
            else f"did not serve jobs at {self.dashboard_url} within "
            f"{self.settings.ray_start_timeout_s} s"
        )
        raise StartupError(
            f"the Ray head {why}; last lines of {process.log_path}:\n"
            f"{process.log_tail(lines=self.settings.log_tail_lines)}"
        )

    def stop(self) -> None:
        """Stop this head's processes, its jobs included, and remove its temp dir.

        Raises:
            DevStackError: A process survived SIGKILL.
        """
        if self._record is None:
            return
        survivors = stop_ray_head(self._record, settings=self.settings)
        if self._process is not None:
            self._process.is_running()  # reap the leader
        if survivors:
            raise DevStackError(f"Ray head processes survived SIGKILL: {sorted(survivors)}")

    def __enter__(self) -> RayHead:
        """Start on entering a ``with`` block."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop on leaving it."""
        self.stop()
