"""Fixtures of the cluster tests: API clients, the operator process, projects."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from ray.job_submission import JobSubmissionClient

from distill_jobs.tiny import build_tiny_model
from distill_operator.devstack.operator_process import OperatorProcess

from .keyed_teacher import KeyedTeacher
from .projects import Projects


@pytest.fixture(scope="module")
def custom(kubeconfig: str) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))


@pytest.fixture(scope="module")
def ray_jobs(ray_address: str) -> JobSubmissionClient:
    return JobSubmissionClient(ray_address)


@pytest.fixture(scope="module")
def operator(
    kubeconfig: str, ray_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        kubeconfig=Path(kubeconfig),
        ray_address=ray_address,
        state_dir=tmp_path_factory.mktemp("operator"),
        extra_env={"DISTILL_POLL_SECONDS": "1"},
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def artifacts(tmp_path: Path) -> str:
    return (tmp_path / "artifacts").as_uri()


@pytest.fixture
def projects(
    custom: client.CustomObjectsApi, namespace: str, artifacts: str, operator: OperatorProcess
) -> Projects:
    return Projects(custom, namespace, artifacts)


@pytest.fixture
def api_key() -> str:
    """A key no other text could contain by chance."""
    return f"sk-leakcheck-{secrets.token_hex(16)}"


@pytest.fixture
def keyed_teacher(tmp_path: Path, api_key: str) -> Iterator[KeyedTeacher]:
    model = build_tiny_model(directory=tmp_path / "teacher-model", seed=0)
    teacher = KeyedTeacher(model=model, key=api_key, log_path=tmp_path / "teacher.log")
    try:
        teacher.wait_until_serving()
        yield teacher
    finally:
        teacher.stop()
