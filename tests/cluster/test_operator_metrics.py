"""The real operator's metrics and log lines: scraped over HTTP and read from its log,
against the real API server and KubeRay's real RayJob CRD (no Ray: nothing runs a job)."""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from distill_operator.devstack.operator_process import OperatorProcess

from .projects import RAY_IMAGE, Projects, unused_loopback_port, wait_for

DASHBOARD = Path(__file__).parents[2] / "charts" / "distill-operator" / "dashboards"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
STOP_JOBS_DONE = "Handler 'stop_jobs' succeeded."
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    """``GET /metrics`` of the operator, parsed."""

    def __init__(self, url: str) -> None:
        self.url = url

    def families(self) -> dict[str, str]:
        """Every metric family the operator declares, by name: its type."""
        return {family.name: family.type for family in text_string_to_metric_families(self._get())}

    def samples(self) -> Samples:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self._get())
            for sample in family.samples
        }

    def _get(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return str(response.read().decode())


@pytest.fixture
def operator(
    kubeconfig: str, namespace: str, kuberay_crds: list[str], tmp_path: Path
) -> Iterator[tuple[OperatorProcess, Scraper]]:
    """The operator as the chart runs it (JSON logs, metrics served), watching only this
    test's namespace; its Ray address is never used, as its projects run in rayjob mode."""
    port = unused_loopback_port()
    process = OperatorProcess(
        kubeconfig=Path(kubeconfig),
        ray_address="http://127.0.0.1:1",
        state_dir=tmp_path / "operator",
        argv=(
            sys.executable, "-m", "distill_operator", "--namespace", namespace,
            "--log-format", "json", "--metrics-address", f"127.0.0.1:{port}",
        ),
        extra_env={"DISTILL_POLL_SECONDS": "1"},
    )  # fmt: skip
    process.start()
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
    try:
        wait_for("the metrics endpoint", lambda: _answers(scraper), timeout_s=30)
        yield process, scraper
    finally:
        process.stop()


def _answers(scraper: Scraper) -> bool:
    try:
        return bool(scraper.families())
    except OSError:
        return False


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_projects_stage_durations_launches_and_failures_show_in_a_scrape(
    operator: tuple[OperatorProcess, Scraper],
    custom: client.CustomObjectsApi,
    namespace: str,
    artifacts: str,
) -> None:
    process, scraper = operator
    projects = Projects(custom, namespace, artifacts)
    rayjob = {"spec.ray.mode": "rayjob", "spec.ray.image": RAY_IMAGE, "spec.policy.maxRetries": 0}
    # Its RayJob is created (no KubeRay controller runs it, so Source stays Running).
    projects.create("launches", **rayjob)
    # Its RayJob has a field KubeRay's schema lacks: the API server refuses it.
    projects.create("refused", **rayjob, **{"spec.ray.rayClusterSpec": {"notAField": True}})

    def settled() -> Samples | None:
        samples = scraper.samples()
        running = value(samples, "distill_projects", phase="Running", stage="Source")
        failed = value(samples, "distill_projects", phase="Failed", stage="Source")
        return samples if (running, failed) == (1, 1) else None

    samples = wait_for("one project launching, one refused", settled)
    assert value(samples, "distill_job_launches_total", stage="Source", mode="rayjob") == 1
    assert value(samples, "distill_job_failures_total", stage="Source", reason="LaunchRefused") == 1
    assert (
        value(samples, "distill_stage_duration_seconds_count", stage="Define", outcome="Succeeded")
        == 2
    )
    assert (
        value(samples, "distill_stage_duration_seconds_count", stage="Source", outcome="Failed")
        == 1
    )
    assert value(samples, "distill_reconcile_duration_seconds_count") > 0
    assert projects.stage("refused", "Source")["reason"] == "LaunchRefused"

    # Every series a dashboard query names is one this operator declares.
    families = scraper.families()
    for name in dashboard_metric_names():
        assert any(
            name == family + suffix
            for family, kind in families.items()
            for suffix in SUFFIXES.get(kind, ())
        ), f"the dashboard queries {name}, which the operator does not export"

    projects.delete("launches")
    wait_for(
        "the deleted project to leave the gauge",
        lambda: value(scraper.samples(), "distill_projects", phase="Running", stage="Source") == 0,
    )
    after = scraper.samples()
    assert value(after, "distill_projects", phase="Failed", stage="Source") == 1
    assert [key for key in after if key[0] == "distill_projects"] == [
        ("distill_projects", frozenset({("phase", "Failed"), ("stage", "Source")}))
    ]
    # kopf logs the delete handler's end after the project's loop (and its gauge) is gone.
    wait_for("kopf's deletion line", lambda: STOP_JOBS_DONE in process.log_text())
    assert_json_log_lines(process.log_text(), namespace)


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((DASHBOARD / "distill-operator.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = {name for expr in exprs for name in re.findall(r"\bdistill_[a-z0-9_]+", expr)}
    assert names, "the dashboard queries the operator's metrics"
    return names


def assert_json_log_lines(log: str, namespace: str) -> None:
    """Every line is one JSON object; every line about a project names it and its stage."""
    lines: list[dict[str, Any]] = []
    for text in log.splitlines():
        if text.startswith("--- distill-devstack:"):  # the dev stack's own start marker
            continue
        line = json.loads(text)
        assert {"time", "level", "logger", "message"} <= line.keys(), text
        lines.append(line)
    about = [line for line in lines if line.get("project")]
    assert about, "some lines are about the projects"
    for line in about:
        assert line["project"] in (f"{namespace}/launches", f"{namespace}/refused"), line
    submitted = [line for line in about if line["message"].startswith("submitted job")]
    assert [(line["project"], line["stage"]) for line in submitted] == [
        (f"{namespace}/launches", "Source")
    ]
    # kopf's own lines about the deletion, written after the project's loop has stopped,
    # still name the stage it was deleted in.
    (deleted,) = [line for line in about if line["message"] == STOP_JOBS_DONE]
    assert (deleted["logger"], deleted["project"], deleted["stage"]) == (
        "kopf.objects", f"{namespace}/launches", "Source",
    )  # fmt: skip
