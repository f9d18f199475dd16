"""One project's reconcile: observe, run the pure machine, patch status, act.

This is the adapter between the machine and the world. It reads the project fresh from
the API server (never a cache), observes only what status names (the current stage's
job and result), writes status once per pass when it changed, and only then carries out
the actions, so that a crash at any point is repaired by the next pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
from pydantic import ValidationError

from distill_jobs.contract import StageResult, read_result
from distill_operator import machine
from distill_operator.api import ProjectSpec, ProjectStatus, StageState, StageStatus
from distill_operator.errors import PermanentError, TransientError
from distill_operator.kube import Kube
from distill_operator.launch.base import JobObservation, Launcher
from distill_operator.launch.rayjob import RayJobLauncher, default_cluster_spec
from distill_operator.launch.submit import SubmitLauncher
from distill_operator.stages import Facts

EventPoster = Callable[[str, str, str], None]
MAX_PASSES = 16  # passes in one go while each one asks for the next at once


@dataclass(frozen=True)
class OperatorSettings:
    """Operator-wide settings, from the environment (the Helm chart sets them)."""

    ray_address: str = "http://127.0.0.1:8265"
    machine: machine.Settings = field(default_factory=machine.Settings)
    idle_seconds: float = 300.0  # re-check of a project with nothing due (a resync)

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            ray_address=os.environ.get("DISTILL_RAY_ADDRESS", cls.ray_address),
            machine=machine.Settings(
                poll_seconds=float(os.environ.get("DISTILL_POLL_SECONDS", "5")),
                driver_cpus=float(os.environ.get("DISTILL_DRIVER_CPUS", "0.1")),
            ),
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
    _submit_launchers: dict[str, SubmitLauncher] = field(default_factory=dict)

    def launcher(self, spec: ProjectSpec | None, mode: str) -> Launcher:
        if mode == "rayjob":
            ray = spec.ray if spec else None
            template = (ray.ray_cluster_spec if ray else None) or default_cluster_spec(
                image=(ray.image if ray and ray.image else "rayproject/ray:2.60.0-py311")
            )
            return RayJobLauncher(api_client=self.kube.api_client, template=template)
        address = (spec.ray.address if spec else None) or self.settings.ray_address
        if address not in self._submit_launchers:
            self._submit_launchers[address] = SubmitLauncher(address=address)
        return self._submit_launchers[address]


def _current(status: ProjectStatus) -> StageStatus | None:
    return next((s for s in status.stages if s.state == StageState.RUNNING), None)


def _secret_refs(spec: ProjectSpec) -> list[tuple[str, str]]:
    refs = [spec.teacher.api_key_secret_ref, spec.artifacts.credentials_secret_ref]
    return [(ref.name, ref.key) for ref in refs if ref is not None]


async def _observe(
    runtime: Runtime, body: dict[str, Any], spec: ProjectSpec | None, status: ProjectStatus
) -> tuple[JobObservation | None, StageResult | None, Facts]:
    meta = body["metadata"]
    facts = Facts()
    if spec is not None and not any(s.state == StageState.SUCCEEDED for s in status.stages[:1]):
        refs = _secret_refs(spec)
        if refs:
            missing = await runtime.kube.missing_secret_keys(namespace=meta["namespace"], refs=refs)
            facts = Facts(missing_secrets=missing)
    current = _current(status)
    if current is None or current.job is None:
        return None, None, facts
    result = None
    if current.result_uri:
        result = await asyncio.to_thread(read_result, current.result_uri)
    launcher = runtime.launcher(spec, current.job.mode)
    job = await asyncio.to_thread(
        launcher.observe, job_id=current.job.id, namespace=meta["namespace"]
    )
    return job, result, facts


async def _carry_out(
    runtime: Runtime,
    spec: ProjectSpec | None,
    actions: tuple[machine.Action, ...],
    post_event: EventPoster,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    for action in actions:
        if isinstance(action, machine.Emit):
            post_event(action.type, action.reason, action.message)
        elif isinstance(action, machine.WriteInput):
            await asyncio.to_thread(_write_input, action)
        elif isinstance(action, machine.SubmitJob):
            launcher = runtime.launcher(spec, action.mode)
            job = action.job
            if action.secret_env:
                secrets = {
                    variable: await runtime.kube.secret_value(
                        namespace=job.namespace, name=name, key=key
                    )
                    for variable, name, key in action.secret_env
                }
                job = dataclasses.replace(job, env={**job.env, **secrets})
            await asyncio.to_thread(launcher.submit, job)
            logger.info("submitted job %s (%s)", action.job.job_id, action.mode)
        elif isinstance(action, machine.StopJob):
            launcher = runtime.launcher(spec, action.mode)
            await asyncio.to_thread(launcher.stop, job_id=action.job_id, namespace=action.namespace)


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
    launch_error: str | None = None
    for _ in range(MAX_PASSES):
        body = await runtime.kube.get_project(namespace=namespace, name=name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec, spec_error = parse_spec(body.get("spec") or {})
        status = parse_status(body.get("status"))
        job, result, facts = await _observe(runtime, body, spec, status)
        obs = machine.Observations(
            now=now(),
            generation=body["metadata"].get("generation", 1),
            project=f"{namespace}/{name}",
            project_uid=body["metadata"]["uid"],
            facts=facts,
            job=job,
            result=result,
            spec_error=spec_error,
            launch_error=launch_error,
        )
        decision = machine.reconcile(spec, status, obs, runtime.settings.machine)
        new_status = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if new_status != body.get("status"):
            await runtime.kube.replace_status(project=body, status=new_status)
        launch_error = None
        try:
            await _carry_out(runtime, spec, decision.actions, post_event, logger)
        except PermanentError as error:
            launch_error = str(error)  # the next pass records it against the stage
            continue
        if decision.requeue_after is None:
            return runtime.settings.idle_seconds  # nothing due: a spec change wakes us
        if decision.requeue_after != 0:
            return decision.requeue_after
    return 0.0


async def stop_project_jobs(runtime: Runtime, body: dict[str, Any]) -> list[str]:
    """Stop the running stage job of a project being deleted; return what was stopped."""
    spec, _ = parse_spec(body.get("spec") or {})
    current = _current(parse_status(body.get("status")))
    if current is None or current.job is None:
        return []
    launcher = runtime.launcher(spec, current.job.mode)
    namespace = body["metadata"]["namespace"]
    await asyncio.to_thread(launcher.stop, job_id=current.job.id, namespace=namespace)
    return [current.job.id]
