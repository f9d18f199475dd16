"""Every manifest in examples/ is one a user can apply as it is.

Each YAML document goes to the session's API server as a server-side dry-run apply with
strict field validation (a misspelt field is an error, not a warning), with the
project's CRD, and Argo CD's Application CRD fetched from its Go module
(hack/fetch-argocd-crds.sh), installed. The operator's own validation must accept every
project too; each ``rayjob`` project's RayJob, made by the operator's own launcher,
must pass KubeRay's schema; and the examples must cover every teacher backend, Ray mode
and router platform, so that a new one without an example fails here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config

from distill_operator.api.spec import ProjectSpec, RayMode, RouterPlatform, TeacherBackend
from distill_operator.devstack import apply_crds, kubectl
from distill_operator.kube import Kube
from distill_operator.launch.base import JobSpec, JobState
from distill_operator.reconciler import OperatorSettings, Runtime, parse_spec
from distill_operator.stages import define
from distill_operator.stages.base import Facts

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GITOPS_PROJECT = EXAMPLES / "gitops" / "project"
ARGOCD_VERSION = "3.6.1"
FIELD_MANAGER = "distill-examples-test"
# Input to `kustomize build`, never sent to an API server; checked by building it.
BUILD_CONFIG_GROUP = "kustomize.config.k8s.io/"


@dataclass(frozen=True)
class Document:
    """One YAML document of an example file."""

    path: Path
    index: int
    body: dict[str, Any]

    @property
    def id(self) -> str:
        name = self.body.get("metadata", {}).get("name", "")
        return f"{self.path.relative_to(EXAMPLES)}#{self.index}:{self.body.get('kind')}/{name}"


def example_documents() -> list[Document]:
    """Every non-empty document of every YAML file under examples/."""
    files = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))
    return [
        Document(path, index, body)
        for path in files
        for index, body in enumerate(yaml.safe_load_all(path.read_text()))
        if body
    ]


DOCUMENTS = example_documents()
APPLIED = [doc for doc in DOCUMENTS if not doc.body["apiVersion"].startswith(BUILD_CONFIG_GROUP)]
PROJECTS = [doc for doc in DOCUMENTS if doc.body["kind"] == "DistillationProject"]


def dry_run_apply(kubeconfig: str, namespace: str, body: dict[str, Any]) -> str:
    """Server-side apply ``body`` in ``namespace`` as a dry run; kubectl's verdict.

    The namespace replaces any the example names (Argo CD's, a kustomization's): the
    schema is under test here, not whether that namespace exists.
    """
    body = {**body, "metadata": {**body.get("metadata", {}), "namespace": namespace}}
    result = kubectl(
        kubeconfig,
        "apply", "--server-side", "--dry-run=server", "--validate=strict",
        f"--field-manager={FIELD_MANAGER}", "-n", namespace, "-f", "-",
        input=json.dumps(body), check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"the API server refused it:\n{result.stderr}"
    return result.stdout


def spec_of(document: Document) -> ProjectSpec:
    spec, problem = parse_spec(document.body["spec"])
    assert spec is not None, f"{document.id}: {problem}"
    return spec


@pytest.fixture(scope="module")
def argocd_crds(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Argo CD's Application CRD, from its Go module, installed by server-side apply.

    On a cluster that already has Argo CD (KUBECONFIG naming an existing cluster) its
    own CRD is used, never replaced.
    """
    name = "customresourcedefinition.apiextensions.k8s.io/applications.argoproj.io"
    if kubectl(kubeconfig, "get", name, "-o", "name", check=False).returncode == 0:
        return [name]
    crd_dir = tmp_path_factory.mktemp("argocd-crds")
    subprocess.run(
        ["bash", str(REPO / "hack" / "fetch-argocd-crds.sh"), ARGOCD_VERSION, str(crd_dir)],
        check=True,
        timeout=900,
    )
    installed = apply_crds(kubeconfig, crd_dir=crd_dir)
    assert name in installed
    return installed


