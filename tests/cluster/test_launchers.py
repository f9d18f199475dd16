"""The launchers against real components: the local Ray head, and a real kube-apiserver
serving KubeRay's own RayJob CRD (a stand-in plays the KubeRay operator)."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import config
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from ray.job_submission import JobSubmissionClient

from distill_operator.errors import LaunchError, UnreachableError
from distill_operator.launch.base import JobObservation, JobSpec, JobState, Launcher
from distill_operator.launch.rayjob import (
    GROUP,
    PLURAL,
    VERSION,
    RayJobLauncher,
    default_cluster_spec,
)
from distill_operator.launch.submit import SubmitLauncher
from kuberay_standin import Fault, KubeRayStandIn

from .projects import unused_loopback_port

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PRINT_HELLO = f"{sys.executable} -c \"import os; print('hello', os.environ['GREETING'])\""
EXIT_3 = f"{sys.executable} -c 'raise SystemExit(3)'"
SLEEP = "sleep 60"


@pytest.fixture(scope="module")
def job_numbers() -> Iterator[int]:
    return itertools.count(1)


@pytest.fixture
def job_id(run_id: str, job_numbers: Iterator[int]) -> str:
    """This test's job id, named with the run id: Ray's submission ids outlive namespaces."""
    return f"t{run_id}-launch-{next(job_numbers)}"


def wait_for(
    launcher: Launcher,
    *,
    job_id: str,
    namespace: str,
    until: set[JobState],
    timeout_s: float = 120.0,
) -> JobObservation:
    deadline = time.monotonic() + timeout_s
    observation = None
    while time.monotonic() < deadline:
        observation = launcher.observe(job_id=job_id, namespace=namespace)
        if observation is not None and observation.state in until:
            return observation
        time.sleep(0.3)
    raise AssertionError(f"{job_id} never reached {sorted(until)}; last seen: {observation}")


def submit_concurrently(launchers: list[Launcher], spec: JobSpec) -> list[JobObservation]:
    """Every launcher submits ``spec`` at once, as operators racing after a restart would."""
    start = threading.Barrier(len(launchers))

    def submit(launcher: Launcher) -> JobObservation:
        start.wait()
        return launcher.submit(spec)

    with ThreadPoolExecutor(max_workers=len(launchers)) as pool:
        return list(pool.map(submit, launchers))


# --- mode submit: the local Ray head ----------------------------------------------------


@pytest.fixture
def submit_launcher(ray_address: str) -> SubmitLauncher:
    return SubmitLauncher(address=ray_address)


def test_a_submitted_job_runs_on_ray_until_it_succeeds(
    submit_launcher: SubmitLauncher, ray_address: str, job_id: str
) -> None:
    spec = JobSpec(
        job_id=job_id,
        namespace="ns",
        entrypoint=PRINT_HELLO,
        labels={"distill.dev/stage": "teach"},
        env={"GREETING": "from-the-spec"},
    )
    submitted = submit_launcher.submit(spec)
    assert submitted.state in {JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED}
    assert submitted.dashboard == f"{ray_address.rstrip('/')}/#/jobs/{spec.job_id}"

    done = wait_for(submit_launcher, job_id=spec.job_id, namespace="ns", until={JobState.SUCCEEDED})
    ray = JobSubmissionClient(ray_address)
    assert "hello from-the-spec" in ray.get_job_logs(spec.job_id)
    assert ray.get_job_info(spec.job_id).metadata == spec.labels
    assert done.message


def test_submitting_the_same_job_id_twice_starts_one_job(
    submit_launcher: SubmitLauncher, ray_address: str, job_id: str
) -> None:
    spec = JobSpec(job_id=job_id, namespace="ns", entrypoint=PRINT_HELLO)
    first = submit_launcher.submit(spec)
    # A restarted operator has a fresh launcher: only Ray remembers the first submission.
    second = SubmitLauncher(address=ray_address).submit(spec)
    assert first.job_id == second.job_id == spec.job_id
    submissions = [job for job in JobSubmissionClient(ray_address).list_jobs()]
    assert [job.submission_id for job in submissions].count(spec.job_id) == 1


def test_racing_submissions_of_one_job_id_start_one_job_and_all_succeed(
    ray_address: str, job_id: str
) -> None:
    spec = JobSpec(job_id=job_id, namespace="ns", entrypoint=PRINT_HELLO)
    launchers: list[Launcher] = [SubmitLauncher(address=ray_address) for _ in range(4)]
    observations = submit_concurrently(launchers, spec)
    assert {observation.job_id for observation in observations} == {spec.job_id}
    submissions = JobSubmissionClient(ray_address).list_jobs()
    assert [job.submission_id for job in submissions].count(spec.job_id) == 1


def test_a_failing_entrypoint_ends_failed_with_rays_explanation(
    submit_launcher: SubmitLauncher, job_id: str
) -> None:
    spec = JobSpec(job_id=job_id, namespace="ns", entrypoint=EXIT_3)
    submit_launcher.submit(spec)
    failed = wait_for(submit_launcher, job_id=spec.job_id, namespace="ns", until={JobState.FAILED})
    assert "exit code 3" in failed.message


def test_stopping_a_running_job_ends_it_stopped(
    submit_launcher: SubmitLauncher, job_id: str
) -> None:
    spec = JobSpec(job_id=job_id, namespace="ns", entrypoint=SLEEP)
    submit_launcher.submit(spec)
    wait_for(submit_launcher, job_id=spec.job_id, namespace="ns", until={JobState.RUNNING})
    submit_launcher.stop(job_id=spec.job_id, namespace="ns")
    wait_for(submit_launcher, job_id=spec.job_id, namespace="ns", until={JobState.STOPPED})
    submit_launcher.stop(job_id=spec.job_id, namespace="ns")  # again: a no-op


def test_a_job_ray_never_saw_is_none_and_stopping_it_is_a_no_op(
    submit_launcher: SubmitLauncher, job_id: str
) -> None:
    assert submit_launcher.observe(job_id=job_id, namespace="ns") is None
    submit_launcher.stop(job_id=job_id, namespace="ns")


def test_an_unreachable_ray_is_a_transient_error(job_id: str) -> None:
    launcher = SubmitLauncher(address=f"http://127.0.0.1:{unused_loopback_port()}")
    spec = JobSpec(job_id=job_id, namespace="ns", entrypoint="true")
    with pytest.raises(UnreachableError):
        launcher.observe(job_id=spec.job_id, namespace="ns")
    with pytest.raises(UnreachableError):
        launcher.submit(spec)


def test_an_unreachable_api_server_is_a_transient_error(job_id: str) -> None:
    configuration = Configuration(host=f"https://127.0.0.1:{unused_loopback_port()}")
    configuration.retries = 0
    with ApiClient(configuration) as unreachable:
        launcher = RayJobLauncher(api_client=unreachable, template={})
        with pytest.raises(UnreachableError):
            launcher.observe(job_id=job_id, namespace="ns")


# --- mode rayjob: the real RayJob CRD on the real API server ----------------------------


@pytest.fixture
def api_client(kubeconfig: str) -> Iterator[ApiClient]:
    client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


@pytest.fixture
def rayjob_launcher(api_client: ApiClient, kuberay_crds: list[str]) -> RayJobLauncher:
    template = default_cluster_spec(image="rayproject/ray:2.60.0-py311-gpu", gpu_workers=1)
    return RayJobLauncher(api_client=api_client, template=template)


def read_rayjob(api_client: ApiClient, *, namespace: str, name: str) -> dict[str, Any]:
    rayjob = CustomObjectsApi(api_client).get_namespaced_custom_object(
        group=GROUP, version=VERSION, namespace=namespace, plural=PLURAL, name=name
    )
    return cast(dict[str, Any], rayjob)


def holds(stored: Any, sent: Any) -> bool:
    """Whether ``stored`` has everything ``sent`` had (plus, maybe, defaults)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            key in stored and holds(stored[key], value) for key, value in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(sent)
            and all(holds(a, b) for a, b in zip(stored, sent, strict=True))
        )
    return bool(stored == sent)


