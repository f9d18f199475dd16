"""One project's reconcile: observe, run the pure machine, patch status, act.

This is the adapter between the machine and the world. It reads the project fresh from
the API server (never a cache), observes only what status names (the job, result and
progress of the running stage, or of each of its running candidates), writes status
once per pass when it changed, and only then carries out the actions, so that a crash
at any point is repaired by the next pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec
from pydantic import ValidationError

from distill_jobs.contract import (
    ENDPOINT_FILE,
    Endpoint,
    StageResult,
    read_model,
    read_progress,
    read_result,
    write_model,
)
from distill_operator import machine, naming
from distill_operator.api import JobRunStatus, ProjectSpec, ProjectStatus, StageState
from distill_operator.errors import DistillError, PermanentError, TransientError
from distill_operator.kube import Kube
from distill_operator.launch.base import JobObservation, JobState, Launcher
from distill_operator.launch.deployment import DEFAULT_RESOURCES, DeploymentLauncher, RouterPod
from distill_operator.launch.dry import DryLauncher
from distill_operator.launch.rayjob import RayJobLauncher, default_cluster_spec
from distill_operator.stages import Facts, launch
from distill_operator.telemetry import OperatorMetrics

if TYPE_CHECKING:  # Ray's client is imported on first use: dry and rayjob modes never load it
    from distill_operator.launch.submit import SubmitLauncher

EventPoster = Callable[[str, str, str], None]
MAX_PASSES = 16  # passes in one go while each one asks for the next at once
REPORT_HASH = "distill.dev/input-hash"  # on a report ConfigMap: the result it shows
MAX_REPORT_BYTES = 512 * 1024  # ConfigMaps hold 1 MiB; a report is a summary
ROUTER_TIMEOUT_SECONDS = 3.0
DEFAULT_JOBS_IMAGE = "ghcr.io/distill-dev/distill-jobs:latest"
DRY_RUN_ENV = "DISTILL_DRY_RUN"


@dataclass(frozen=True)
class OperatorSettings:
    """Operator-wide settings, from the environment (the Helm chart sets them)."""

    ray_address: str = "http://127.0.0.1:8265"
    jobs_image: str = DEFAULT_JOBS_IMAGE  # the router's, where the spec names none
    machine: machine.Settings = field(default_factory=machine.Settings)
    idle_seconds: float = 300.0  # re-check of a project with nothing due (a resync)
    dry_run: bool = False  # jobs recorded, never run (launch/dry.py)
    api_workers: int = 32  # threads (and API connections) for blocking calls

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            ray_address=os.environ.get("DISTILL_RAY_ADDRESS", cls.ray_address),
            jobs_image=os.environ.get("DISTILL_JOBS_IMAGE", cls.jobs_image),
            machine=machine.Settings(
                poll_seconds=float(os.environ.get("DISTILL_POLL_SECONDS", "5")),
                driver_cpus=float(os.environ.get("DISTILL_DRIVER_CPUS", "0.1")),
            ),
            dry_run=os.environ.get(DRY_RUN_ENV, "") not in ("", "0", "false"),
            api_workers=int(os.environ.get("DISTILL_API_WORKERS", cls.api_workers)),
        )


def format_validation_error(error: ValidationError) -> str:
    """``spec.bar.threshold: Input should be less than or equal to 1`` per problem."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in ("spec", *item["loc"]))
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def parse_spec(raw: dict[str, Any]) -> tuple[ProjectSpec | None, str | None]:
    try:
        return ProjectSpec.model_validate(raw), None
    except ValidationError as error:
        return None, format_validation_error(error)


def parse_status(raw: dict[str, Any] | None) -> ProjectStatus:
    try:
        return ProjectStatus.model_validate(raw or {})
    except ValidationError:
        # Status is ours, rebuilt from the stages; a corrupt one (a hand edit) starts over,
        # and content-addressed results make the restart cheap.
        return ProjectStatus()