@pytest.fixture
def runtime(kubeconfig: str) -> Iterator[Runtime]:
    """The operator's runtime against the session's cluster: it picks the launchers."""
    api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    with api_client:
        yield Runtime(kube=Kube(api_client), settings=OperatorSettings())


@pytest.mark.parametrize("document", APPLIED, ids=lambda d: d.id)
def test_the_api_server_accepts_every_example_document(
    document: Document, argocd_crds: list[str], kubeconfig: str, namespace: str
) -> None:
    verdict = dry_run_apply(kubeconfig, namespace, document.body)
    assert "serverside-applied (server dry run)" in verdict


def test_the_gitops_kustomization_builds_into_objects_the_api_server_accepts(
    argocd_crds: list[str], kubeconfig: str, namespace: str
) -> None:
    built = kubectl(kubeconfig, "kustomize", str(GITOPS_PROJECT)).stdout
    objects = [doc for doc in yaml.safe_load_all(built) if doc]
    assert {o["kind"] for o in objects} == {"DistillationProject"}
    for body in objects:
        assert body["metadata"]["labels"]["team"] == "support-ml"
        dry_run_apply(kubeconfig, namespace, body)


@pytest.mark.parametrize("document", PROJECTS, ids=lambda d: d.id)
def test_the_operator_accepts_every_example_project_and_define_passes(document: Document) -> None:
    """Beyond the schema: one-sentence task, a rollout that only grows (Secrets present)."""
    verdict = define.decide(spec_of(document), Facts())
    assert verdict.met, f"{document.id}: {verdict.reason}: {verdict.message}"


def test_the_examples_cover_every_teacher_backend_ray_mode_and_router_platform() -> None:
    specs = [spec_of(doc) for doc in PROJECTS]
    assert {s.teacher.backend for s in specs} == set(TeacherBackend)
    assert {s.ray.mode for s in specs} == set(RayMode)
    assert {s.launch.router.platform for s in specs} == set(RouterPlatform)


def test_every_secret_an_example_names_is_an_example_with_a_placeholder() -> None:
    secrets = {
        doc.body["metadata"]["name"]: doc.body.get("stringData", {})
        for doc in DOCUMENTS
        if doc.body["kind"] == "Secret"
    }
    for doc in PROJECTS:
        spec = spec_of(doc)
        for ref in (spec.teacher.api_key_secret_ref, spec.artifacts.credentials_secret_ref):
            if ref is not None:
                assert ref.key in secrets.get(ref.name, {}), f"{doc.id}: no Secret {ref.name}"
    for name, data in secrets.items():
        assert all(value.startswith("REPLACE-") for value in data.values()), name


def test_the_examples_index_lists_every_example_file() -> None:
    index = (EXAMPLES / "README.md").read_text()
    unlisted = [p.name for p in EXAMPLES.glob("*.yaml") if f"({p.name})" not in index]
    assert not unlisted, "add them to examples/README.md's table"


@pytest.mark.parametrize(
    "document", [d for d in PROJECTS if spec_of(d).ray.mode == RayMode.RAYJOB], ids=lambda d: d.id
)
def test_kuberay_accepts_the_rayjob_the_operator_makes_for_every_rayjob_example(
    document: Document, kuberay_crds: list[str], runtime: Runtime, namespace: str
) -> None:
    """The rayClusterSpec is free-form in our CRD: KubeRay's schema is what checks it."""
    launcher = runtime.launcher(spec_of(document), "rayjob")
    job = JobSpec(
        job_id=f"{document.body['metadata']['name']}-teach-0"[:47],
        namespace=namespace,
        entrypoint="python -m distill_jobs.teach --input file:///var/distill-artifacts/x.json",
    )
    observed = launcher.submit(job)  # LaunchError names what KubeRay refused
    assert observed.state == JobState.PENDING  # created; no KubeRay controller runs here
