"""Scale: many DistillationProjects on the local control plane, the operator in dry mode.

A fresh control plane (etcd + kube-apiserver, the dev stack's) with ``crds/`` applied,
and the operator started with ``DISTILL_DRY_RUN=1``: stage jobs are recorded in the
operator's memory and reported Pending forever, never run (no Ray, no model), so what
is measured is the operator and the API server alone. Each project passes Define and
then waits on a dry job; ``DISTILL_POLL_SECONDS`` is set high (``--poll-seconds``) so
that re-polling those jobs does not add load the measurement would count.

The bench opens a watch on the namespace's projects, then creates them from one client
(as fast as it can, or at ``--rate`` per second) and records, per project:

- apply → first status: from the create's response to the first watch event whose
  status the operator wrote (a status with more than kopf's own bookkeeping);
- apply → Define passed: to the first event with ``status.stages[0]`` Succeeded.

API requests per project come from the API server's ``apiserver_request_total``
(``/metrics``): the increase from the first create until the API server is quiet
after the last project passed Define, per verb and resource; minus the bench's own
creates, the API server's background (the rate seen in an idle window before the
creates, the operator already running; mostly its own lease heartbeats), WATCH
requests (long-running: counted once, when they end) and non-resource paths (the
bench's /metrics scrapes), divided by the number of projects.

Operator memory is its resident set (psutil), sampled every ``--sample-seconds``: the
peak over the run and the value at the end. Then every project is deleted (one delete
collection) and the time until the last is gone is measured too.

``python bench/scale.py [--projects 1000] [--rate 0] [--timeout 600]`` prints a table
and writes ``bench/results/scale.json``; it exits 1 when a target is missed:
first-status p50 under 1 s, operator RSS under 300 MB, no project left behind.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import psutil
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from distill_operator.api import GROUP, PLURAL, VERSION, Stage, StageState
from distill_operator.devstack import (
    OPERATOR_ARGV,
    ControlPlane,
    DevStackSettings,
    OperatorProcess,
    apply_crds,
    kubectl,
)
from distill_operator.devstack.probes import http_get, unverified_tls
from distill_operator.devstack.procs import ProcessRecord, free_ports, wait_until

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
EXAMPLE = REPO / "examples" / "intent-classifier.yaml"
CRD_DIR = REPO / "crds"
TARGET_P50_SECONDS = 1.0
TARGET_RSS_MB = 300.0
MODE = "operator dry run (DISTILL_DRY_RUN=1): stage jobs are recorded, never run"
# The API server's own heartbeat; the bench's scrapes have no resource.
BACKGROUND_RESOURCES = frozenset({"leases"})
RequestKey = tuple[str, str, str, str]  # (verb, resource, subresource, code)
LatencyKey = tuple[str, str, str]  # (verb, resource, subresource)


# --- measuring ---------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))  # ceil, at least the first
    return ordered[int(rank) - 1]


def operator_wrote_status(status: dict[str, Any] | None) -> bool:
    """Whether a status holds the operator's own fields, not only kopf's bookkeeping."""
    return any(key != "kopf" for key in status or {})


def define_passed(status: dict[str, Any] | None) -> bool:
    stages = (status or {}).get("stages") or []
    first = stages[0] if stages else {}
    return first.get("name") == Stage.DEFINE and first.get("state") == StageState.SUCCEEDED


class ProjectWatch:
    """One watch on a namespace's projects: when each got its first status, passed
    Define, and was deleted (``time.monotonic``, as the bench's own clock)."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="project-watch", daemon=True)
        self._lock = threading.Lock()
        self.first_status: dict[str, float] = {}
        self.define_passed: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.stage: dict[str, str] = {}
        self.events = 0
        self.error: str | None = None

    def start(self) -> None:
        """List (for a resourceVersion), then watch from there in a thread."""
        self._resource_version = self._list()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=15)

    def count(self, table: str) -> int:
        with self._lock:
            return len(getattr(self, table))

    def _list(self) -> str:
        listed = cast(
            dict[str, Any],
            self._custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL),
        )
        now = time.monotonic()
        for item in listed.get("items", []):
            self._see("MODIFIED", item, now)
        return str(listed["metadata"]["resourceVersion"])

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                # Raw JSON events: the client's model deserialising would triple the
                # parsing, on the CPU the operator is measured on.
                for event in watch.Watch().stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP, VERSION, self._namespace, PLURAL,
                    resource_version=self._resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=5,  # ends the stream soon after stop()
                    deserialize=False,
                ):  # fmt: skip
                    body = event["object"]
                    self._resource_version = body["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._see(event["type"], body, time.monotonic())
            except ApiException as error:
                if error.status != 410:
                    self.error = f"watch failed: {error.status} {error.reason}"
                    return
                self._resource_version = self._list()  # expired: catch up from a list
            except Exception as error:  # reported in the results, not lost
                self.error = f"watch failed: {error!r}"
                return

    def _see(self, kind: str, body: dict[str, Any], now: float) -> None:
        name = body["metadata"]["name"]
        status = body.get("status")
        with self._lock:
            self.events += 1
            if kind == "DELETED":
                self.deleted.setdefault(name, now)
                return
            if operator_wrote_status(status):
                self.first_status.setdefault(name, now)
                self.stage[name] = str((status or {}).get("stage") or "")
            if define_passed(status):
                self.define_passed.setdefault(name, now)


def cpu_seconds_of(records: Iterable[ProcessRecord]) -> float:
    """User and system CPU seconds the processes have used so far."""
    total = 0.0
    for record in records:
        times = psutil.Process(record.pid).cpu_times()
        total += times.user + times.system
    return total


@dataclass
class ProcessSampler:
    """The operator's resident memory (peak and last) and CPU time, sampled in a thread."""

    pid: int
    interval_s: float
    peak_rss: int = 0
    last_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._process = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        # The process alone: a dry-run operator starts no children, and listing them
        # would scan /proc on every sample.
        try:
            rss = self._process.memory_info().rss
        except psutil.NoSuchProcess:
            return
        self.last_rss = rss
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


@dataclass(frozen=True)
class Reading:
    """One scrape of the API server's request metrics (WATCH and non-resource paths,
    such as our own scrapes, left out: a watch is counted once, when it ends)."""

    requests: Counter[RequestKey]  # apiserver_request_total
    micros: Counter[LatencyKey]  # apiserver_request_duration_seconds: sum (µs) ...
    timed: Counter[LatencyKey]  # ... and count

    def __sub__(self, earlier: Reading) -> Reading:
        return Reading(
            self.requests - earlier.requests, self.micros - earlier.micros,
            self.timed - earlier.timed,
        )  # fmt: skip

    def beyond_background(self) -> Counter[RequestKey]:
        return Counter({k: v for k, v in self.requests.items() if k[1] not in BACKGROUND_RESOURCES})

    def mean_ms(self) -> dict[str, float]:
        """Mean API server latency by request, slowest first."""
        means = {key: self.micros[key] / 1000 / count for key, count in self.timed.items()}
        ordered = sorted(means.items(), key=lambda item: -item[1])
        return {request_name(*key): mean for key, mean in ordered}


def request_name(verb: str, resource: str, subresource: str, code: str = "") -> str:
    return (
        f"{verb} {resource}{'/' + subresource if subresource else ''}{' ' + code if code else ''}"
    )


class ApiServerMetrics:
    """The control plane's request metrics, read from its ``/metrics``."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self._url = f"{control_plane.server}/metrics"
        self._token = control_plane.token

    def read(self) -> Reading:
        answer = http_get(
            self._url, timeout_s=30, bearer_token=self._token, ssl_context=unverified_tls()
        )
        if answer is None or answer.status != 200:
            raise RuntimeError(f"cannot read {self._url}: {answer}")
        reading = Reading(Counter(), Counter(), Counter())
        tables = {  # name → (table, scale): sums in µs, to stay in an integer Counter
            "apiserver_request_duration_seconds_sum": (reading.micros, 1e6),
            "apiserver_request_duration_seconds_count": (reading.timed, 1.0),
        }
        for family in text_string_to_metric_families(answer.body):
            for sample in family.samples:
                labels = sample.labels
                verb, resource = labels.get("verb", ""), labels.get("resource", "")
                if not resource or verb == "WATCH":
                    continue
                key = (verb, resource, labels.get("subresource", ""))
                if sample.name == "apiserver_request_total":
                    reading.requests[(*key, labels.get("code", ""))] += int(sample.value)
                elif sample.name in tables:
                    table, scale = tables[sample.name]
                    table[key] += round(sample.value * scale)
        return reading

    def rate_over(self, *, seconds: float) -> dict[RequestKey, float]:
        """Requests per second by kind, over ``seconds`` from now (idle: the background)."""
        before = self.read()
        time.sleep(seconds)
        return {key: count / seconds for key, count in (self.read() - before).requests.items()}

    def wait_quiet(self, *, quiet_s: float, timeout_s: float) -> Reading:
        """Read until no request but the background arrived for ``quiet_s``; the last
        reading."""
        last = self.read()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.read()
            if not (now - last).beyond_background():
                return now
            last = now
        return last


def operator_requests(
    window: Reading,
    *,
    background_per_s: dict[RequestKey, float],
    seconds: float,
    own: Counter[RequestKey],
) -> Counter[RequestKey]:
    """The window's requests less the API server's background and the bench's own."""
    made: Counter[RequestKey] = Counter()
    for key, seen in window.requests.items():
        count = seen - own[key] - background_per_s.get(key, 0.0) * seconds
        if count > 0.5:
            made[key] = round(count)
    return made


# --- the stack ---------------------------------------------------------------------------


def project_manifest(name: str, *, artifacts_uri: str) -> dict[str, Any]:
    """The example project (examples/intent-classifier.yaml), renamed, its artifacts in
    the bench's temp dir. Its teacher and traffic are never read: jobs never run."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    manifest = copy.deepcopy(manifest)
    manifest["metadata"] = {"name": name}
    manifest["spec"]["artifacts"]["uri"] = artifacts_uri
    return manifest


def create_namespace(kubeconfig: Path, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kubectl(kubeconfig, "create", "-f", "-", input=json.dumps(body))


def lone_project_latency(
    custom: client.CustomObjectsApi, *, namespace: str, name: str, artifacts_uri: str,
    timeout_s: float,
) -> float:  # fmt: skip
    """Apply → first status of one project alone, polled every 20 ms; then delete it."""
    body = project_manifest(name, artifacts_uri=artifacts_uri)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    created = time.monotonic()

    def read() -> dict[str, Any] | None:
        try:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    if not wait_until(
        lambda: operator_wrote_status((read() or {}).get("status")),
        timeout_s=timeout_s,
        poll_interval_s=0.02,
    ):
        raise RuntimeError(f"the operator gave project {name} no status in {timeout_s:.0f} s")
    latency = time.monotonic() - created
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    if not wait_until(lambda: read() is None, timeout_s=timeout_s, poll_interval_s=0.1):
        raise RuntimeError(f"project {name} was not deleted in {timeout_s:.0f} s")
    return latency


def create_projects(
    custom: client.CustomObjectsApi,
    *,
    namespace: str,
    names: list[str],
    artifacts_uri: str,
    rate: float,
) -> tuple[dict[str, float], list[float], dict[str, str]]:
    """Create the projects in order from one client; ``rate`` per second (0: no pause).

    Returns:
        When each create returned, each create's seconds, and refusals by name.
    """
    done: dict[str, float] = {}
    durations: list[float] = []
    refused: dict[str, str] = {}
    started = time.monotonic()
    for index, name in enumerate(names):
        if rate > 0:
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        body = project_manifest(name, artifacts_uri=artifacts_uri)
        sent = time.monotonic()
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        except ApiException as error:
            refused[name] = f"{error.status} {error.reason}"
            continue
        done[name] = time.monotonic()
        durations.append(done[name] - sent)
    return done, durations, refused


def scrape_operator_passes(port: int) -> tuple[int, float]:
    """The operator's reconcile passes so far and their total seconds (its /metrics)."""
    answer = http_get(f"http://127.0.0.1:{port}/metrics", timeout_s=10)
    if answer is None or answer.status != 200:
        return 0, 0.0
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.body)
        for sample in family.samples
    }
    return (
        int(values.get("distill_reconcile_duration_seconds_count", 0)),
        float(values.get("distill_reconcile_duration_seconds_sum", 0.0)),
    )


