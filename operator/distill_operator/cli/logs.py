"""``distill logs NAME --stage STAGE``: the logs of a stage's job (its latest attempt).

Where the logs are depends on how the job ran (``job.mode`` in status):

- ``submit``: a Ray job on an existing cluster; Ray's job-submission API has its logs.
- ``rayjob``: a KubeRay RayJob; its status names the Ray dashboard and the Ray job id.
- ``deployment``: the router on Kubernetes; its pods' logs.

``--stage launch`` is the router (``status.serving.router``), ``--stage drift`` the
latest drift check (``status.lifecycle.driftCheck``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from distill_operator import api
from distill_operator.cli import render
from distill_operator.cli.cluster import Cluster
from distill_operator.cli.errors import CliError, NotFoundError, UnreachableError
from distill_operator.cli.timeline import job_json

DEFAULT_RAY_ADDRESS = "http://127.0.0.1:8265"  # the operator's (reconciler.OperatorSettings)
STAGE_CHOICES = (*(stage.value.lower() for stage in api.Stage), "router", "drift")


@dataclass(frozen=True)
class StageJob:
    """A job whose logs were asked for."""

    what: str  # Teach, Iterate/tiny, router
    attempt: int
    record: Mapping[str, Any]  # the JobRecord in status


def stage_jobs(
    project: Mapping[str, Any], *, stage: str, candidate: str | None = None
) -> list[StageJob]:
    """The jobs of ``stage`` (one per candidate, or just ``candidate``'s).

    Raises:
        NotFoundError: the stage, or the candidate, has no job (yet).
    """
    status = project.get("status") or {}
    stage = stage.lower()
    if stage in ("launch", "router"):
        return [_service_job("router", (status.get("serving") or {}).get("router"))]
    if stage == "drift":
        return [_service_job("drift check", (status.get("lifecycle") or {}).get("driftCheck"))]
    entry = next(
        (s for s in status.get("stages") or [] if str(s.get("name", "")).lower() == stage), None
    )
    if entry is None:
        raise NotFoundError(f"no stage {stage!r} in status (the project has not started?)")
    name = entry["name"]
    parts = entry.get("candidates") or []
    if candidate is not None:
        part = next((p for p in parts if p.get("name") == candidate), None)
        if part is None:
            known = ", ".join(p["name"] for p in parts) or "none"
            raise NotFoundError(f"{name} has no candidate {candidate!r} (it has: {known})")
        parts = [part]
    jobs = [_job(f"{name}/{p['name']}", p) for p in parts if p.get("job")]
    if not parts and entry.get("job"):
        jobs = [_job(name, entry)]
    if not jobs:
        state = (parts[0] if candidate else entry).get("state") or "Pending"
        raise NotFoundError(
            f"{name}{'/' + candidate if candidate else ''} has no job yet ({state})"
        )
    return jobs


def _job(what: str, entry: Mapping[str, Any]) -> StageJob:
    return StageJob(what=what, attempt=int(entry.get("attempt") or 0), record=entry["job"])


def _service_job(what: str, entry: Mapping[str, Any] | None) -> StageJob:
    if not entry or not entry.get("job"):
        raise NotFoundError(f"the {what} has no job yet")
    return _job(what, entry)


def dashboard_address(dashboard: str | None) -> str | None:
    """The Ray dashboard's address in a job's dashboard link (``…/#/jobs/<id>``)."""
    if not dashboard:
        return None
    base = dashboard.split("#", 1)[0].rstrip("/")
    return base or None


def ray_address(project: Mapping[str, Any], job: StageJob, *, override: str | None) -> str:
    """Where to ask Ray for a submit-mode job: ``--ray-address``; the address the
    operator used (in the job's dashboard link); ``spec.ray.address``;
    ``DISTILL_RAY_ADDRESS``; the operator's default."""
    spec_address = ((project.get("spec") or {}).get("ray") or {}).get("address")
    return (
        override
        or dashboard_address(job.record.get("dashboard"))
        or spec_address
        or os.environ.get("DISTILL_RAY_ADDRESS")
        or DEFAULT_RAY_ADDRESS
    )


def rayjob_address(rayjob: Mapping[str, Any]) -> tuple[str | None, str]:
    """A RayJob's dashboard URL (KubeRay writes ``host:port``) and Ray job id."""
    status = rayjob.get("status") or {}
    url = str(status.get("dashboardURL") or "")
    job_id = str(status.get("jobId") or (rayjob.get("spec") or {}).get("jobId") or "")
    job_id = job_id or str(rayjob["metadata"]["name"])
    if not url:
        return None, job_id
    return (url if "://" in url else f"http://{url}"), job_id


class RayLogs:
    """A Ray job's logs through the dashboard's job-submission API."""

    def __init__(self, address: str) -> None:
        self.address = address

    def lines(self, job_id: str, *, follow: bool) -> Iterator[str]:
        client = self._client()
        if not follow:
            yield from self._guarded(job_id, lambda: client.get_job_logs(job_id)).splitlines()
            return
        self._guarded(job_id, lambda: client.get_job_info(job_id))  # a missing job: say so
        yield from _tail(client.tail_job_logs(job_id))

    def _client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        # The SDK logs its own INFO lines (connections, "WebSocket closed") on stderr.
        logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)

        try:
            return JobSubmissionClient(self.address)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UnreachableError(self._unreachable(error)) from error

    def _guarded(self, job_id: str, call: Any) -> Any:
        try:
            return call()
        except ConnectionError as error:
            raise UnreachableError(self._unreachable(error)) from error
        except RuntimeError as error:
            if "404" in str(error) or "does not exist" in str(error):
                raise NotFoundError(
                    f"Ray at {self.address} has no job {job_id} (was the Ray cluster replaced?)"
                ) from error
            raise CliError(f"Ray at {self.address}: {error}") from error

    def _unreachable(self, error: Exception) -> str:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"Ray at {self.address} unreachable ({first}); pass --ray-address "
            "(e.g. after kubectl port-forward to the Ray head's port 8265)"
        )


