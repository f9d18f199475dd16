"""A thousand generated specs, valid and not, against the real API server (issue #8).

Each spec is the example with one to three mutations (``spec_fuzz``), created for real
with ``fieldValidation=Strict``. Every one is refused with a message naming the field,
or accepted and handled by the operator: Define passes, or the project is Stalled with
a reason and a message naming the field. The operator runs in dry mode, so accepted
projects wait in their first job stage with a job that never runs; no Ray is needed.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from distill_operator import api
from distill_operator.devstack.operator_process import OperatorProcess
from distill_operator.reconciler import parse_spec
from distill_operator.stages import Facts, define

from . import spec_fuzz
from .projects import namespaced_operator, unused_loopback_port, wait_for

EXAMPLES = 1000
HANDLED_S = 300.0  # for the operator to reach every accepted project, on a busy 2-core box
GONE_S = 300.0
POLL_S = 3.0
# Floors well under what the derandomized run draws (see the counts it prints), so that
# a change to the strategies that stops reaching a whole class of input fails loudly.
AT_LEAST = {"refused": 300, "defined": 150, "stalled": 100}
STALLS = {"InvalidSpec", "SecretNotFound", "TaskNotOneSentence", "InvalidRollout"}
"""Every reason Define or a spec the API server let through can stall a project with."""


@dataclass(frozen=True)
class Created:
    name: str
    draw: spec_fuzz.Draw
    stored: dict[str, Any]  # as the API server stored it: defaults in, nulls pruned


@dataclass
class Run:
    """What happened to each generated spec."""

    refused: list[tuple[str, spec_fuzz.Draw, int, str]] = field(default_factory=list)
    created: list[Created] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def dry_operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator in dry mode, watching only this test's namespace."""
    process = namespaced_operator(
        kubeconfig=kubeconfig,
        namespace=namespace,
        ray_address=f"http://127.0.0.1:{unused_loopback_port()}",  # never asked: dry
        state_dir=tmp_path,
        DISTILL_DRY_RUN="1",
        DISTILL_POLL_SECONDS="30",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def fuzz_secret(kubeconfig: str, namespace: str) -> None:
    """The Secret some generated references name (others name one that does not exist)."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    data = {key: "c2VjcmV0" for key in spec_fuzz.SECRET_KEYS}
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=spec_fuzz.SECRET), data=data)
    core.create_namespaced_secret(namespace, body)


def create_all(custom: client.CustomObjectsApi, namespace: str) -> Run:
    run, numbers = Run(), itertools.count(1)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(draw=spec_fuzz.mutated_manifests())
    def create(draw: spec_fuzz.Draw) -> None:
        name = f"fuzz-{next(numbers):04d}"
        manifest = {**draw.manifest, "metadata": {"name": name}}
        try:
            stored = custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, manifest, field_validation="Strict"
            )
        except ApiException as error:
            if error.status in (400, 422):
                run.refused.append((name, draw, error.status, _message(error)))
            else:
                run.errors.append(f"{name}: HTTP {error.status} {error.body} for {draw.describe()}")
            return
        run.created.append(Created(name, draw, stored))

    create()
    return run


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.body)


def expected_reason(stored: dict[str, Any]) -> str:
    """What the operator must make of a spec the API server accepted: the Stalled
    reason, ``TaskDefined`` when Define passes, or ``Suspended``."""
    spec, error = parse_spec(stored.get("spec") or {})
    if spec is None:
        assert error, "a spec pydantic refuses has a message"
        return "InvalidSpec"
    if spec.suspend:
        return "Suspended"
    missing = tuple(f"{ref.name}/{ref.key}" for _, ref in missing_refs(stored))
    return define.decide(spec, Facts(missing_secrets=missing)).reason


def missing_refs(stored: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(field, ref)`` of each Secret key the project needs in its namespace (all it
    names but those the Ray cluster brings, see ray.secretDelivery) that the test never
    created."""
    spec, _ = parse_spec(stored.get("spec") or {})
    if spec is None:
        return []
    return [
        (where, ref)
        for where, ref in spec.secrets_in_namespace().items()
        if ref.name != spec_fuzz.SECRET or ref.key not in spec_fuzz.SECRET_KEYS
    ]


def condition(project: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = project.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def is_handled(project: dict[str, Any]) -> bool:
    """The operator has seen this generation and come to a verdict on it."""
    status = project.get("status", {})
    if not project or status.get("observedGeneration") != project["metadata"]["generation"]:
        return False
    stages = {entry["name"]: entry for entry in status.get("stages", [])}
    return (
        condition(project, "Stalled").get("status") == "True"
        or stages.get("Define", {}).get("state") == "Succeeded"
        or status.get("phase") == "Suspended"
    )


def judge(project: dict[str, Any], created: Created) -> str | None:
    """Why the operator's verdict on ``project`` is wrong, or None."""
    reason = expected_reason(created.stored)
    stalled = condition(project, "Stalled")
    if reason == "TaskDefined":
        if condition(project, "TaskDefined").get("status") != "True":
            return f"Define should pass; Stalled is {stalled}"
        return None
    if reason == "Suspended":
        phase = project.get("status", {}).get("phase")
        return None if phase == "Suspended" else f"should be Suspended, is {phase}"
    message = stalled.get("message", "")
    if stalled.get("status") != "True" or stalled.get("reason") != reason:
        return f"should be Stalled={reason}, Stalled is {stalled}"
    if not spec_fuzz.names_a_changed_field(message, created.draw.mutations):
        return f"the Stalled message names no changed field: {message!r}"
    unnamed = [where for where, _ in missing_refs(created.stored) if where not in message]
    if reason == "SecretNotFound" and unnamed:
        return f"the Stalled message does not name {unnamed}: {message!r}"
    return None


def wait_until_handled(
    custom: client.CustomObjectsApi, namespace: str, names: set[str]
) -> dict[str, dict[str, Any]]:
    """Every project in ``names`` once all are handled; listed every few seconds, as
    hundreds of projects per listing would otherwise take the CPU the operator needs."""
    deadline = time.monotonic() + HANDLED_S
    while True:
        listed = custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)
        latest = {item["metadata"]["name"]: item for item in listed["items"]}
        unhandled = sorted(name for name in names if not is_handled(latest.get(name, {})))
        if not unhandled:
            return latest
        if time.monotonic() > deadline:
            shown = {name: latest.get(name, {}).get("status") for name in unhandled[:3]}
            raise AssertionError(
                f"{len(unhandled)} accepted projects not handled in {HANDLED_S:.0f}s: {shown}"
            )
        time.sleep(POLL_S)


def misjudged(
    projects: dict[str, dict[str, Any]], created: list[Created], verdicts: dict[str, str]
) -> str:
    """The accepted projects the operator got wrong, a few of each expected verdict."""
    wrong: dict[str, list[str]] = {}
    for entry in created:
        problem = judge(projects[entry.name], entry)
        if problem:
            wrong.setdefault(verdicts[entry.name], []).append(
                f"{entry.name}: {problem}\n  mutations: {entry.draw.describe()}\n"
                f"  spec: {json.dumps(entry.stored['spec'])[:1500]}"
            )
    return "\n".join(
        f"{reason}: {len(found)} of {sum(v == reason for v in verdicts.values())}, e.g.\n"
        + "\n".join(found[:3])
        for reason, found in wrong.items()
    )


def summary(run: Run, projects: dict[str, dict[str, Any]], verdicts: dict[str, str]) -> str:
    stalled_on = Counter(
        f"{reason} {field}"
        for name, reason in verdicts.items()
        for field in spec_fuzz.named_fields(condition(projects[name], "Stalled").get("message", ""))
    )
    return (
        f"{len(run.refused)} refused, {len(run.created)} accepted: "
        f"{dict(Counter(verdicts.values()))}; stalled on {stalled_on.most_common(12)}"
    )


def delete_all(custom: client.CustomObjectsApi, namespace: str, names: list[str]) -> None:
    """Delete every project and wait until the operator has let each go (its finalizer)."""
    for name in names:
        custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)

    def none_left() -> bool:
        time.sleep(POLL_S)
        listed = custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)
        return not listed["items"]

    wait_for("every project to be deleted (the operator removes its finalizer)", none_left, GONE_S)


