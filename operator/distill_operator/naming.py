"""The one place that names what the operator creates.

Names are derived, never random, and saved in status before anything is created, so a
restarted operator finds the job it launched instead of starting a second one.
"""

from __future__ import annotations

import hashlib

from distill_jobs.contract import PROGRESS_FILE
from distill_operator.api import Stage

MAX_JOB_ID = 40
MAX_OBJECT_NAME = 253  # a DNS-1123 subdomain: ConfigMap names
MAX_SERVICE_NAME = 63  # a DNS-1035 label
PROJECT_LABEL = "distill.dev/project"  # on everything made for a project
STAGE_LABEL = "distill.dev/stage"  # on stage jobs and report ConfigMaps


def job_id(
    *, project_uid: str, stage: Stage, attempt: int, input_hash: str, part: str | None = None
) -> str:
    """Ray submission id and RayJob name of one stage attempt (a DNS-1123 label).

    Short enough (at most 40 characters) for KubeRay, which appends suffixes to the
    RayJob's name for the RayCluster and its pods. A stage split into parts (Iterate's
    candidates) adds as much of the part's name as fits, for people reading a dashboard;
    the input hash alone already tells parts apart.
    """
    uid = project_uid.replace("-", "")[:8]
    head = f"dp-{uid}-{stage.value.lower()}"
    tail = f"a{attempt}-{input_hash[:8]}"
    room = MAX_JOB_ID - len(head) - len(tail) - 2  # two more dashes
    short = (part or "")[: max(room, 0)].rstrip("-")
    return f"{head}-{short}-{tail}" if short else f"{head}-{tail}"


def input_uri(stage_dir: str) -> str:
    return f"{stage_dir}/input.json"


def progress_uri(stage_dir: str) -> str:
    """Where a running job may report progress (a hint for people, never a decision)."""
    return f"{stage_dir}/{PROGRESS_FILE}"


def report_name(*, project: str, stage: Stage) -> str:
    """The ConfigMap of a stage's report: ``<project>-<stage>``, shortened with a hash
    of the whole when a long project name would make it too long."""
    name = f"{project}-{stage.value.lower()}"
    if len(name) <= MAX_OBJECT_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_OBJECT_NAME - 9].rstrip('-.')}-{digest}"


def router_service(project: str) -> str:
    """The Service of a project's router on kubernetes: ``<project>-router``, a name
    clients keep across router restarts. A Service name is a DNS-1035 label, so dots
    become dashes, a leading digit gets a letter, and a long name is shortened with a
    hash of the whole."""
    name = f"{project.replace('.', '-')}-router"
    if not name[0].isalpha():
        name = f"r{name}"
    if len(name) <= MAX_SERVICE_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_SERVICE_NAME - 9].rstrip('-')}-{digest}"


def router_service_url(*, project: str, namespace: str) -> str:
    """The in-cluster URL of a project's router Service (port 80)."""
    return f"http://{router_service(project)}.{namespace}.svc"