# --- figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What one run measured (seconds unless named otherwise)."""

    projects: int
    created: int
    create_seconds: float
    create_p50_ms: float | None
    lone_first_status_seconds: float
    first_status_p50: float | None
    first_status_p95: float | None
    first_status_max: float | None
    define_p50: float | None
    define_p95: float | None
    all_past_define_seconds: float | None
    no_status: int
    not_past_define: int
    rss_start_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    cpu_seconds_run: float
    cpu_seconds_delete: float
    control_plane_cpu_seconds_run: float
    reconcile_passes: int
    reconcile_seconds: float
    api_requests_per_project: float
    deletion_seconds: float | None
    not_deleted: int
    stages_at_end: dict[str, int]
    requests_per_project: dict[str, float]
    apiserver_mean_ms: dict[str, float]

    @property
    def left_behind(self) -> int:
        return self.not_past_define

    def targets(self) -> dict[str, tuple[str, bool]]:
        p50 = self.first_status_p50
        return {
            f"first status p50 < {TARGET_P50_SECONDS:g} s": (
                _seconds(p50),
                p50 is not None and p50 < TARGET_P50_SECONDS,
            ),
            f"operator RSS < {TARGET_RSS_MB:g} MB": (
                f"peak {self.rss_peak_mb:.0f} MB",
                self.rss_peak_mb < TARGET_RSS_MB,
            ),
            "no project left behind": (f"{self.left_behind} left behind", self.left_behind == 0),
        }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def print_table(figures: Figures, *, header: list[str]) -> None:
    for line in header:
        print(line)
    per = figures.projects or 1
    rows = [
        ("projects created", f"{figures.created} / {figures.projects}"),
        (
            "create time (one client)",
            f"{figures.create_seconds:.1f} s "
            f"({figures.created / max(figures.create_seconds, 1e-9):.0f}/s, "
            f"p50 {figures.create_p50_ms or 0:.1f} ms each)",
        ),
        ("lone project → first status", _seconds(figures.lone_first_status_seconds)),
        ("apply → first status p50", _seconds(figures.first_status_p50)),
        ("apply → first status p95", _seconds(figures.first_status_p95)),
        ("apply → first status max", _seconds(figures.first_status_max)),
        ("apply → Define passed p50", _seconds(figures.define_p50)),
        ("apply → Define passed p95", _seconds(figures.define_p95)),
        ("first create → all past Define", _seconds(figures.all_past_define_seconds)),
        ("never got a status", str(figures.no_status)),
        ("never passed Define", str(figures.not_past_define)),
        (
            "operator RSS start / peak / end",
            f"{figures.rss_start_mb:.0f} / {figures.rss_peak_mb:.0f} / {figures.rss_end_mb:.0f} MB",
        ),
        (
            "operator CPU, run / deletion",
            f"{figures.cpu_seconds_run:.1f} / {figures.cpu_seconds_delete:.1f} s",
        ),
        ("API server + etcd CPU, run", f"{figures.control_plane_cpu_seconds_run:.1f} s"),
        (
            "reconcile passes per project",
            f"{figures.reconcile_passes / per:.1f} "
            f"(mean {1000 * figures.reconcile_seconds / max(figures.reconcile_passes, 1):.1f} ms)",
        ),
        ("API requests per project", f"{figures.api_requests_per_project:.1f}"),
        ("delete all → all gone", _seconds(figures.deletion_seconds)),
        ("not deleted", str(figures.not_deleted)),
    ]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"{label:<{width}}{value}")
    print("API requests per project, by request and answer:")
    for request, count in figures.requests_per_project.items():
        print(f"  {request:<40}{count:.2f}")
    print("API server mean latency during the run:")
    for request, mean in figures.apiserver_mean_ms.items():
        print(f"  {request:<40}{mean:.1f} ms")
    stages = ", ".join(f"{stage or '-'} {count}" for stage, count in figures.stages_at_end.items())
    print(f"stage at the end: {stages}")
    for target, (value, met) in figures.targets().items():
        print(f"{'PASS' if met else 'FAIL'}  {target}: {value}")


