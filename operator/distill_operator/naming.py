"""The one place that names what the operator creates.

Names are derived, never random, and saved in status before anything is created, so a
restarted operator finds the job it launched instead of starting a second one.
"""

from __future__ import annotations

from distill_operator.api import Stage


def job_id(*, project_uid: str, stage: Stage, attempt: int, input_hash: str) -> str:
    """Ray submission id and RayJob name of one stage attempt (a DNS-1123 label).

    Short enough (at most 40 characters) for KubeRay, which appends suffixes to the
    RayJob's name for the RayCluster and its pods.
    """
    uid = project_uid.replace("-", "")[:8]
    return f"dp-{uid}-{stage.value.lower()}-a{attempt}-{input_hash[:8]}"


def input_uri(stage_dir: str) -> str:
    return f"{stage_dir}/input.json"
