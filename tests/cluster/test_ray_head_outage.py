"""The Ray head stopped during a stage (issue #8): the operator cannot ask about the
stage's job, says so in status, keeps the attempt's deadline (no silent wait), and when
the head is back it submits the attempt again and the stage succeeds. The head is this
test's own, so stopping it leaves the session's Ray alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from distill_operator.devstack import DevStackSettings, RayHead
from manifests import example_manifest

from .pipeline import LENIENT_BAR, seed_investigate_result, write_traffic
from .projects import Projects, namespaced_operator, wait_for
from .test_ray_faults import warnings

DEADLINE_S = 90  # well above a Source run on a busy two-core machine


@pytest.fixture
def own_ray_head(tmp_path: Path, devstack_settings: DevStackSettings) -> Iterator[RayHead]:
    with RayHead(state_dir=tmp_path / "ray", settings=devstack_settings) as head:
        yield head


@pytest.fixture
def own_operator(
    kubeconfig: str, namespace: str, own_ray_head: RayHead, tmp_path: Path
) -> Iterator[None]:
    process = namespaced_operator(
        kubeconfig=kubeconfig,
        namespace=namespace,
        ray_address=own_ray_head.dashboard_url,
        state_dir=tmp_path / "operator",
    )
    process.start()
    yield
    assert process.is_running(), "the operator exited while Ray was down"
    process.stop()


def test_a_stopped_ray_head_keeps_the_deadline_then_the_retry_succeeds(
    custom: client.CustomObjectsApi,
    namespace: str,
    kubeconfig: str,
    tmp_path: Path,
    own_ray_head: RayHead,
    own_operator: None,
) -> None:
    projects = Projects(custom, namespace, (tmp_path / "artifacts").as_uri())
    write_traffic(tmp_path / "traffic")
    overrides = {
        "spec.artifacts.uri": projects.artifacts,
        "spec.source.traffic": [(tmp_path / "traffic").as_uri() + "/*.jsonl"],
        "spec.source.criticalSlices": [{"name": "refund-fraud", "minCount": 20}],
        "spec.bar": LENIENT_BAR,
        "spec.policy": {"maxRetries": 1, "backoffSeconds": 1, "deadlineSeconds": DEADLINE_S},
    }
    seed_investigate_result(example_manifest("outage", **overrides), namespace)
    projects.create("outage", **overrides)
    wait_for(
        "Source's job to be submitted",
        lambda: (projects.stage("outage", "Source").get("job") or {}).get("submittedAt"),
    )
    own_ray_head.stop()

    def unknown() -> dict[str, str] | None:
        job: dict[str, str] = projects.stage("outage", "Source").get("job") or {}
        return job if job.get("state") == "Unknown" else None

    job = wait_for("the job's state to be Unknown", unknown, timeout_s=30)
    assert own_ray_head.dashboard_url.removeprefix("http://") in job["message"], job
    assert projects.stage("outage", "Source")["state"] == "Running"

    def deadline_passed() -> list[str]:
        return [w for w in warnings(kubeconfig, namespace) if w.startswith("DeadlineExceeded")]

    [warning] = wait_for("the deadline to end the attempt", deadline_passed, DEADLINE_S + 30)
    assert "could not be asked" in warning and "retry 1" in warning, warning
    source = projects.stage("outage", "Source")
    assert source["attempt"] == 1 and source["state"] == "Running", source

    own_ray_head.start()  # the same address, a new cluster: it has no job of ours
    source = wait_for(
        "Source to finish",
        lambda: (s := projects.stage("outage", "Source")).get("finishedAt") and s,
        timeout_s=180,
    )
    assert source["state"] == "Succeeded", (source["message"], source.get("job"))
    assert source["attempt"] == 1 and source["metrics"]["raw"] > 0
    projects.delete("outage")
    wait_for("the project to go", lambda: not projects.names())