@dataclass
class Runtime:
    """What every reconcile shares: the API adapter, settings and launchers."""

    kube: Kube
    settings: OperatorSettings
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    _submit_launchers: dict[str, SubmitLauncher] = field(default_factory=dict)
    _dry_launchers: dict[str, DryLauncher] = field(default_factory=dict)

    def launcher(self, spec: ProjectSpec | None, mode: str) -> Launcher:
        if self.settings.dry_run:
            return self._dry_launchers.setdefault(mode, DryLauncher(mode))
        if mode == DeploymentLauncher.mode:
            return DeploymentLauncher(api_client=self.kube.api_client, pod=self._router_pod(spec))
        if mode == "rayjob":
            ray = spec.ray if spec else None
            template = (ray.ray_cluster_spec if ray else None) or default_cluster_spec(
                image=(ray.image if ray and ray.image else "rayproject/ray:2.60.0-py311")
            )
            return RayJobLauncher(api_client=self.kube.api_client, template=template)
        address = (spec.ray.address if spec else None) or self.settings.ray_address
        if address not in self._submit_launchers:
            from distill_operator.launch.submit import SubmitLauncher

            self._submit_launchers[address] = SubmitLauncher(address=address)
        return self._submit_launchers[address]

    def _router_pod(self, spec: ProjectSpec | None) -> RouterPod:
        if spec is None:  # observing or stopping needs no pod
            return RouterPod(image=self.settings.jobs_image, port=0)
        router = spec.launch.router
        image = router.image or spec.ray.image or self.settings.jobs_image
        resources = router.resources or DEFAULT_RESOURCES
        return RouterPod(image=image, port=router.bind()[1], resources=resources)


async def _facts(
    runtime: Runtime, namespace: str, spec: ProjectSpec | None, status: ProjectStatus
) -> Facts:
    """The Secrets the spec references that do not exist, until Define has passed: each
    with the field that names it, where the fix may be."""
    if spec is None or any(s.state == StageState.SUCCEEDED for s in status.stages[:1]):
        return Facts()
    refs = spec.secrets_in_namespace()
    if not refs:
        return Facts()
    pairs = [(ref.name, ref.key) for ref in refs.values()]
    missing = await runtime.kube.missing_secret_keys(namespace=namespace, refs=pairs)
    named = [(field, f"{ref.name}/{ref.key}") for field, ref in refs.items()]
    return Facts(missing_secrets=tuple(f"{f} ({ref})" for f, ref in named if ref in missing))


@dataclass(frozen=True)
class _Seen:
    """What one pass saw of the units that have jobs (see machine.Observations)."""

    jobs: dict[str, JobObservation] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    router: launch.RouterSeen = field(default_factory=launch.RouterSeen)


@dataclass
class _Refusals:
    """What the platform refused in one pass's actions, for the next pass to record."""

    jobs: dict[str, str] = field(default_factory=dict)  # by job id
    reports: dict[str, str] = field(default_factory=dict)  # by ConfigMap name

    def __bool__(self) -> bool:
        return bool(self.jobs or self.reports)


async def _observe(
    runtime: Runtime, spec: ProjectSpec | None, project: tuple[str, str], status: ProjectStatus
) -> _Seen:
    """Every running unit's job, result and progress, the units side by side, and the
    report ConfigMaps of running stages."""
    namespace, name = project
    units = machine.running_units(status)
    found = await asyncio.gather(*(_observe_unit(runtime, spec, namespace, u) for u in units))
    seen = _Seen(router=await _observe_router(status))
    for report in machine.wanted_reports(status, name=name):
        made_from = await runtime.kube.config_map_annotation(
            namespace=namespace, name=report, key=REPORT_HASH
        )
        if made_from is not None:
            seen.reports[report] = made_from
    for unit, (job, result, progress) in zip(units, found, strict=True):
        assert unit.job is not None and unit.result_uri is not None
        if job is not None:
            seen.jobs[unit.job.id] = job
        if result is not None:
            seen.results[unit.result_uri] = result
        if progress is not None:
            seen.progress[unit.result_uri] = progress
    return seen


async def _observe_router(status: ProjectStatus) -> launch.RouterSeen:
    """Where the running router listens, and its metrics."""
    directory = machine.router_dir(status)
    if directory is None:
        return launch.RouterSeen()
    endpoint = await asyncio.to_thread(read_model, f"{directory}/{ENDPOINT_FILE}", Endpoint)
    if endpoint is None:
        return launch.RouterSeen()
    try:
        text = await asyncio.to_thread(_get_text, f"{endpoint.url}/metrics")
    except (OSError, ValueError) as error:
        return launch.RouterSeen(endpoint, error=f"the router at {endpoint.url}: {error}")
    return launch.read_router_metrics(text, endpoint)


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=ROUTER_TIMEOUT_SECONDS) as response:
        return str(response.read().decode())