def rayjob_names(api_client: ApiClient, *, namespace: str) -> list[str]:
    listed = CustomObjectsApi(api_client).list_namespaced_custom_object(
        group=GROUP, version=VERSION, namespace=namespace, plural=PLURAL
    )
    return [item["metadata"]["name"] for item in cast(dict[str, Any], listed)["items"]]


def test_a_rayjob_from_the_default_template_passes_kuberays_schema_and_succeeds(
    rayjob_launcher: RayJobLauncher,
    standin: KubeRayStandIn,
    api_client: ApiClient,
    namespace: str,
    ray_address: str,
    job_id: str,
) -> None:
    spec = JobSpec(
        job_id=job_id,
        namespace=namespace,
        entrypoint=PRINT_HELLO,
        labels={"distill.dev/stage": "teach"},
        env={"GREETING": "via-runtime-env-yaml"},
        entrypoint_num_cpus=0.5,
    )
    rayjob_launcher.submit(spec)

    stored = read_rayjob(api_client, namespace=namespace, name=spec.job_id)
    # Accepted whole (strict validation refuses a field the schema lacks); the schema
    # only adds its defaults.
    assert holds(stored["spec"]["rayClusterSpec"], rayjob_launcher.template)
    assert stored["metadata"]["labels"] == spec.labels
    done = wait_for(
        rayjob_launcher, job_id=spec.job_id, namespace=namespace, until={JobState.SUCCEEDED}
    )
    assert done.dashboard == f"{ray_address.rstrip('/')}/#/jobs/{spec.job_id}"
    assert "hello via-runtime-env-yaml" in JobSubmissionClient(ray_address).get_job_logs(
        spec.job_id
    )


