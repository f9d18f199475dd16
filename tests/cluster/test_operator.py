"""The real operator against the real API server and a real local Ray head."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from ray.job_submission import JobStatus, JobSubmissionClient

from distill_operator import api
from distill_operator.devstack import DevStackSettings, kubectl
from distill_operator.devstack.operator_process import OperatorProcess
from kuberay_standin import Fault, KubeRayStandIn
from manifests import REFUSED, BadManifest, example_manifest

from .projects import RAY_IMAGE, Projects, wait_for


def test_kubectl_explain_shows_the_descriptions_written_for_users(kubeconfig: str) -> None:
    def explain(field: str) -> str:
        # The API server publishes a new CRD's OpenAPI a few seconds after Established.
        return wait_for(
            f"kubectl explain {field}",
            lambda: kubectl(kubeconfig, "explain", field, check=False).stdout,
            timeout_s=30,
        )

    assert "Minimum metric value (0 to 1) a student must reach." in explain("dp.spec.bar.threshold")
    assert "Secret holding the API key" in explain("distill.spec.teacher.apiKeySecretRef")


@pytest.mark.parametrize("bad", REFUSED, ids=lambda b: b.id)
def test_the_api_server_refuses_each_bad_manifest_naming_the_field(
    bad: BadManifest, custom: client.CustomObjectsApi, namespace: str
) -> None:
    manifest = example_manifest(f"bad-{bad.id}", **bad.overrides)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
        )
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert bad.field in message and bad.words in message, message


OPERATOR_SIDE = [
    pytest.param(
        {"spec.task": "Classify tickets. Then summarise each one."},
        "TaskNotOneSentence", "spec.task", id="task-of-two-sentences",
    ),
    pytest.param(
        {"spec.teacher.backend": "anthropic", "spec.teacher.model": "claude",
         "spec.teacher.apiKeySecretRef": {"name": "no-such-secret", "key": "api-key"},
         "spec.investigate.alternatives": [
             {"name": "terse", "kind": "prompt_variant", "prompt": "Label only."}]},
        "SecretNotFound", "no-such-secret/api-key", id="secret-that-does-not-exist",
    ),
    pytest.param(
        {"spec.launch.steps": [{"mode": "canary", "percent": 50},
                               {"mode": "canary", "percent": 5}]},
        "InvalidRollout", "spec.launch.steps", id="rollout-that-shrinks",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "reason", "words"), OPERATOR_SIDE)
def test_mistakes_only_the_operator_can_see_land_as_stalled_with_reason_and_message(
    projects: Projects,
    operator: OperatorProcess,
    overrides: dict[str, Any],
    reason: str,
    words: str,
) -> None:
    projects.create("stalls", **overrides)
    stalled = wait_for(
        f"Stalled={reason}",
        lambda: (c := projects.condition("stalls", "Stalled")).get("reason") == reason and c,
    )
    assert stalled["status"] == "True" and words in stalled["message"]
    assert projects.condition("stalls", "Ready")["status"] == "False"
    assert not projects.stage("stalls", "Source").get("job"), "nothing was launched"
    assert operator.is_running(), "the operator never crashes on bad input"


def test_the_example_passes_define_and_runs_the_next_stage_as_a_real_ray_job(
    projects: Projects, ray_jobs: JobSubmissionClient
) -> None:
    created = projects.create("example")
    source = wait_for(
        "Source to finish",
        lambda: (s := projects.stage("example", "Source")).get("finishedAt") and s,
    )
    status = projects.status("example")
    assert status["observedGeneration"] == created["metadata"]["generation"]
    define = projects.stage("example", "Define")
    assert define["state"] == "Succeeded"
    task_defined = projects.condition("example", "TaskDefined")
    assert task_defined["status"] == "True"
    assert "exact_match >= 0.9, p95 <= 50 ms" in task_defined["message"]
    # The next stage ran as a real Ray job under the id saved in status, and its workload
    # said why it cannot pass (the traffic it was pointed at does not exist).
    job_id = source["job"]["id"]
    # Its result is written (and read) just before Ray sees the job end.
    wait_for("the job to end", lambda: ray_jobs.get_job_status(job_id).is_terminal(), 60)
    assert ray_jobs.get_job_status(job_id) == JobStatus.SUCCEEDED
    assert "distill_jobs.source" in ray_jobs.get_job_info(job_id).entrypoint
    assert source["state"] == "Failed" and source["reason"] == "NoTraffic"
    with fsspec.open(source["resultUri"]) as handle:
        assert json.load(handle)["exitConditionMet"] is False
    assert status["phase"] == "Failed"
    assert projects.condition("example", "Stalled")["message"].startswith("Source failed")


def test_kubectl_get_shows_the_columns_and_describe_shows_the_events(
    projects: Projects, kubeconfig: str, namespace: str
) -> None:
    projects.create("columns")
    wait_for("a finished Source", lambda: projects.stage("columns", "Source").get("finishedAt"))
    table = kubectl(kubeconfig, "get", "dp", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "STAGE", "PHASE", "STUDENT", "SCORE", "AGE"]
    assert table[1].split()[:3] == ["columns", "Source", "Failed"]
    described = wait_for(
        "events in describe",
        lambda: (
            (out := kubectl(kubeconfig, "describe", "distill", "columns", "-n", namespace).stdout)
            and "NoTraffic" in out
            and out
        ),
    )
    for reason in ("TaskDefined", "JobSubmitted", "NoTraffic"):
        assert reason in described.split("Events:")[1]


@pytest.fixture
def ray_busy(
    ray_jobs: JobSubmissionClient, devstack_settings: DevStackSettings
) -> Iterator[Callable[[], None]]:
    """Hold every CPU of the Ray head so that new stage jobs wait as PENDING."""
    cpus = devstack_settings.ray_num_cpus
    blocker = ray_jobs.submit_job(entrypoint="sleep 600", entrypoint_num_cpus=cpus)
    wait_for("the blocker to run", lambda: ray_jobs.get_job_status(blocker) == JobStatus.RUNNING)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            ray_jobs.stop_job(blocker)
            released = True

    yield release
    release()


def _jobs_named_like(ray_jobs: JobSubmissionClient, prefix: str) -> list[str]:
    return [
        j.submission_id for j in ray_jobs.list_jobs() if (j.submission_id or "").startswith(prefix)
    ]


def test_restarting_the_operator_while_a_stage_job_waits_submits_no_second_job(
    projects: Projects,
    operator: OperatorProcess,
    ray_jobs: JobSubmissionClient,
    ray_busy: Callable[[], None],
) -> None:
    created = projects.create("restart")
    prefix = f"dp-{created['metadata']['uid'].replace('-', '')[:8]}-source-"
    job = wait_for(
        "the Source job to be submitted and waiting",
        lambda: (
            (j := projects.stage("restart", "Source").get("job", {})).get("state") == "Pending"
            and j
        ),
    )
    assert ray_jobs.get_job_status(job["id"]) == JobStatus.PENDING
    operator.kill()
    operator.start()
    time.sleep(5)  # several passes of the restarted operator while the job still waits
    assert _jobs_named_like(ray_jobs, prefix) == [job["id"]]
    ray_busy()
    wait_for("Source to finish", lambda: projects.stage("restart", "Source").get("finishedAt"))
    assert _jobs_named_like(ray_jobs, prefix) == [job["id"]], "exactly one job for the stage"
    assert projects.stage("restart", "Source")["job"]["id"] == job["id"]


def test_deleting_a_project_stops_its_running_job(
    projects: Projects, ray_jobs: JobSubmissionClient, ray_busy: Callable[[], None]
) -> None:
    projects.create("deleted")
    stage = wait_for(
        "a waiting Source job",
        lambda: (
            (s := projects.stage("deleted", "Source")).get("job", {}).get("state") == "Pending"
            and s
        ),
    )
    projects.delete("deleted")

    def gone() -> bool:
        try:
            projects.get("deleted")
        except ApiException as error:
            return error.status == 404
        return False

    wait_for("the project to be gone", gone)
    # Ray carries out a stop once the job's supervisor gets a CPU: free the cluster.
    ray_busy()
    job_id = stage["job"]["id"]
    wait_for("its job to stop", lambda: ray_jobs.get_job_status(job_id) == JobStatus.STOPPED)
    # Whether the entrypoint got to run before the stop took effect is Ray's race (its
    # supervisor starts once a CPU frees), not the operator's: the job ends STOPPED.


def test_a_spec_edit_is_observed_and_reruns_from_define(
    projects: Projects, custom: client.CustomObjectsApi, namespace: str
) -> None:
    projects.create("edited")
    wait_for("Source to finish", lambda: projects.stage("edited", "Source").get("finishedAt"))
    first = projects.stage("edited", "Source")
    patch = {"spec": {"source": {"heldOutFraction": 0.25}}}  # an edit Source reads
    edited = custom.patch_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "edited", patch
    )
    generation = edited["metadata"]["generation"]
    wait_for(
        "the new generation",
        lambda: projects.status("edited").get("observedGeneration") == generation,
    )
    wait_for(
        "Source to finish again",
        lambda: (
            (s := projects.stage("edited", "Source")).get("finishedAt")
            and s.get("inputHash") != first["inputHash"]
        ),
    )
    conditions = projects.status("edited")["conditions"]
    assert all(c["observedGeneration"] == generation for c in conditions)


def test_a_project_in_rayjob_mode_runs_its_stage_as_a_kuberay_rayjob(
    projects: Projects, standin: KubeRayStandIn, custom: client.CustomObjectsApi, namespace: str
) -> None:
    projects.create("kuberay", **{"spec.ray.mode": "rayjob", "spec.ray.image": RAY_IMAGE})
    stage = wait_for(
        "Source to finish",
        lambda: (s := projects.stage("kuberay", "Source")).get("finishedAt") and s,
    )
    assert stage["job"]["mode"] == "rayjob"

    def rayjob() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "ray.io", "v1", namespace, "rayjobs", stage["job"]["id"]
        )

    # The result can be read before KubeRay marks the RayJob Complete: its job writes the
    # result as its last step, then exits.
    done = wait_for(
        "the RayJob to complete",
        lambda: (r := rayjob())["status"].get("jobDeploymentStatus") == "Complete" and r,
    )
    assert done["spec"]["entrypoint"].startswith("python -m distill_jobs.source --input ")
    assert done["status"]["jobStatus"] == "SUCCEEDED"
    assert stage["reason"] == "NoTraffic", "the workload's own verdict decides"


def test_a_rayjob_whose_deployment_failed_while_ray_still_waits_fails_and_is_stopped(
    projects: Projects,
    standin: KubeRayStandIn,
    ray_jobs: JobSubmissionClient,
    ray_busy: Callable[[], None],
) -> None:
    """KubeRay's two statuses disagree: the deployment failed, Ray still has the job."""
    standin.default_fault = Fault.DEPLOYMENT_FAILED
    projects.create(
        "kuberay-fails",
        **{"spec.ray.mode": "rayjob", "spec.ray.image": RAY_IMAGE, "spec.policy.maxRetries": 0},
    )
    stage = wait_for(
        "Source to fail",
        lambda: (s := projects.stage("kuberay-fails", "Source")).get("finishedAt") and s,
    )
    assert stage["state"] == "Failed" and stage["reason"] == "JobFailed"
    stalled = projects.condition("kuberay-fails", "Stalled")
    assert stalled["status"] == "True"
    assert "RayJob Failed, Ray job PENDING" in stalled["message"]
    # A failed attempt leaves nothing behind: the RayJob goes, and with it the Ray job.
    ray_busy()
    job_id = stage["job"]["id"]
    wait_for("the Ray job to stop", lambda: ray_jobs.get_job_status(job_id) == JobStatus.STOPPED)
