"""The Helm chart (charts/distill-operator): lint, values schema, CRD copy, and what it grants.

helm is built from the Go module proxy on first use (hack/build-helm.sh), cached by
version, unless ``HELM`` names a binary. Rendered manifests are applied to the session's
control plane by server-side apply and read back: the Deployment, the RBAC objects, and
``kubectl auth can-i`` as the operator's ServiceAccount; the ServiceMonitor meets
prometheus-operator's real CRD (``DISTILL_PROMETHEUS_CRDS``, else fetched from the Go module
proxy by hack/fetch-prometheus-crds.sh). Cluster-scoped objects are named after the run and
deleted afterwards; CRDs are deleted at the end of the session unless they were there
before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from distill_operator import api
from distill_operator.devstack import K8S_VERSION, apply_crds, kubectl
from distill_operator.devstack.operator_process import OperatorProcess
from distill_operator.devstack.procs import wait_until
from distill_operator.devstack.settings import cache_root

from .projects import RAY_IMAGE, Projects, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "distill-operator"
CRD_FILE = "distill.dev_distillationprojects.yaml"
HELM_VERSION = "3.19.0"
FIELD_MANAGER = "distill-chart-test"
LIVENESS = "http://0.0.0.0:8080/healthz"
# What every operator container is given after its scope and peering flags, by default.
OBSERVABILITY = [
    "--liveness",
    LIVENESS,
    "--log-format",
    "json",
    "--metrics-address",
    "0.0.0.0:8081",
]
PROMETHEUS_OPERATOR_VERSION = "0.85.0"  # the Makefile's
DASHBOARD = CHART / "dashboards" / "distill-operator.json"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)
Helm = Callable[..., subprocess.CompletedProcess[str]]


def grants(group: str, resource: str, verbs: str) -> set[Grant]:
    return {(group, resource, verb) for verb in verbs.split()}


# What the operator's code calls (see the chart's "distill-operator.rules"), and no more.
OPERATOR_GRANTS = (
    grants("distill.dev", "distillationprojects", "get list watch patch")
    | grants("distill.dev", "distillationprojects/status", "patch update")
    | grants("", "events", "create")
    | grants("", "secrets", "get")
    | grants("", "configmaps", "get create update")
    | grants("", "services", "create patch delete")
    | grants("apps", "deployments", "get create delete")
    | grants("ray.io", "rayjobs", "get create delete")
)
CLUSTER_WIDE_PEERING_GRANTS = (
    OPERATOR_GRANTS
    | grants("apiextensions.k8s.io", "customresourcedefinitions", "list watch")
    | grants("kopf.dev", "clusterkopfpeerings", "list watch patch")
)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run helm: ``HELM``, else the cached build of HELM_VERSION (built when missing)."""
    binary = os.environ.get("HELM")
    if not binary:
        dest = cache_root() / "helm" / f"v{HELM_VERSION}"
        if not (dest / ".complete").is_file():
            subprocess.run(
                ["bash", str(REPO / "hack" / "build-helm.sh"), HELM_VERSION, str(dest)],
                check=True,
                timeout=1800,
            )
        binary = str(dest / "bin" / "helm")
    home = tmp_path_factory.mktemp("helm-home")  # keep the user's helm config out of it
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    return run


def render(helm: Helm, release: str, namespace: str, *sets: str) -> str:
    """``helm template`` of the chart, for Kubernetes K8S_VERSION (the test cluster's)."""
    args = [arg for setting in sets for arg in ("--set", setting)]
    return helm(
        "template", release, str(CHART), "--namespace", namespace,
        "--kube-version", K8S_VERSION, *args,
    ).stdout  # fmt: skip


def documents(manifests: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifests) if doc]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def granted(rules: Iterable[dict[str, Any]]) -> set[Grant]:
    return {
        grant
        for rule in rules
        for grant in product(rule.get("apiGroups", []), rule["resources"], rule["verbs"])
    }


def container_args(docs: Iterable[dict[str, Any]]) -> list[str]:
    args: list[str] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


@pytest.fixture(scope="session")
def chart_crds(kubeconfig: str) -> Iterator[list[str]]:
    """The chart's crds/ (the project CRD, kopf's peerings), applied; new ones deleted after."""
    names = [
        f"customresourcedefinition.apiextensions.k8s.io/{doc['metadata']['name']}"
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in documents(path.read_text())
    ]
    existing = {
        name for name in names if kubectl(kubeconfig, "get", name, check=False).returncode == 0
    }
    installed = apply_crds(kubeconfig, crd_dir=CHART / "crds")
    yield installed
    created = [name for name in names if name not in existing]
    if created:
        kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", *created, check=False)


