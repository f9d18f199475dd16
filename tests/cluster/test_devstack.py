"""The local test ground itself: control plane, Ray head, operator process, dev up/down."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import config
from kubernetes.client import CoreV1Api
from ray.job_submission import JobStatus, JobSubmissionClient

from distill_operator.devstack import (
    K8S_VERSION,
    Cluster,
    ControlPlane,
    DevStackSettings,
    OperatorProcess,
    RayHead,
    down,
    is_running,
    is_up,
    kubectl,
    read_state,
    up,
)
from distill_operator.devstack.procs import group_members, pid_alive

REPO = Path(__file__).resolve().parents[2]
JOB_DEADLINE_S = 180.0
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}


def wait_for_job(client: JobSubmissionClient, job_id: str, *, until: set[JobStatus]) -> JobStatus:
    """Poll a Ray job until it reaches one of ``until``; fail the test at the deadline."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    status = client.get_job_status(job_id)
    while status not in until:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {status} after {JOB_DEADLINE_S} s")
        time.sleep(0.3)
        status = client.get_job_status(job_id)
    return status


def listening_sockets() -> list[tuple[str, int, set[int]]]:
    """Every listening TCP socket as (host, port, pids holding it), from ``ss -ltnp``."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    sockets = []
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        sockets.append((host.strip("[]"), int(port), pids))
    return sockets


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as ss prints it) is a loopback address; ``*`` and ``0.0.0.0`` are not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# --- the control plane -----------------------------------------------------------------


def test_the_api_server_answers_readyz(kubeconfig: str) -> None:
    assert kubectl(kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"


def test_kubectl_version_reports_the_kubernetes_version_built_from_source(
    control_plane: Cluster, kubeconfig: str
) -> None:
    if not control_plane.is_local:
        pytest.skip("an existing cluster runs whatever version it runs")
    versions = json.loads(kubectl(kubeconfig, "version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == f"v{K8S_VERSION}"
    assert versions["clientVersion"]["gitVersion"] == f"v{K8S_VERSION}"


def test_the_python_client_trusts_the_kubeconfig_as_kopf_will(kubeconfig: str) -> None:
    api = CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    names = {item.metadata.name for item in api.list_namespace().items if item.metadata}
    assert "default" in names


def test_each_test_gets_a_fresh_namespace_named_for_the_run(
    namespace: str, run_id: str, kubeconfig: str
) -> None:
    assert re.fullmatch(rf"t-{run_id}-\d+", namespace)
    shown = json.loads(kubectl(kubeconfig, "get", "namespace", namespace, "-o", "json").stdout)
    assert shown["metadata"]["labels"]["distill.dev/test-run"] == run_id
    assert kubectl(kubeconfig, "get", "all", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_stopping_a_control_plane_leaves_no_process_behind(
    tmp_path: Path, devstack_settings: DevStackSettings
) -> None:
    second = ControlPlane(state_dir=tmp_path / "second", settings=devstack_settings)
    second.start()
    records = second.records()
    pids = set().union(*(group_members(record) for record in records))
    port = port_of(second.server)
    assert {record.name for record in records} == {"kube-apiserver", "etcd"}
    assert kubectl(second.kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"

    second.stop()

    assert not any(is_running(record) for record in records)
    assert not any(pid_alive(pid) for pid in pids)
    assert port not in {listening_port for _, listening_port, _ in listening_sockets()}


# --- the Ray head ----------------------------------------------------------------------


def test_every_ray_port_listens_on_loopback_only(ray_head: RayHead) -> None:
    ray_pids = ray_head.pids()
    ray_sockets = [(host, port) for host, port, pids in listening_sockets() if pids & ray_pids]

    ports = {port for _, port in ray_sockets}
    assert {port_of(ray_head.gcs_address), port_of(ray_head.dashboard_url)} <= ports
    assert [(host, port) for host, port in ray_sockets if not is_loopback(host)] == []


def test_a_job_that_exits_zero_succeeds_and_sees_a_loopback_node(
    ray_address: str, run_id: str
) -> None:
    client = JobSubmissionClient(ray_address)
    job_id = client.submit_job(
        submission_id=f"t-{run_id}-devstack-ok",
        entrypoint=(
            "python -c 'import ray; ray.init(); print(\"node\", ray.util.get_node_ip_address())'"
        ),
    )

    assert wait_for_job(client, job_id, until=TERMINAL) == JobStatus.SUCCEEDED
    assert "node 127.0.0.1" in client.get_job_logs(job_id)


def test_a_job_whose_command_fails_ends_failed(ray_address: str, run_id: str) -> None:
    client = JobSubmissionClient(ray_address)
    job_id = client.submit_job(
        submission_id=f"t-{run_id}-devstack-fail",
        entrypoint="python -c 'raise SystemExit(3)'",
    )

    assert wait_for_job(client, job_id, until=TERMINAL) == JobStatus.FAILED
    assert "exit code 3" in (client.get_job_info(job_id).message or "")


def test_stopping_a_ray_head_stops_its_jobs_and_leaves_other_heads_running(
    tmp_path: Path, devstack_settings: DevStackSettings, ray_head: RayHead
) -> None:
    session_pids = ray_head.pids()
    second = RayHead(state_dir=tmp_path / "second", settings=devstack_settings)
    second.start()
    client = JobSubmissionClient(second.dashboard_url)
    job_id = client.submit_job(entrypoint="sleep 600")
    wait_for_job(client, job_id, until={JobStatus.RUNNING})
    second_pids = second.pids()
    temp_dir = second.temp_dir

    second.stop()

    assert not any(pid_alive(pid) for pid in second_pids)
    assert not temp_dir.exists()
    assert ray_head.pids() >= {ray_head.record.leader.pid}
    assert session_pids & ray_head.pids()
    JobSubmissionClient(ray_head.dashboard_url).list_jobs()  # still answers


# --- the operator process --------------------------------------------------------------

STAND_IN = [
    sys.executable,
    "-c",
    "import os, time; "
    "print('watching', os.environ['KUBECONFIG'], os.environ['DISTILL_RAY_ADDRESS'], flush=True); "
    "time.sleep(600)",
]


def wait_for_lines(operator: OperatorProcess, text: str, *, count: int) -> None:
    """Wait until the operator's log holds ``text`` ``count`` times."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while operator.log_text().count(text) < count:
        assert time.monotonic() < deadline, operator.log_text()
        time.sleep(0.1)


