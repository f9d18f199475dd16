"""The Argo CD health check (gitops/argocd), run in Lua 5.1 as Argo CD's gopher-lua runs it.

Two sources of input: the samples of ``health_test.yaml`` (Argo CD's own test layout), and
statuses the pure machine writes now, so the script is held to what the operator really
produces and not only to hand-kept samples.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from distill_operator.api import ProjectSpec, ProjectStatus
from distill_operator.launch.base import JobObservation, JobState
from distill_operator.machine import Observations, Settings, reconcile
from distill_operator.stages import Facts
from manifests import example_manifest

ARGOCD = Path(__file__).parents[2] / "gitops" / "argocd"
CUSTOMIZATION = ARGOCD / "resource_customizations" / "distill.dev" / "DistillationProject"
HEALTH_LUA = CUSTOMIZATION / "health.lua"
CM_KEY = "resource.customizations.health.distill.dev_DistillationProject"
CASES: list[dict[str, Any]] = yaml.safe_load((CUSTOMIZATION / "health_test.yaml").read_text())[
    "tests"
]
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """What Argo CD shows for ``obj``: the script's status and message."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return result["status"], result["message"]


def test_the_script_runs_on_lua_5_1_like_argo_cds_gopher_lua() -> None:
    assert lua51.LuaRuntime().eval("_VERSION") == "Lua 5.1"


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_each_sample_gets_the_health_its_test_case_names(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CUSTOMIZATION / case["inputPath"]).read_text())
    expected = case["healthStatus"]
    assert health(obj) == (expected["status"], expected["message"])


def test_every_sample_has_a_test_case_and_every_status_is_covered() -> None:
    samples = {f"testdata/{path.name}" for path in (CUSTOMIZATION / "testdata").glob("*.yaml")}
    assert samples == {case["inputPath"] for case in CASES}
    covered = {case["healthStatus"]["status"] for case in CASES}
    assert covered == {"Healthy", "Progressing", "Suspended", "Degraded"}


def test_argocd_cm_embeds_the_health_script_byte_for_byte() -> None:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"][CM_KEY] == HEALTH_LUA.read_text()


# --- statuses written by the machine ---------------------------------------------------
UID = "0a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def one_pass(
    spec: ProjectSpec | None, status: ProjectStatus, *, generation: int = 1, **observed: Any
) -> ProjectStatus:
    observations = Observations(
        now=T0, generation=generation, project="ml/intent-classifier", project_uid=UID, **observed
    )
    return reconcile(spec, status, observations, Settings()).status


def as_argo_sees_it(
    manifest: dict[str, Any], status: ProjectStatus, *, generation: int
) -> dict[str, Any]:
    """The object with its status dumped the way the reconciler writes it."""
    manifest["metadata"] |= {"namespace": "ml", "generation": generation}
    manifest["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return manifest


def after_the_first_pass(
    *,
    overrides: dict[str, Any] | None = None,
    spec_error: str | None = None,
    missing_secrets: tuple[str, ...] = (),
    generation: int = 1,
) -> dict[str, Any]:
    """The project after the operator's first pass on generation 1; ``generation`` is
    where metadata stands now (ahead when the user has changed the spec since)."""
    manifest = example_manifest(
        **{f"spec.{key}": value for key, value in (overrides or {}).items()}
    )
    spec = None if spec_error else ProjectSpec.model_validate(manifest["spec"])
    facts = Facts(missing_secrets=missing_secrets)
    status = one_pass(spec, ProjectStatus(), facts=facts, spec_error=spec_error)
    return as_argo_sees_it(manifest, status, generation=generation)


@pytest.mark.parametrize(
    ("project", "expected_status", "message_starts"),
    [
        pytest.param(
            {}, "Progressing", "Source: job dp-0a1b2c3d-source-a0-", id="fresh-project-sourcing"
        ),
        pytest.param(
            {"overrides": {"task": "Classify tickets. Also summarise them."}},
            "Degraded",
            "TaskNotOneSentence: Define failed: spec.task: ",
            id="define-failed",
        ),
        pytest.param(
            {"spec_error": "spec.bar: Field required"},
            "Degraded",
            "InvalidSpec: spec.bar: Field required",
            id="invalid-spec-stalled",
        ),
        pytest.param(
            {"missing_secrets": ("teacher-key/api-key",)},
            "Degraded",
            "SecretNotFound: Define: ",
            id="secret-missing-stalled",
        ),
        pytest.param(
            {"overrides": {"suspend": True}}, "Suspended", "suspended at Define", id="suspended"
        ),
        pytest.param(
            {"generation": 2},
            "Progressing",
            "waiting for the operator to observe generation 2",
            id="generation-not-observed",
        ),
    ],
)
def test_statuses_the_machine_writes_map_to_their_argo_cd_health(
    project: dict[str, Any], expected_status: str, message_starts: str
) -> None:
    status, message = health(after_the_first_pass(**project))
    assert status == expected_status
    assert message.startswith(message_starts), message


def test_a_spec_change_seen_while_a_stage_runs_shows_what_the_operator_does_about_it() -> None:
    manifest = example_manifest(**{"spec.teach.batchSize": 32})
    spec = ProjectSpec.model_validate(manifest["spec"])
    status = one_pass(spec, ProjectStatus())
    job_id = next(s.job.id for s in status.stages if s.job is not None)
    running = {job_id: JobObservation(job_id=job_id, state=JobState.RUNNING)}
    status = one_pass(spec, status, generation=2, jobs=running)
    health_status, message = health(as_argo_sees_it(manifest, status, generation=2))
    assert health_status == "Progressing"
    assert "Source: job dp-0a1b2c3d-source-a0-" in message, message