@pytest.fixture
def apply_manifests(kubeconfig: str) -> Iterator[Callable[[str], None]]:
    """Server-side apply rendered manifests; everything applied is deleted afterwards."""
    applied: list[str] = []

    def apply(manifests: str) -> None:
        applied.append(manifests)
        kubectl(
            kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
            "-f", "-", input=manifests,
        )  # fmt: skip

    yield apply
    for manifests in reversed(applied):
        kubectl(
            kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            input=manifests, check=False,
        )  # fmt: skip


def get(kubeconfig: str, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)
    return found


def can_i(kubeconfig: str, user: str, verb: str, resource: str, *scope: str) -> bool:
    """``kubectl auth can-i`` as ``user`` (impersonated by the admin kubeconfig)."""
    result = kubectl(
        kubeconfig, "auth", "can-i", verb, resource, *scope, f"--as={user}", check=False
    )
    answer = result.stdout.split()[:1]
    assert answer in (["yes"], ["no"]), f"can-i {verb} {resource}: {result.stderr}"
    return answer == ["yes"]


def assert_restricted_pod(kubeconfig: str, namespace: str, pod_spec: dict[str, Any]) -> None:
    """The API server admits ``pod_spec`` under Pod Security ``restricted`` (enforced)."""
    kubectl(
        kubeconfig, "label", "--overwrite", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted",
    )  # fmt: skip

    def dry_run(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "restricted-", "namespace": namespace},
            "spec": spec,
        }
        return kubectl(
            kubeconfig, "create", "--dry-run=server", "-o", "name", "-f", "-",
            input=json.dumps(pod), check=False,
        )  # fmt: skip

    # The label reaches the admission plugin through an informer: wait until a pod with
    # no security context at all is refused, so that the check below is not vacuous.
    bare = {"containers": [{"name": "bare", "image": "busybox"}]}
    assert wait_until(
        lambda: "PodSecurity" in dry_run(bare).stderr, timeout_s=30, poll_interval_s=0.5
    ), "Pod Security admission never enforced restricted in the namespace"
    admitted = dry_run(pod_spec)
    assert admitted.returncode == 0, admitted.stderr


@pytest.mark.parametrize(
    "sets", [(), ("rbac.clusterWide=true,replicaCount=2",)], ids=["default", "cluster-wide"]
)
def test_the_chart_lints_strictly(helm: Helm, sets: tuple[str, ...]) -> None:
    args = [arg for setting in sets for arg in ("--set", setting)]
    result = helm("lint", "--strict", "--kube-version", K8S_VERSION, str(CHART), *args)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_the_charts_crd_is_the_generated_one_byte_for_byte() -> None:
    chart_copy = CHART / "crds" / CRD_FILE
    assert chart_copy.read_bytes() == (REPO / "crds" / CRD_FILE).read_bytes(), (
        f"{chart_copy} differs from crds/{CRD_FILE}: run `make crds`"
    )


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicaCount=-1", "replicaCount"),
        ("nonsense=1", "nonsense"),
        ("rbac.clusterwide=true", "clusterwide"),  # a misspelt nested key
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("logFormat=yaml", "logFormat"),
        ("metrics.port=0", "port"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("metrics.dashboard.lables.team=ml", "lables"),
    ],
)
def test_values_outside_the_schema_fail_the_render_naming_the_value(
    helm: Helm, setting: str, named: str
) -> None:
    result = helm(
        "template", "r", str(CHART), "--kube-version", K8S_VERSION, "--set", setting, check=False
    )
    assert result.returncode != 0, f"--set {setting} rendered:\n{result.stdout}"
    assert "schema" in result.stderr and named in result.stderr, result.stderr