def test_the_operator_process_can_be_killed_restarted_and_stopped(tmp_path: Path) -> None:
    operator = OperatorProcess(
        kubeconfig=tmp_path / "kubeconfig",
        ray_address="http://127.0.0.1:1",
        state_dir=tmp_path,
        argv=STAND_IN,
        settings=DevStackSettings(stop_timeout_s=5.0),
    )
    says = f"watching {tmp_path / 'kubeconfig'} http://127.0.0.1:1"
    operator.start()
    first = operator.pid
    wait_for_lines(operator, says, count=1)
    assert operator.env["DISTILL_ARTIFACTS_URI"] == (tmp_path / "artifacts").as_uri()

    operator.kill()
    assert not operator.is_running()
    operator.restart()
    assert operator.is_running() and operator.pid != first
    wait_for_lines(operator, says, count=2)
    operator.stop()

    assert not operator.is_running()
    assert operator.exit_code() == -15  # SIGTERM was enough


# --- distill dev up / down -------------------------------------------------------------


def test_dev_up_says_when_it_is_already_up_and_dev_down_stops_everything(
    tmp_path: Path, devstack_settings: DevStackSettings
) -> None:
    said: list[str] = []
    state_dir = tmp_path / "dev"
    info = up(state_dir, with_operator=False, settings=devstack_settings, echo=said.append)
    try:
        assert is_up(info)
        assert read_state(state_dir) == info
        assert f"export KUBECONFIG={info.kubeconfig}" in said[-1]
        assert kubectl(info.kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"

        again = up(state_dir, with_operator=False, settings=devstack_settings, echo=said.append)
        assert again == info
        assert "already up" in "\n".join(said)
    finally:
        assert down(state_dir, settings=devstack_settings, echo=said.append)

    assert not any(is_running(record) for record in info.processes())
    assert read_state(state_dir) is None
    assert not down(state_dir, settings=devstack_settings, echo=said.append)