def test_a_template_field_kuberay_does_not_know_is_a_launch_error(
    api_client: ApiClient, kuberay_crds: list[str], namespace: str, job_id: str
) -> None:
    template = default_cluster_spec(image="rayproject/ray:2.60.0-py311", gpu_workers=0)
    template["headGroupSpec"]["rayStartParms"] = {}  # misspelt
    launcher = RayJobLauncher(api_client=api_client, template=template)
    spec = JobSpec(job_id=job_id, namespace=namespace, entrypoint="true")
    with pytest.raises(LaunchError, match="rayStartParms"):
        launcher.submit(spec)
    assert rayjob_names(api_client, namespace=namespace) == []


def test_a_failed_deployment_while_the_ray_job_still_runs_is_failed(
    rayjob_launcher: RayJobLauncher,
    standin: KubeRayStandIn,
    api_client: ApiClient,
    namespace: str,
    ray_address: str,
    job_id: str,
) -> None:
    spec = JobSpec(job_id=job_id, namespace=namespace, entrypoint=SLEEP)
    standin.faults[spec.job_id] = Fault.DEPLOYMENT_FAILED_WHILE_RUNNING
    rayjob_launcher.submit(spec)

    failed = wait_for(
        rayjob_launcher, job_id=spec.job_id, namespace=namespace, until={JobState.FAILED}
    )
    status = read_rayjob(api_client, namespace=namespace, name=spec.job_id)["status"]
    assert (status["jobDeploymentStatus"], status["jobStatus"]) == ("Failed", "RUNNING")
    assert "SubmissionFailed" in failed.message

    rayjob_launcher.stop(job_id=spec.job_id, namespace=namespace)
    ray = SubmitLauncher(address=ray_address)  # KubeRay's finalizer stops the Ray job
    wait_for(ray, job_id=spec.job_id, namespace=namespace, until={JobState.STOPPED})


