"""The launchers' pure parts: KubeRay's two statuses folded into one, Ray's states mapped."""

from __future__ import annotations

import pytest
import yaml
from ray.job_submission import JobStatus

from distill_operator.__main__ import parse_args
from distill_operator.errors import LaunchError
from distill_operator.launch.base import (
    MAX_MESSAGE_CHARS,
    JobSpec,
    JobState,
    Owner,
    ray_job_dashboard,
    shorten_message,
)
from distill_operator.launch.deployment import observe_deployment
from distill_operator.launch.dry import DryLauncher
from distill_operator.launch.rayjob import (
    default_cluster_spec,
    fold_status,
    observe_rayjob,
    rayjob_manifest,
)
from distill_operator.launch.submit import RAY_JOB_STATES, job_state_from_ray
from distill_operator.reconciler import DRY_RUN_ENV, OperatorSettings, Runtime

ANY_JOB_STATUS = ("", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")

# The table in rayjob.py's docstring, one row per line.
FOLDING_TABLE = [
    *[("", job, JobState.PENDING) for job in ANY_JOB_STATUS],
    *[("Initializing", job, JobState.PENDING) for job in ANY_JOB_STATUS],
    *[("Waiting", job, JobState.PENDING) for job in ANY_JOB_STATUS],
    *[("Retrying", job, JobState.PENDING) for job in ANY_JOB_STATUS],
    *[("Suspending", job, JobState.PENDING) for job in ANY_JOB_STATUS],
    *[("Suspended", job, JobState.PENDING) for job in ANY_JOB_STATUS],
    ("Running", "", JobState.PENDING),
    ("Running", "PENDING", JobState.PENDING),
    ("Running", "RUNNING", JobState.RUNNING),
    ("Running", "SUCCEEDED", JobState.RUNNING),
    ("Running", "FAILED", JobState.RUNNING),
    ("Running", "STOPPED", JobState.RUNNING),
    ("Complete", "SUCCEEDED", JobState.SUCCEEDED),
    ("Complete", "STOPPED", JobState.STOPPED),
    ("Complete", "FAILED", JobState.FAILED),
    ("Complete", "RUNNING", JobState.FAILED),
    ("Complete", "PENDING", JobState.FAILED),
    ("Complete", "", JobState.FAILED),
    *[("Failed", job, JobState.FAILED) for job in ANY_JOB_STATUS],
    *[("ValidationFailed", job, JobState.FAILED) for job in ANY_JOB_STATUS],
    *[("SomethingNew", job, JobState.PENDING) for job in ANY_JOB_STATUS],
]


@pytest.mark.parametrize(("deployment", "job", "expected"), FOLDING_TABLE)
def test_the_two_kuberay_statuses_fold_as_the_table_says(
    deployment: str, job: str, expected: JobState
) -> None:
    state, _ = fold_status(deployment_status=deployment, job_status=job)
    assert state is expected


def test_deployment_failed_while_the_ray_job_runs_is_failed_with_kuberays_reason() -> None:
    state, message = fold_status(
        deployment_status="Failed",
        job_status="RUNNING",
        reason="SubmissionFailed",
        message="Job submission has failed. Reason: BackoffLimitExceeded.",
    )
    assert state is JobState.FAILED
    assert "SubmissionFailed" in message
    assert "BackoffLimitExceeded" in message
    assert "RUNNING" in message


def test_a_finished_ray_job_waits_for_kuberay_to_finish_the_rayjob() -> None:
    state, message = fold_status(deployment_status="Running", job_status="SUCCEEDED")
    assert state is JobState.RUNNING
    assert "waiting for KubeRay" in message


def test_only_succeeded_stopped_and_failed_are_terminal_verdicts() -> None:
    verdicts = {state for _, _, state in FOLDING_TABLE if state.is_terminal()}
    assert verdicts == {JobState.SUCCEEDED, JobState.STOPPED, JobState.FAILED}


@pytest.mark.parametrize(
    ("ray_status", "expected"),
    [
        ("PENDING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("SUCCEEDED", JobState.SUCCEEDED),
        ("FAILED", JobState.FAILED),
        ("STOPPED", JobState.STOPPED),
        ("SOMETHING_NEW", JobState.PENDING),
    ],
)
def test_ray_job_statuses_map_to_launcher_states(ray_status: str, expected: JobState) -> None:
    assert job_state_from_ray(ray_status) is expected


def test_every_status_ray_documents_is_mapped() -> None:
    assert {status.value for status in JobStatus} == set(RAY_JOB_STATES)
    assert all(job_state_from_ray(status) is RAY_JOB_STATES[status.value] for status in JobStatus)


def test_a_ray_job_links_to_its_dashboard_page() -> None:
    link = ray_job_dashboard(address="http://127.0.0.1:8265/", submission_id="dp-1-teach-a1")
    assert link == "http://127.0.0.1:8265/#/jobs/dp-1-teach-a1"


def test_a_rayjob_links_to_its_clusters_dashboard() -> None:
    rayjob = {
        "metadata": {"name": "dp-1-teach-a1"},
        "status": {
            "jobDeploymentStatus": "Running",
            "jobStatus": "RUNNING",
            "jobId": "dp-1-teach-a1",
            "dashboardURL": "dp-1-teach-a1-abcde-head-svc.ns.svc.cluster.local:8265",
        },
    }
    observation = observe_rayjob(rayjob)
    assert observation.state is JobState.RUNNING
    assert observation.dashboard == (
        "http://dp-1-teach-a1-abcde-head-svc.ns.svc.cluster.local:8265/#/jobs/dp-1-teach-a1"
    )


def test_a_rayjob_without_status_is_pending_and_has_no_dashboard() -> None:
    observation = observe_rayjob({"metadata": {"name": "dp-1-teach-a1"}})
    assert observation.state is JobState.PENDING
    assert observation.dashboard is None


def test_the_rayjob_carries_entrypoint_env_labels_and_cleanup() -> None:
    spec = JobSpec(
        job_id="dp-1-teach-a1",
        namespace="ns",
        entrypoint="python -m distill_jobs.teach",
        labels={"distill.dev/project": "p"},
        env={"STAGE": "Teach"},
        entrypoint_num_cpus=1.0,
        owner=Owner(name="p", uid="u-1"),
    )
    manifest = rayjob_manifest(
        spec=spec, cluster_spec=default_cluster_spec(image="ray:x"), ttl_seconds_after_finished=60
    )
    assert manifest["metadata"] == {
        "name": "dp-1-teach-a1",
        "namespace": "ns",
        "labels": spec.labels,
        # Collected with the project where a controller manager runs.
        "ownerReferences": [
            {
                "apiVersion": "distill.dev/v1alpha1",
                "kind": "DistillationProject",
                "name": "p",
                "uid": "u-1",
            }
        ],
    }
    rayjob = manifest["spec"]
    assert rayjob["jobId"] == "dp-1-teach-a1"
    assert rayjob["submissionMode"] == "K8sJobMode"
    assert rayjob["shutdownAfterJobFinishes"] is True
    assert rayjob["ttlSecondsAfterFinished"] == 60
    assert yaml.safe_load(rayjob["runtimeEnvYAML"]) == {"env_vars": {"STAGE": "Teach"}}
    assert rayjob["entrypointNumCpus"] == 1.0
    assert rayjob["metadata"] == spec.labels  # Ray's job metadata


def test_a_rayjob_names_its_secrets_on_every_ray_container_and_holds_no_value() -> None:
    template = default_cluster_spec(image="ray:x", gpu_workers=1)
    head = template["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = [{"name": "DISTILL_TEACHER_API_KEY", "value": "from-the-template"}]
    spec = JobSpec(
        job_id="dp-1-teach-a1",
        namespace="ns",
        entrypoint="python -m distill_jobs.teach",
        secret_env=(("DISTILL_TEACHER_API_KEY", "teacher-key", "api-key"),),
    )
    manifest = rayjob_manifest(spec=spec, cluster_spec=template, ttl_seconds_after_finished=60)
    cluster = manifest["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        assert [e for e in container["env"] if e["name"] == "DISTILL_TEACHER_API_KEY"] == [
            {
                "name": "DISTILL_TEACHER_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "teacher-key", "key": "api-key"}},
            }
        ]
    assert "runtimeEnvYAML" not in manifest["spec"]
    assert head["env"][0]["value"] == "from-the-template", "the template is not changed"


def test_the_default_cluster_has_a_gpu_worker_group_for_training() -> None:
    cluster = default_cluster_spec(image="ray:x", gpu_workers=2, gpus_per_worker=4)
    (group,) = cluster["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "workerGroupSpecs" not in default_cluster_spec(image="ray:x", gpu_workers=0)


@pytest.mark.parametrize("job_id", ["1-starts-with-digit", "Upper", "x" * 48, "dots.in.it"])
def test_a_job_id_kuberay_cannot_use_as_a_rayjob_name_is_a_launch_error(job_id: str) -> None:
    spec = JobSpec(job_id=job_id, namespace="ns", entrypoint="true")
    with pytest.raises(LaunchError, match="DNS-1035"):
        rayjob_manifest(spec=spec, cluster_spec={}, ttl_seconds_after_finished=0)


def test_a_long_ray_message_keeps_its_head_and_its_last_log_lines() -> None:
    message = "Job entrypoint command failed with exit code 1" + "x" * 20_000 + "ValueError: boom"
    short = shorten_message(message)
    assert len(short) == MAX_MESSAGE_CHARS
    assert short.startswith("Job entrypoint command failed")
    assert short.endswith("ValueError: boom")
    assert shorten_message("fine") == "fine"


def test_a_router_deployment_is_pending_until_available_on_its_generation() -> None:
    meta = {"name": "dp-1-launch-router-a0", "generation": 2}
    old = {"observedGeneration": 1, "availableReplicas": 1}  # the previous template's pod
    assert observe_deployment({"metadata": meta, "status": old}).state is JobState.PENDING
    quota = {"type": "ReplicaFailure", "status": "True", "message": 'pods "x" is forbidden'}
    blocked = observe_deployment({"metadata": meta, "status": {"conditions": [quota]}})
    assert (blocked.state, blocked.message) == (JobState.PENDING, 'pods "x" is forbidden')
    now = {"observedGeneration": 2, "availableReplicas": 1}
    assert observe_deployment({"metadata": meta, "status": now}).state is JobState.RUNNING


def test_a_dry_operator_records_every_modes_jobs_and_never_runs_them() -> None:
    runtime = Runtime(kube=None, settings=OperatorSettings(dry_run=True))  # type: ignore[arg-type]
    for mode in ("submit", "rayjob", "deployment"):
        launcher = runtime.launcher(None, mode)
        assert isinstance(launcher, DryLauncher) and launcher is runtime.launcher(None, mode)
        job = JobSpec(job_id="source-a0", namespace="team", entrypoint="python -m x")
        assert launcher.observe(job_id="source-a0", namespace="team") is None
        launcher.submit(job)
        seen = launcher.observe(job_id="source-a0", namespace="team")
        assert seen is not None and seen.state == JobState.PENDING and "dry run" in seen.message
        assert launcher.observe(job_id="source-a0", namespace="other") is None
        launcher.stop(job_id="source-a0", namespace="team")
        assert launcher.observe(job_id="source-a0", namespace="team") is None


def test_dry_run_is_read_from_the_environment_and_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DRY_RUN_ENV, raising=False)
    assert not OperatorSettings.from_env().dry_run
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    assert OperatorSettings.from_env().dry_run
    assert parse_args(["--dry-run"]).dry_run and not parse_args([]).dry_run