def test_the_flags_follow_scope_and_replicas(helm: Helm) -> None:
    assert container_args(documents(render(helm, "r", "ops"))) == [
        "--namespace", "ops", "--standalone", *OBSERVABILITY,
    ]  # fmt: skip

    docs = documents(
        render(helm, "r", "ops", "watchNamespaces={team-a,team-b}", "peering.enabled=true")
    )
    assert container_args(docs) == [
        "--namespace", "team-a", "--namespace", "team-b",
        "--peering", "r-distill-operator", *OBSERVABILITY,
    ]  # fmt: skip
    for kind in ("Role", "RoleBinding", "KopfPeering"):
        assert sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == kind) == [
            "team-a", "team-b",
        ], kind  # fmt: skip
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "r-distill-operator", "namespace": "ops"}
        ]
    for role in (d for d in docs if d["kind"] == "Role"):
        assert granted(role["rules"]) == OPERATOR_GRANTS | grants(
            "kopf.dev", "kopfpeerings", "list watch patch"
        )

    docs = documents(render(helm, "r", "ops", "rbac.clusterWide=true,replicaCount=2"))
    assert container_args(docs) == [
        "--all-namespaces", "--peering", "r-distill-operator", *OBSERVABILITY,
    ]  # fmt: skip

    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "KopfPeering")]
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "r-distill-operator"

    quiet = documents(render(helm, "r", "ops", "metrics.enabled=false,logFormat=text"))
    assert container_args(quiet)[-4:] == ["--liveness", LIVENESS, "--log-format", "text"]
    assert not [d for d in quiet if d["kind"] == "Service"], "no metrics Service"


def test_a_shared_filesystem_store_mounts_into_the_operator_as_the_ray_user(helm: Helm) -> None:
    """kind's file:// store: the operator and the Ray pods write the same directories."""
    volume = {"name": "artifacts", "hostPath": {"path": "/var/distill-artifacts"}}
    mount = {"name": "artifacts", "mountPath": "/var/distill-artifacts"}
    manifests = helm(
        "template", "r", str(CHART), "--kube-version", K8S_VERSION,
        "--set", "runAsUser=1000,runAsGroup=1000",
        "--set-json", f"extraVolumes=[{json.dumps(volume)}]",
        "--set-json", f"extraVolumeMounts=[{json.dumps(mount)}]",
    ).stdout  # fmt: skip
    pod = one(documents(manifests), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 1000
    assert volume in pod["volumes"] and {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert mount in pod["containers"][0]["volumeMounts"]

    refused = helm(
        "template", "r", str(CHART), "--kube-version", K8S_VERSION, "--set", "runAsUser=0",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "runAsUser" in refused.stderr, refused.stderr


def test_the_default_install_is_restricted_and_least_privileged(
    helm: Helm,
    kubeconfig: str,
    namespace: str,
    run_id: str,
    chart_crds: list[str],
    kuberay_crds: list[str],
    apply_manifests: Callable[[str], None],
) -> None:
    release = f"ns{run_id}"
    name = f"{release}-distill-operator"
    apply_manifests(render(helm, release, namespace))

    deployment = get(kubeconfig, "-n", namespace, "deployment", name)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/distill-dev/distill-operator:{APP_VERSION}"
    assert container["command"] == ["python", "-m", "distill_operator"]
    assert container["args"] == ["--namespace", namespace, "--standalone", *OBSERVABILITY]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DISTILL_RAY_ADDRESS"] == "http://ray-head-svc:8265"
    assert env["DISTILL_POLL_SECONDS"] == "5"
    assert env["DISTILL_JOBS_IMAGE"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
        assert container[probe]["httpGet"]["port"] == "health"
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    metrics = get(kubeconfig, "-n", namespace, "service", f"{name}-metrics")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert metrics["spec"]["selector"].items() <= labels.items(), "selects the operator pods"
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "protocol": "TCP", "targetPort": "metrics"}
    ]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert_restricted_pod(kubeconfig, namespace, pod)

    role = get(kubeconfig, "-n", namespace, "role", name)
    assert granted(role["rules"]) == OPERATOR_GRANTS
    binding = get(kubeconfig, "-n", namespace, "rolebinding", name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": name,
    }

    operator = f"system:serviceaccount:{namespace}:{name}"
    here = ("-n", namespace)
    assert can_i(kubeconfig, operator, "get", "distillationprojects.distill.dev", *here)
    assert can_i(kubeconfig, operator, "watch", "distillationprojects.distill.dev", *here)
    assert can_i(
        kubeconfig, operator, "update", "distillationprojects.distill.dev", "--subresource=status",
        *here,
    )  # fmt: skip
    assert can_i(kubeconfig, operator, "create", "deployments.apps", *here)
    assert can_i(kubeconfig, operator, "create", "rayjobs.ray.io", *here)
    assert can_i(kubeconfig, operator, "create", "services", *here)
    assert not can_i(kubeconfig, operator, "delete", "secrets", *here)
    assert not can_i(kubeconfig, operator, "list", "secrets", *here)
    assert not can_i(kubeconfig, operator, "list", "pods", *here)
    assert not can_i(kubeconfig, operator, "update", "deployments.apps", *here)
    # Only the watched namespace: nothing elsewhere, nothing cluster-wide.
    assert not can_i(
        kubeconfig, operator, "get", "distillationprojects.distill.dev", "-n", "default"
    )
    assert not can_i(kubeconfig, operator, "list", "distillationprojects.distill.dev", "-A")
    assert not can_i(kubeconfig, operator, "list", "customresourcedefinitions.apiextensions.k8s.io")


def test_cluster_wide_with_two_replicas_peers_through_a_cluster_kopf_peering(
    helm: Helm,
    kubeconfig: str,
    namespace: str,
    run_id: str,
    chart_crds: list[str],
    kuberay_crds: list[str],
    apply_manifests: Callable[[str], None],
) -> None:
    release = f"cw{run_id}"
    name = f"{release}-distill-operator"
    apply_manifests(render(helm, release, namespace, "rbac.clusterWide=true,replicaCount=2"))

    deployment = get(kubeconfig, "-n", namespace, "deployment", name)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--all-namespaces", "--peering", name, *OBSERVABILITY]
    assert_restricted_pod(kubeconfig, namespace, deployment["spec"]["template"]["spec"])

    assert get(kubeconfig, "clusterkopfpeerings.kopf.dev", name)["metadata"]["name"] == name
    assert granted(get(kubeconfig, "clusterrole", name)["rules"]) == CLUSTER_WIDE_PEERING_GRANTS
    binding = get(kubeconfig, "clusterrolebinding", name)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]

    operator = f"system:serviceaccount:{namespace}:{name}"
    for scope in (("-n", namespace), ("-n", "default")):
        assert can_i(kubeconfig, operator, "get", "distillationprojects.distill.dev", *scope)
        assert can_i(kubeconfig, operator, "create", "deployments.apps", *scope)
        assert can_i(kubeconfig, operator, "create", "rayjobs.ray.io", *scope)
        assert not can_i(kubeconfig, operator, "delete", "secrets", *scope)
    assert can_i(kubeconfig, operator, "list", "distillationprojects.distill.dev", "-A")
    assert can_i(kubeconfig, operator, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(kubeconfig, operator, "patch", "clusterkopfpeerings.kopf.dev")
    assert not can_i(kubeconfig, operator, "list", "pods", "-A")
    assert not can_i(kubeconfig, operator, "list", "secrets", "-A")


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("metrics.enabled=false,metrics.serviceMonitor.enabled=true", "needs metrics.enabled"),
        ("metrics.port=8080", "kopf's liveness endpoint"),
    ],
)
def test_metrics_settings_that_cannot_work_fail_the_render_saying_why(
    helm: Helm, setting: str, words: str
) -> None:
    result = helm(
        "template", "r", str(CHART), "--kube-version", K8S_VERSION, "--set", setting, check=False
    )
    assert result.returncode != 0 and words in result.stderr, result.stderr