async def _observe_unit(
    runtime: Runtime, spec: ProjectSpec | None, namespace: str, unit: JobRunStatus
) -> tuple[JobObservation | None, StageResult | None, dict[str, Any] | None]:
    assert unit.job is not None and unit.result_uri is not None
    launcher = runtime.launcher(spec, unit.job.mode)
    # The job before its result: a job seen finished has written its result by then,
    # so a result is never missed between the two reads.
    try:
        job = await asyncio.to_thread(launcher.observe, job_id=unit.job.id, namespace=namespace)
    except TransientError as error:
        # Not a reason to skip the pass: the machine keeps the attempt's deadline, so a
        # platform that stays away ends in a Failed stage rather than a silent wait.
        job = JobObservation(job_id=unit.job.id, state=JobState.UNKNOWN, message=str(error))
    result = await asyncio.to_thread(read_result, unit.result_uri)
    if result is not None:
        return job, result, None
    stage_dir = unit.result_uri.rsplit("/", 1)[0]
    return job, None, await asyncio.to_thread(read_progress, naming.progress_uri(stage_dir))


async def _carry_out(
    runtime: Runtime,
    spec: ProjectSpec | None,
    project: dict[str, Any],
    actions: tuple[machine.Action, ...],
    post_event: EventPoster,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> _Refusals:
    """Carry out the actions in order.

    Returns:
        What the platform refused: a submit, by job id (the next pass fails that attempt,
        and only that one: the other candidates' submits still go out), and a report,
        by ConfigMap name (the next pass concludes its stage without it).
    """
    refused = _Refusals()
    for action in actions:
        if isinstance(action, machine.Emit):
            post_event(action.type, action.reason, action.message)
        elif isinstance(action, machine.WriteInput):
            await asyncio.to_thread(_write_input, action)
        elif isinstance(action, machine.SubmitJob):
            try:
                await _submit(runtime, spec, action)
            except PermanentError as error:
                refused.jobs[action.job.job_id] = str(error)
                continue
            stage = action.job.labels.get(naming.STAGE_LABEL, "")
            runtime.metrics.launched(stage=stage, mode=action.mode)
            logger.info("submitted job %s (%s)", action.job.job_id, action.mode)
        elif isinstance(action, machine.StopJob):
            launcher = runtime.launcher(spec, action.mode)
            try:
                await asyncio.to_thread(
                    launcher.stop, job_id=action.job_id, namespace=action.namespace
                )
            except DistillError as error:  # it may still run: someone has to know
                post_event("Warning", "StopRefused", f"job {action.job_id}: {error}")
        elif isinstance(action, machine.WriteRouting):
            await asyncio.to_thread(_write_routing, action)
        elif isinstance(action, machine.PublishReport):
            try:
                await _publish(runtime, project, action)
            except PermanentError as error:
                refused.reports[action.name] = str(error)
    return refused


async def _publish(
    runtime: Runtime, project: dict[str, Any], action: machine.PublishReport
) -> None:
    data = await asyncio.to_thread(_read_summary, action.summary_uri)
    await runtime.kube.apply_config_map(
        owner=project,
        name=action.name,
        data=data,
        labels={
            naming.PROJECT_LABEL: project["metadata"]["name"],
            naming.STAGE_LABEL: action.stage.value,
        },
        annotations={REPORT_HASH: action.input_hash},
    )


def _read_summary(uri: str) -> dict[str, str]:
    """A report's ConfigMap data: a JSON object of strings, small enough for a ConfigMap."""
    try:
        with fsspec.open(uri, "r") as handle:
            text = handle.read()
    except FileNotFoundError as error:
        raise PermanentError(f"the report summary {uri} does not exist") from error
    except OSError as error:
        raise TransientError(f"reading {uri}: {error}") from error
    if len(text.encode()) > MAX_REPORT_BYTES:
        raise PermanentError(f"the report summary {uri} is over {MAX_REPORT_BYTES} bytes")
    try:
        data = json.loads(text)
    except ValueError as error:
        raise PermanentError(f"the report summary {uri} is not JSON: {error}") from error
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in data.items()
    ):
        raise PermanentError(f"the report summary {uri} is not a JSON object of strings")
    return data


async def _submit(runtime: Runtime, spec: ProjectSpec | None, action: machine.SubmitJob) -> None:
    launcher = runtime.launcher(spec, action.mode)
    job = action.job
    if launcher.takes_secret_refs:
        job = dataclasses.replace(job, secret_env=action.secret_env)
    elif action.secret_env:
        secrets = {
            variable: await runtime.kube.secret_value(namespace=job.namespace, name=name, key=key)
            for variable, name, key in action.secret_env
        }
        job = dataclasses.replace(job, env={**job.env, **secrets})
    await asyncio.to_thread(launcher.submit, job)