def test_a_thousand_generated_specs_are_refused_naming_the_field_or_handled_by_the_operator(
    custom: client.CustomObjectsApi,
    namespace: str,
    dry_operator: OperatorProcess,
    fuzz_secret: None,
) -> None:
    started = time.monotonic()
    run = create_all(custom, namespace)
    try:
        assert not run.errors, "the API server answered neither 201 nor 400/422:\n" + (
            "\n".join(run.errors[:5])
        )
        assert len(run.refused) + len(run.created) >= EXAMPLES
        vague = [
            f"{name} ({status}) {draw.describe()}\n  -> {message}"
            for name, draw, status, message in run.refused
            if not spec_fuzz.names_a_changed_field(message, draw.mutations)
        ]
        assert not vague, f"{len(vague)} refusals name no changed field:\n" + "\n".join(vague[:10])

        created_s = time.monotonic() - started
        projects = wait_until_handled(custom, namespace, {entry.name for entry in run.created})
        print(f"\nspec fuzzing: created in {created_s:.0f}s, all handled "
              f"{time.monotonic() - started - created_s:.0f}s later")  # fmt: skip
        verdicts = {entry.name: expected_reason(entry.stored) for entry in run.created}
        print(f"spec fuzzing: {summary(run, projects, verdicts)}")
        assert dry_operator.is_running(), "the operator never crashes on bad input"
        assert "Traceback" not in dry_operator.log_text(), dry_operator.log_text()[-5000:]
        wrong = misjudged(projects, run.created, verdicts)
        assert not wrong, f"accepted projects misjudged, by expected verdict: {wrong}"

        counts = {
            "refused": len(run.refused),
            "defined": sum(reason == "TaskDefined" for reason in verdicts.values()),
            "stalled": sum(reason in STALLS for reason in verdicts.values()),
        }
        assert all(counts[key] >= floor for key, floor in AT_LEAST.items()), counts
        assert set(verdicts.values()) >= STALLS, f"none stalled: {STALLS - set(verdicts.values())}"
    finally:
        delete_all(custom, namespace, [entry.name for entry in run.created])
    assert dry_operator.is_running()
    print(f"spec fuzzing: {time.monotonic() - started:.0f}s in all")