@pytest.fixture(scope="session")
def prometheus_crds(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """prometheus-operator's real ServiceMonitor CRD, applied; deleted after if it was new."""
    crd_dir = os.environ.get("DISTILL_PROMETHEUS_CRDS")
    if not crd_dir:
        crd_dir = str(tmp_path_factory.mktemp("prometheus-crds"))
        subprocess.run(
            [str(REPO / "hack" / "fetch-prometheus-crds.sh"), PROMETHEUS_OPERATOR_VERSION, crd_dir],
            check=True,
            timeout=600,
        )
    name = "customresourcedefinition.apiextensions.k8s.io/servicemonitors.monitoring.coreos.com"
    existed = kubectl(kubeconfig, "get", name, check=False).returncode == 0
    assert name in apply_crds(kubeconfig, crd_dir=Path(crd_dir))
    yield
    if not existed:
        kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", name, check=False)


def test_the_service_monitor_and_the_dashboard_apply_to_the_real_api_and_find_the_operator(
    helm: Helm,
    kubeconfig: str,
    namespace: str,
    run_id: str,
    chart_crds: list[str],
    prometheus_crds: None,
    apply_manifests: Callable[[str], None],
) -> None:
    release = f"mon{run_id}"
    name = f"{release}-distill-operator"
    apply_manifests(
        render(
            helm, release, namespace,
            "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=kps",
            "metrics.dashboard.enabled=true,metrics.dashboard.annotations.grafana_folder=Distill",
        )
    )  # fmt: skip

    monitor = get(kubeconfig, "-n", namespace, "servicemonitors.monitoring.coreos.com", name)
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s"}
    # What the ServiceMonitor selects: the metrics Service, by its labels and port name.
    selected = get(
        kubeconfig, "-n", namespace, "services", "-l",
        ",".join(f"{k}={v}" for k, v in monitor["spec"]["selector"]["matchLabels"].items()),
    )["items"]  # fmt: skip
    assert [s["metadata"]["name"] for s in selected] == [f"{name}-metrics"]
    assert [p["name"] for p in selected[0]["spec"]["ports"]] == ["metrics"]

    dashboards = get(kubeconfig, "-n", namespace, "configmaps", "-l", "grafana_dashboard=1")
    (config_map,) = dashboards["items"]
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "Distill"
    dashboard = json.loads(config_map["data"]["distill-operator.json"])
    assert dashboard == json.loads(DASHBOARD.read_text()), "the chart's file, unchanged"


def test_the_dashboard_is_grafana_json_with_a_query_on_every_panel() -> None:
    """Which metric names the queries use is checked against a real operator's scrape in
    test_operator_metrics.py."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "distill-operator"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_the_operator_runs_projects_with_nothing_but_the_charts_role(
    helm: Helm,
    kubeconfig: str,
    namespace: str,
    run_id: str,
    chart_crds: list[str],
    kuberay_crds: list[str],
    apply_manifests: Callable[[str], None],
    tmp_path: Path,
) -> None:
    """The API server authorizes with RBAC: the operator, holding only its ServiceAccount's
    token, stalls a project on a missing Secret, launches a RayJob, writes status and
    events, and lets deleted projects go (stopping the RayJob), with no request refused."""
    release = f"rb{run_id}"
    apply_manifests(render(helm, release, namespace))
    admin = config.new_client_from_config(config_file=kubeconfig)
    token = (
        client.CoreV1Api(admin)
        .create_namespaced_service_account_token(
            f"{release}-distill-operator",
            namespace,
            {"spec": {"expirationSeconds": 3600}},
        )
        .status.token
    )
    as_operator = tmp_path / "operator-kubeconfig"
    settings = yaml.safe_load(Path(kubeconfig).read_text())
    user = settings["contexts"][0]["context"]["user"]
    settings["users"] = [{"name": user, "user": {"token": token}}]  # nothing of the admin's
    as_operator.write_text(yaml.safe_dump(settings))

    operator = OperatorProcess(
        kubeconfig=as_operator,
        ray_address="http://127.0.0.1:1",  # rayjob projects only: never used
        state_dir=tmp_path / "operator",
        argv=(
            sys.executable, "-m", "distill_operator", "--namespace", namespace,
            "--standalone", "--log-format", "json",
        ),
        extra_env={"DISTILL_POLL_SECONDS": "1"},
    )  # fmt: skip
    custom = client.CustomObjectsApi(admin)
    projects = Projects(custom, namespace, (tmp_path / "artifacts").as_uri())
    operator.start()
    try:
        rayjob = {"spec.ray.mode": "rayjob", "spec.ray.image": RAY_IMAGE}
        projects.create("launches", **rayjob)
        projects.create(
            "keyless",
            **rayjob,
            **{
                "spec.teacher.backend": "openai",
                "spec.teacher.model": "gpt-x",
                "spec.teacher.endpoint": "http://127.0.0.1:1/v1",
                "spec.teacher.apiKeySecretRef": {"name": "absent", "key": "api-key"},
                "spec.investigate.alternatives": [
                    {"name": "terse", "kind": "prompt_variant", "prompt": "Label only."}
                ],
            },
        )
        source = wait_for(
            "Source's RayJob", lambda: projects.stage("launches", "Source").get("job") or {}
        )
        wait_for("the RayJob", lambda: rayjob_exists(custom, namespace, source["id"]))
        stalled = wait_for(
            "the missing Secret to stall Define",
            lambda: (
                projects.condition("keyless", "Stalled").get("status") == "True"
                and projects.condition("keyless", "Stalled")
            ),
        )
        assert "absent" in stalled["message"]
        events = client.CoreV1Api(admin).list_namespaced_event(namespace).items
        reasons = {event.reason for event in events}
        assert "JobSubmitted" in reasons, reasons

        for name in ("launches", "keyless"):
            projects.delete(name)
        wait_for("both projects to go", lambda: not custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL)["items"])  # fmt: skip
        wait_for(
            "the RayJob's deletion", lambda: not rayjob_exists(custom, namespace, source["id"])
        )
    finally:
        operator.stop()
    log = operator.log_text()
    assert "Forbidden" not in log and " 403" not in log and '"status": 403' not in log, log[-3000:]


def rayjob_exists(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    try:
        custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
