"""ray.secretDelivery cluster (issue #8): the Ray cluster's pods carry the teacher's key
themselves, so the operator reads and sends nothing, and a full run shows the key
nowhere, not even in Ray's job records. Its own module: the operator here is the only
one, on a Ray head of its own whose environment holds the key, as a RayCluster's
secretKeyRef env would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from ray.job_submission import JobSubmissionClient

from distill_jobs.contract import TEACHER_API_KEY_ENV
from distill_operator.devstack import DevStackSettings, RayHead

from .keyed_teacher import KeyedTeacher
from .projects import Projects, namespaced_operator, wait_for
from .test_secrets import (
    create_keyed_project,
    jobs_ray_has,
    key_needles,
    places_holding,
    ray_job_records,
    readable_places,
    teach_done_with_the_key,
)


@pytest.fixture
def keyed_ray_head(
    tmp_path: Path, devstack_settings: DevStackSettings, api_key: str
) -> Iterator[RayHead]:
    """A Ray cluster whose pods carry the key, as a RayCluster's secretKeyRef env does."""
    extra_env = {TEACHER_API_KEY_ENV: api_key}
    head = RayHead(state_dir=tmp_path / "ray", settings=devstack_settings, extra_env=extra_env)
    with head:
        yield head


def test_a_ray_cluster_that_carries_the_key_gets_it_from_nobody_and_shows_it_nowhere(
    custom: client.CustomObjectsApi,
    kubeconfig: str,
    namespace: str,
    keyed_teacher: KeyedTeacher,
    keyed_ray_head: RayHead,
    api_key: str,
    tmp_path: Path,
) -> None:
    """No Secret in the namespace at all: the project only names the one the cluster has."""
    operator = namespaced_operator(
        kubeconfig=kubeconfig,
        namespace=namespace,
        ray_address=keyed_ray_head.dashboard_url,
        state_dir=tmp_path / "operator",
    )
    projects = Projects(custom, namespace, (tmp_path / "artifacts").as_uri())
    ray_jobs = JobSubmissionClient(keyed_ray_head.dashboard_url)
    operator.start()
    try:
        create_keyed_project(
            projects,
            keyed_teacher,
            tmp_path / "traffic",
            **{"spec.ray.secretDelivery": "cluster", "spec.launch.router": {"platform": "ray"}},
        )
        ids = jobs_ray_has(teach_done_with_the_key(projects, keyed_teacher), ray_jobs)
        readable = {
            **readable_places(projects, operator, ray_jobs, ids),
            **ray_job_records(ray_jobs, ids),
        }
        assert places_holding(key_needles(api_key), readable) == []
        projects.delete("keyed")
        wait_for("the project to go", lambda: not projects.names())
    finally:
        operator.stop()
