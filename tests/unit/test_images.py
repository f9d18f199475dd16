"""The image definitions and the kind config, checked where they can be without a Docker
engine or kind: every file an image copies exists, every extra it installs is one the
project defines, and the kind config is the kind API a user's `kind create` reads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "images").glob("*.Dockerfile"))


def test_there_is_an_image_for_the_operator_and_one_for_the_jobs() -> None:
    assert [path.name for path in DOCKERFILES] == ["jobs.Dockerfile", "operator.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_an_image_copies_files_that_exist_and_installs_extras_the_project_has(
    dockerfile: Path,
) -> None:
    text = dockerfile.read_text()
    copied = [
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
        for source in [w for w in line.split() if not w.startswith("--")][:-1]
    ]
    assert copied and all((REPO / source).exists() for source in copied), copied
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installed = re.findall(r'"\.\[(\w+)\]"', text)
    assert installed and set(installed) <= set(extras), installed
    assert "-c requirements.lock" in text, "pinned to the versions the tests ran with"
    assert re.search(r"^USER (?!root|0\b)", text, flags=re.MULTILINE), "runs as non-root"


def test_the_kind_config_is_a_kind_cluster_whose_nodes_share_the_artifact_store() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert (config["apiVersion"], config["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    for node in config["nodes"]:
        mounts = {m["containerPath"]: m["hostPath"] for m in node["extraMounts"]}
        assert mounts["/var/distill-artifacts"] == "/tmp/distill-artifacts"