def _write_routing(action: machine.WriteRouting) -> None:
    try:
        write_model(action.routing, action.uri)
    except OSError as error:
        raise TransientError(f"writing {action.uri}: {error}") from error


def _write_input(action: machine.WriteInput) -> None:
    try:
        with fsspec.open(action.uri, "w", auto_mkdir=True) as handle:
            handle.write(action.stage_input.model_dump_json(indent=2))
    except OSError as error:  # an unwritable or unreachable store may come back
        raise TransientError(f"writing {action.uri}: {error}") from error


async def reconcile_project(
    runtime: Runtime,
    *,
    namespace: str,
    name: str,
    post_event: EventPoster,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> float | None:
    """Reconcile until the machine waits.

    Returns:
        Seconds until the next pass is due, or None when the project is gone.
    """
    refused = _Refusals()
    for _ in range(MAX_PASSES):
        with runtime.metrics.reconcile_seconds.time():
            passed = await _pass(
                runtime, (namespace, name), refused, post_event=post_event, logger=logger, now=now
            )
        if passed is None:
            return None
        decision, refused = passed
        if refused:
            continue  # the next pass records each refusal against what was refused
        if decision.requeue_after is None:
            return runtime.settings.idle_seconds  # nothing due: a spec change wakes us
        if decision.requeue_after != 0:
            return decision.requeue_after
    return 0.0


async def _pass(
    runtime: Runtime,
    project: tuple[str, str],
    refused: _Refusals,
    *,
    post_event: EventPoster,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    now: Callable[[], datetime],
) -> tuple[machine.Decision, _Refusals] | None:
    """One pass: read, observe, decide, write status, act; None when the project is gone."""
    namespace, name = project
    body = await runtime.kube.get_project(namespace=namespace, name=name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    spec, spec_error = parse_spec(body.get("spec") or {})
    status = parse_status(body.get("status"))
    uid = body["metadata"]["uid"]
    runtime.metrics.saw(f"{namespace}/{name}", uid=uid, status=status)  # for this pass's lines
    facts = await _facts(runtime, namespace, spec, status)
    seen = await _observe(runtime, spec, project, status)
    obs = machine.Observations(
        now=now(),
        generation=body["metadata"].get("generation", 1),
        project=f"{namespace}/{name}",
        project_uid=uid,
        facts=facts,
        jobs=seen.jobs,
        results=seen.results,
        progress=seen.progress,
        spec_error=spec_error,
        launch_errors=refused.jobs,
        reports=seen.reports,
        report_errors=refused.reports,
        router=seen.router,
    )
    decision = machine.reconcile(spec, status, obs, runtime.settings.machine)
    new_status = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if new_status != body.get("status"):
        await runtime.kube.replace_status(project=body, status=new_status)
        # Counted once written: a failed write repeats the pass, and only then counts.
        runtime.metrics.passed(obs.project, uid=uid, before=status, after=decision.status)
    refused = await _carry_out(runtime, spec, body, decision.actions, post_event, logger)
    return decision, refused


async def stop_project_jobs(runtime: Runtime, body: dict[str, Any]) -> list[str]:
    """Stop every running job of a project being deleted (the stage's, or each running
    candidate's); return what was stopped."""
    spec, _ = parse_spec(body.get("spec") or {})
    namespace, status = body["metadata"]["namespace"], parse_status(body.get("status"))
    stopped = []
    for unit in machine.running_units(status):
        assert unit.job is not None
        launcher = runtime.launcher(spec, unit.job.mode)
        await asyncio.to_thread(launcher.stop, job_id=unit.job.id, namespace=namespace)
        stopped.append(unit.job.id)
    router_job = status.serving.router.job if status.serving and status.serving.router else None
    if (
        router_job is not None
        and router_job.mode == DeploymentLauncher.mode
        and not runtime.settings.dry_run
    ):
        # No controller manager may collect the Service: delete it ourselves.
        name, launcher = body["metadata"]["name"], runtime.launcher(spec, router_job.mode)
        assert isinstance(launcher, DeploymentLauncher)
        await asyncio.to_thread(launcher.delete_service, project=name, namespace=namespace)
        stopped.append(naming.router_service(name))
    return stopped