def machine_info(*, load_before: tuple[float, float, float]) -> dict[str, Any]:
    versions = {name: metadata.version(name) for name in ("kopf", "kubernetes")}
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        # Shared machines: the load says how much of the CPU the run really had.
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


# --- the run -----------------------------------------------------------------------------


@dataclass
class Run:
    """The stack of one run and what it has measured so far."""

    args: argparse.Namespace
    work_dir: Path
    namespace: str = field(default_factory=lambda: f"scale-{secrets.token_hex(3)}")

    def __post_init__(self) -> None:
        self.artifacts_uri = (self.work_dir / "artifacts").as_uri()
        self.metrics_port = free_ports(1)[0]
        self.control_plane = ControlPlane(
            state_dir=self.work_dir / "controlplane", settings=DevStackSettings()
        )
        self.operator = OperatorProcess(
            kubeconfig=self.control_plane.kubeconfig,
            ray_address="http://127.0.0.1:1",  # dry run: never asked
            state_dir=self.work_dir / "operator",
            argv=(
                *OPERATOR_ARGV,
                "--dry-run",
                "--metrics-address",
                f"127.0.0.1:{self.metrics_port}",
            ),
            extra_env=self.operator_env(),
        )

    def operator_env(self) -> dict[str, str]:
        return {
            "DISTILL_DRY_RUN": "1",
            "DISTILL_POLL_SECONDS": f"{self.args.poll_seconds:g}",
            "DISTILL_ARTIFACTS_URI": self.artifacts_uri,
        }