def test_submitting_the_same_rayjob_twice_creates_one(
    api_client: ApiClient, kuberay_crds: list[str], namespace: str, job_id: str
) -> None:
    template = default_cluster_spec(image="rayproject/ray:2.60.0-py311")
    spec = JobSpec(job_id=job_id, namespace=namespace, entrypoint="true")
    first = RayJobLauncher(api_client=api_client, template=template).submit(spec)
    second = RayJobLauncher(api_client=api_client, template=template).submit(spec)
    assert first.job_id == second.job_id == spec.job_id
    assert rayjob_names(api_client, namespace=namespace) == [spec.job_id]
    RayJobLauncher(api_client=api_client, template=template).stop(
        job_id=spec.job_id, namespace=namespace
    )


def test_racing_creations_of_one_rayjob_create_one_and_all_succeed(
    api_client: ApiClient, kuberay_crds: list[str], namespace: str, job_id: str
) -> None:
    template = default_cluster_spec(image="rayproject/ray:2.60.0-py311")
    spec = JobSpec(job_id=job_id, namespace=namespace, entrypoint="true")
    launchers: list[Launcher] = [
        RayJobLauncher(api_client=api_client, template=template) for _ in range(4)
    ]
    observations = submit_concurrently(launchers, spec)
    assert {observation.job_id for observation in observations} == {spec.job_id}
    assert rayjob_names(api_client, namespace=namespace) == [spec.job_id]
    launchers[0].stop(job_id=spec.job_id, namespace=namespace)


def test_stopping_a_rayjob_deletes_it_and_stops_its_ray_job(
    rayjob_launcher: RayJobLauncher,
    standin: KubeRayStandIn,
    api_client: ApiClient,
    namespace: str,
    ray_address: str,
    job_id: str,
) -> None:
    spec = JobSpec(job_id=job_id, namespace=namespace, entrypoint=SLEEP)
    rayjob_launcher.submit(spec)
    wait_for(rayjob_launcher, job_id=spec.job_id, namespace=namespace, until={JobState.RUNNING})

    rayjob_launcher.stop(job_id=spec.job_id, namespace=namespace)
    assert rayjob_launcher.observe(job_id=spec.job_id, namespace=namespace) is None
    assert rayjob_names(api_client, namespace=namespace) == []
    ray = SubmitLauncher(address=ray_address)
    wait_for(ray, job_id=spec.job_id, namespace=namespace, until={JobState.STOPPED})
    rayjob_launcher.stop(job_id=spec.job_id, namespace=namespace)  # again: a no-op


def test_a_rayjobs_secrets_reach_its_pods_by_reference_only(
    rayjob_launcher: RayJobLauncher, api_client: ApiClient, namespace: str, job_id: str
) -> None:
    """KubeRay's schema takes secretKeyRef env on the head (the driver) and every worker;
    no value enters the RayJob, etcd, or Ray's runtime env."""
    spec = JobSpec(
        job_id=job_id,
        namespace=namespace,
        entrypoint=PRINT_HELLO,
        env={"GREETING": "plain"},
        secret_env=(("DISTILL_TEACHER_API_KEY", "teacher-key", "api-key"),),
    )
    assert rayjob_launcher.takes_secret_refs
    rayjob_launcher.submit(spec)

    stored = read_rayjob(api_client, namespace=namespace, name=spec.job_id)["spec"]
    cluster = stored["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    reference = {"secretKeyRef": {"name": "teacher-key", "key": "api-key"}}
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {entry["name"]: entry for entry in container["env"]}
            assert env["DISTILL_TEACHER_API_KEY"] == {
                "name": "DISTILL_TEACHER_API_KEY", "valueFrom": reference}  # fmt: skip
    assert "DISTILL_TEACHER_API_KEY" not in stored["runtimeEnvYAML"]
    assert "DISTILL_TEACHER_API_KEY" not in str(rayjob_launcher.template), "template unchanged"
