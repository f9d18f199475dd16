"""``distill dev up`` / ``distill dev down``: the whole stack, detached, with a state file.

``up`` starts a control plane (or uses the cluster ``KUBECONFIG`` names), a Ray head
and the operator, applies the CRDs, and writes ``state.json``; ``down`` reads it in a
later process and stops everything, tolerating processes that are already gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from distill_operator.devstack.controlplane import ControlPlane, cluster_from_environment
from distill_operator.devstack.errors import DevStackError, StackStateError
from distill_operator.devstack.kubectl import apply_crds
from distill_operator.devstack.operator_process import OperatorProcess
from distill_operator.devstack.procs import ProcessRecord, is_running, stop_recorded
from distill_operator.devstack.ray_head import RayHead, RayHeadRecord, stop_ray_head
from distill_operator.devstack.settings import DevStackSettings, default_state_dir, repo_root

STATE_FILE = "state.json"

Echo = Callable[[str], None]


class DevStackInfo(BaseModel):
    """A running dev stack, as ``state.json`` keeps it."""

    model_config = ConfigDict(frozen=True)

    state_dir: Path
    kubeconfig: Path
    existing_cluster: bool
    control_plane: list[ProcessRecord]
    ray: RayHeadRecord
    operator: ProcessRecord | None
    operator_log: Path | None
    crds: list[str]

    @property
    def dashboard_url(self) -> str:
        """The Ray dashboard (and job submission) URL."""
        return self.ray.dashboard_url

    def processes(self) -> list[ProcessRecord]:
        """Every recorded process, in stop order."""
        operator = [] if self.operator is None else [self.operator]
        return [*operator, self.ray.leader, *self.control_plane]

    def usage(self) -> str:
        """How to use the stack from a shell."""
        lines = [
            f"dev stack is up (state in {self.state_dir})",
            f"  export KUBECONFIG={self.kubeconfig}",
            f"  export RAY_ADDRESS={self.dashboard_url}   # ray job list, dashboard",
            "  kubectl get distillationprojects -A",
        ]
        if self.operator_log is not None:
            lines.append(f"  operator log: {self.operator_log}")
        lines.append("  stop it with: distill dev down")
        return "\n".join(lines)


def read_state(state_dir: Path) -> DevStackInfo | None:
    """The stack recorded in ``state_dir``, or None when there is none.

    Raises:
        StackStateError: The state file exists but cannot be read.
    """
    path = state_dir / STATE_FILE
    try:
        return DevStackInfo.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as error:
        raise StackStateError(f"cannot read {path}: {error}; remove it to start over") from error


def _write_state(info: DevStackInfo) -> None:
    path = info.state_dir / STATE_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(info.model_dump_json(indent=2))
    partial.replace(path)  # atomic: `down` never reads half a file


def is_up(info: DevStackInfo) -> bool:
    """Whether every recorded process still runs."""
    return all(is_running(record) for record in info.processes())


def _stop_recorded_stack(info: DevStackInfo, *, settings: DevStackSettings) -> set[int]:
    survivors: set[int] = set()
    if info.operator is not None:
        survivors |= stop_recorded(
            info.operator,
            timeout_s=settings.stop_timeout_s,
            poll_interval_s=settings.poll_interval_s,
        )
    survivors |= stop_ray_head(info.ray, settings=settings)
    for record in info.control_plane:  # kube-apiserver before etcd
        survivors |= stop_recorded(
            record, timeout_s=settings.stop_timeout_s, poll_interval_s=settings.poll_interval_s
        )
    return survivors


def _start_stack(
    state_dir: Path,
    *,
    with_operator: bool,
    settings: DevStackSettings,
    crd_dir: Path | None,
) -> DevStackInfo:
    # Detached (fate_share=False): the stack outlives the `distill dev up` process.
    cluster = cluster_from_environment(
        state_dir=state_dir / "controlplane", settings=settings, fate_share=False
    )
    ray_head = RayHead(state_dir=state_dir / "ray", settings=settings, fate_share=False)
    operator: OperatorProcess | None = None
    try:
        cluster.start()
        crds = [] if crd_dir is None else apply_crds(cluster.kubeconfig, crd_dir=crd_dir)
        ray_head.start()
        if with_operator:
            operator = OperatorProcess(
                kubeconfig=cluster.kubeconfig,
                ray_address=ray_head.dashboard_url,
                state_dir=state_dir,
                settings=settings,
                fate_share=False,
            )
            operator.start()
    except BaseException:
        # Leave nothing half-started behind; each stop tolerates what never started.
        stops = [ray_head.stop, cluster.stop]
        for stop in stops if operator is None else [operator.stop, *stops]:
            with contextlib.suppress(DevStackError):
                stop()
        raise
    return DevStackInfo(
        state_dir=state_dir,
        kubeconfig=cluster.kubeconfig,
        existing_cluster=not cluster.is_local,
        control_plane=cluster.records() if isinstance(cluster, ControlPlane) else [],
        ray=ray_head.record,
        operator=None if operator is None else operator.record,
        operator_log=None if operator is None else operator.log_path,
        crds=crds,
    )


def up(
    state_dir: Path | None = None,
    *,
    with_operator: bool = True,
    settings: DevStackSettings | None = None,
    crd_dir: Path | None = None,
    echo: Echo = print,
) -> DevStackInfo:
    """Start the dev stack, or report the one already up.

    Args:
        state_dir: Where state, logs and the kubeconfig go; ``~/.cache/distill-operator/dev``
            when None.
        with_operator: Also start the operator.
        settings: Timings and sizes; defaults when None.
        crd_dir: CRDs to apply; the checkout's ``crds/`` when None (skipped when this
            package runs outside its checkout).
        echo: Where to say what happened (``print`` for the CLI).

    Returns:
        The running stack.

    Raises:
        DevStackError: A component could not start (nothing is left running then).
    """
    directory = (state_dir or default_state_dir()).expanduser().resolve()
    timings = settings or DevStackSettings()
    current = read_state(directory)
    if current is not None:
        if is_up(current):
            echo("the dev stack is already up")
            echo(current.usage())
            return current
        echo(f"a previous dev stack in {directory} is partly gone; stopping what is left")
        _stop_recorded_stack(current, settings=timings)
        (directory / STATE_FILE).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    crds_from = crd_dir if crd_dir is not None else (None if root is None else root / "crds")
    info = _start_stack(directory, with_operator=with_operator, settings=timings, crd_dir=crds_from)
    _write_state(info)
    if not info.crds:
        echo(f"note: no CRDs applied (none in {crds_from})")
    echo(info.usage())
    return info


def down(
    state_dir: Path | None = None,
    *,
    settings: DevStackSettings | None = None,
    echo: Echo = print,
) -> bool:
    """Stop the dev stack recorded in ``state_dir``; processes already gone are fine.

    Args:
        state_dir: The stack's state directory; ``~/.cache/distill-operator/dev`` when None.
        settings: Timings; defaults when None.
        echo: Where to say what happened.

    Returns:
        True when a stack was recorded (and is now stopped), False when there was none.

    Raises:
        DevStackError: A process survived SIGKILL (the state file is kept then).
    """
    directory = (state_dir or default_state_dir()).expanduser().resolve()
    info = read_state(directory)
    if info is None:
        echo(f"no dev stack is up (no {directory / STATE_FILE})")
        return False
    survivors = _stop_recorded_stack(info, settings=settings or DevStackSettings())
    if survivors:
        raise DevStackError(f"dev stack processes survived SIGKILL: {sorted(survivors)}")
    (directory / STATE_FILE).unlink(missing_ok=True)
    echo(f"dev stack stopped (logs stay in {directory})")
    return True