@dataclass(frozen=True)
class Applied:
    """The creates, and what the operator spent until every project passed Define."""

    created: dict[str, float]  # name → when its create returned
    create_durations: list[float]
    first_create: float
    create_seconds: float
    window: Reading  # every request in it, the bench's own too
    requests: Counter[RequestKey]  # the operator's
    cpu_seconds: float  # the operator's
    control_plane_cpu_seconds: float  # kube-apiserver's and etcd's
    refused: dict[str, str]  # name → why the API server refused its create


def apply_all(
    run: Run, custom: client.CustomObjectsApi, counts: ApiServerMetrics, sampler: ProcessSampler,
    project_watch: ProjectWatch, background: dict[RequestKey, float],
) -> Applied:  # fmt: skip
    """Create every project, wait until each passed Define (or the timeout), and count
    the operator's API requests until the API server is quiet."""
    args = run.args
    names = [f"project-{index:05d}" for index in range(args.projects)]
    before, cpu_before = counts.read(), sampler.cpu_seconds()
    control_plane_cpu_before = cpu_seconds_of(run.control_plane.records())
    first_create = time.monotonic()
    created, durations, refused = create_projects(
        custom, namespace=run.namespace, names=names, artifacts_uri=run.artifacts_uri,
        rate=args.rate,
    )  # fmt: skip
    create_seconds = time.monotonic() - first_create
    wait_until(
        lambda: project_watch.count("define_passed") >= len(created),
        timeout_s=max(0.0, first_create + args.timeout - time.monotonic()),
        poll_interval_s=0.1,
    )
    window = counts.wait_quiet(quiet_s=2.0, timeout_s=60.0) - before
    own = Counter({("POST", PLURAL, "", "201"): len(created)})
    own.update(("POST", PLURAL, "", why.split()[0]) for why in refused.values())
    return Applied(
        created=created,
        create_durations=durations,
        first_create=first_create,
        create_seconds=create_seconds,
        window=window,
        requests=operator_requests(
            window,
            background_per_s=background,
            seconds=time.monotonic() - first_create,
            own=own,
        ),
        cpu_seconds=sampler.cpu_seconds() - cpu_before,
        control_plane_cpu_seconds=(
            cpu_seconds_of(run.control_plane.records()) - control_plane_cpu_before
        ),
        refused=refused,
    )