def _tail(chunks: AsyncIterator[str]) -> Iterator[str]:
    """Whole lines of Ray's log stream as they arrive, until the job ends."""
    loop = asyncio.new_event_loop()
    partial = ""
    try:
        while True:
            try:
                chunk = loop.run_until_complete(anext(chunks))
            except StopAsyncIteration:
                break
            *complete, partial = (partial + chunk).split("\n")
            yield from complete
        if partial:
            yield partial
    finally:
        loop.close()


def job_lines(
    cluster: Cluster,
    project: Mapping[str, Any],
    job: StageJob,
    *,
    namespace: str,
    follow: bool,
    ray_override: str | None,
) -> Iterator[str]:
    """The lines of one job's log, wherever its mode keeps them."""
    record = job.record
    mode, job_id = record.get("mode"), str(record.get("id") or "")
    if mode == "submit":
        address = ray_address(project, job, override=ray_override)
        yield from RayLogs(address).lines(job_id, follow=follow)
    elif mode == "rayjob":
        dashboard, ray_job = rayjob_address(cluster.rayjob(namespace, job_id))
        if not (ray_override or dashboard):
            raise NotFoundError(f"RayJob {namespace}/{job_id} has no Ray dashboard yet")
        yield from RayLogs(ray_override or dashboard or "").lines(ray_job, follow=follow)
    elif mode == "deployment":
        pods = cluster.deployment_pods(namespace, job_id)
        if not pods:
            raise NotFoundError(f"Deployment {namespace}/{job_id} has no pods yet")
        yield from cluster.pod_log(namespace, pods[-1], follow=follow)
    else:
        raise CliError(f"{job.what}: job {job_id} has mode {mode!r}, which has no logs here")


def cmd_logs(args: argparse.Namespace, *, cluster: Cluster | None = None) -> int:
    cluster = cluster or Cluster()
    if args.follow and args.output == "json":
        raise CliError("--follow prints the log as it grows: leave out -o json")
    project = cluster.project(args.namespace, args.name)
    jobs = stage_jobs(project, stage=args.stage, candidate=args.candidate)
    if args.follow and len(jobs) > 1:
        names = ", ".join(job.what.split("/", 1)[-1] for job in jobs)
        raise CliError(f"{len(jobs)} jobs ({names}): pick one with --candidate to follow")
    options = {"namespace": args.namespace, "follow": args.follow, "ray_override": args.ray_address}
    if args.output == "json":
        render.print_json(
            {
                "namespace": args.namespace,
                "name": args.name,
                "jobs": [
                    {
                        "what": job.what,
                        "attempt": job.attempt,
                        "job": job_json(job.record),
                        "lines": list(job_lines(cluster, project, job, **options)),
                    }
                    for job in jobs
                ],
            }
        )
        return 0
    for job in jobs:
        # The header goes to stderr: stdout stays the log itself, for grep and files.
        print(
            f"==> {job.what}: job {job.record.get('id')}, attempt {job.attempt} <==",
            file=sys.stderr,
        )
        for line in job_lines(cluster, project, job, **options):
            print(line, flush=args.follow)
    return 0