def delete_all(
    run: Run, custom: client.CustomObjectsApi, sampler: ProcessSampler,
    project_watch: ProjectWatch, expected: int,
) -> tuple[float | None, int, float]:  # fmt: skip
    """Delete every project at once; (seconds until the last was gone, how many were
    not, the operator's CPU seconds meanwhile)."""
    deleting, cpu_before = time.monotonic(), sampler.cpu_seconds()
    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, run.namespace, PLURAL)
    wait_until(
        lambda: project_watch.count("deleted") >= expected,
        timeout_s=run.args.timeout,
        poll_interval_s=0.1,
    )
    cpu_seconds = sampler.cpu_seconds() - cpu_before
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, run.namespace, PLURAL)
    left = cast(dict[str, Any], listed)["items"]
    last = max(project_watch.deleted.values(), default=None)
    return (None if last is None else last - deleting), len(left), cpu_seconds


def since_create(times: dict[str, float], created: dict[str, float]) -> list[float]:
    return [times[name] - done for name, done in created.items() if name in times]


def measure(run: Run) -> Figures:
    """Everything between a started control plane and its stop."""
    args, kubeconfig = run.args, run.control_plane.kubeconfig
    apply_crds(kubeconfig, crd_dir=CRD_DIR)
    for namespace in (run.namespace, f"{run.namespace}-alone"):
        create_namespace(kubeconfig, namespace)
    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
    run.operator.start()
    # The first project also waits for the operator to start; the second is alone.
    for name in ("warm-up", "alone"):
        lone = lone_project_latency(
            custom, namespace=f"{run.namespace}-alone", name=name,
            artifacts_uri=run.artifacts_uri, timeout_s=args.timeout,
        )  # fmt: skip
    sampler = ProcessSampler(pid=run.operator.pid, interval_s=args.sample_seconds)
    sampler.start()
    rss_start = sampler.last_rss
    counts = ApiServerMetrics(run.control_plane)
    background = counts.rate_over(seconds=args.idle_seconds)
    # Its own client: the watch holds a connection for as long as it runs.
    project_watch = ProjectWatch(
        config.new_client_from_config(config_file=str(kubeconfig)), run.namespace
    )
    project_watch.start()
    applied = apply_all(run, custom, counts, sampler, project_watch, background)
    passes, pass_seconds = scrape_operator_passes(run.metrics_port)
    deletion_seconds, not_deleted, cpu_delete = delete_all(
        run, custom, sampler, project_watch, expected=len(applied.created)
    )
    sampler.stop()
    project_watch.stop()
    if project_watch.error:
        print(f"warning: {project_watch.error}")
    if applied.refused:
        name, why = next(iter(applied.refused.items()))
        print(f"warning: {len(applied.refused)} creates refused, the first ({name}): {why}")

    first_status = since_create(project_watch.first_status, applied.created)
    passed = since_create(project_watch.define_passed, applied.created)
    every_one_passed = len(passed) == args.projects
    mb, per = 1024 * 1024, max(len(applied.created), 1)
    return Figures(
        projects=args.projects,
        created=len(applied.created),
        create_seconds=applied.create_seconds,
        create_p50_ms=1000 * (percentile(applied.create_durations, 50) or 0.0),
        lone_first_status_seconds=lone,
        first_status_p50=percentile(first_status, 50),
        first_status_p95=percentile(first_status, 95),
        first_status_max=max(first_status, default=None),
        define_p50=percentile(passed, 50),
        define_p95=percentile(passed, 95),
        all_past_define_seconds=(
            max(project_watch.define_passed.values()) - applied.first_create
            if every_one_passed
            else None
        ),
        no_status=args.projects - len(first_status),
        not_past_define=args.projects - len(passed),
        rss_start_mb=rss_start / mb,
        rss_peak_mb=sampler.peak_rss / mb,
        rss_end_mb=sampler.last_rss / mb,
        cpu_seconds_run=applied.cpu_seconds,
        cpu_seconds_delete=cpu_delete,
        control_plane_cpu_seconds_run=applied.control_plane_cpu_seconds,
        reconcile_passes=passes,
        reconcile_seconds=pass_seconds,
        api_requests_per_project=sum(applied.requests.values()) / per,
        deletion_seconds=deletion_seconds,
        not_deleted=not_deleted,
        stages_at_end=dict(Counter(project_watch.stage.values()).most_common()),
        requests_per_project={
            request_name(*key): count / per for key, count in applied.requests.most_common()
        },
        apiserver_mean_ms=applied.window.mean_ms(),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="creates per second; 0: as fast as one client can"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds from the first create for every project to pass Define (then it is "
        "left behind), and again for every project to be deleted",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=3600.0,
        help="the operator's DISTILL_POLL_SECONDS: how often it re-polls a (dry, pending) job",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="idle window measuring the API server's background requests",
    )
    parser.add_argument("--sample-seconds", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (operator and API server logs)"
    )
    args = parser.parse_args(argv)
    if args.projects < 1 or args.rate < 0 or args.timeout <= 0 or args.idle_seconds <= 0:
        parser.error(
            "--projects must be at least 1, --rate at least 0, --timeout and --idle-seconds over 0"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Kept short: the control plane's state and logs; kept on failure for a look.
    work_dir = Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/tmp"))
    run = Run(args=args, work_dir=work_dir)
    started, load_before = time.monotonic(), os.getloadavg()
    try:
        run.control_plane.start()
        try:
            figures = measure(run)
        finally:
            run.operator.stop()
            run.control_plane.stop()
    except BaseException:
        print(f"the run failed; logs kept in {work_dir}")
        raise
    header = [
        f"mode: {MODE}; DISTILL_POLL_SECONDS={args.poll_seconds:g}",
        f"load average (1 min) before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        f"{args.projects} projects, one client, "
        + (f"{args.rate:g} creates/s" if args.rate else "creates as fast as it can"),
    ]
    print_table(figures, header=header)
    results = {
        "mode": MODE,
        "machine": machine_info(load_before=load_before),
        "settings": {
            **vars(args),
            "out": str(args.out),
            "operator_env": run.operator_env() | {"DISTILL_ARTIFACTS_URI": "<temp dir>"},
        },
        "method": {
            "first_status": "create response → first watch event with a status the operator "
            "wrote (bench clock)",
            "define_passed": "create response → first watch event with status.stages[0] "
            "Define Succeeded",
            "api_requests": "increase of apiserver_request_total from the first create until "
            "the API server is quiet after the last Define, less the bench's creates, the "
            "background rate of an idle window, WATCH and non-resource requests",
            "rss": "psutil resident set of the operator process, sampled",
        },
        "figures": asdict(figures) | {"left_behind": figures.left_behind},
        "targets": {
            name: {"value": value, "met": met} for name, (value, met) in figures.targets().items()
        },
        "wall_seconds": round(time.monotonic() - started, 1),
        # The bench shares the CPUs with what it measures: its own share, watch included.
        "bench_cpu_seconds": round(sum(os.times()[:2]), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    if args.keep:
        print(f"logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if all(met for _, met in figures.targets().values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
