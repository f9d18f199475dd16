"""The example manifest, and the bad ones every layer must refuse.

Shared by the unit tests (pydantic) and the cluster tests (the real API server), so the
two layers are held to the same table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).parents[1] / "examples" / "intent-classifier.yaml"
DELETE = object()


def example_manifest(name: str = "intent-classifier", **overrides: Any) -> dict[str, Any]:
    """The example with ``overrides`` applied: dotted paths, ``DELETE`` removes a key."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["name"] = name
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[leaf]
        elif isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = copy.deepcopy(value)
    return manifest


@dataclass(frozen=True)
class BadManifest:
    """A manifest the API server refuses; ``field`` and ``words`` must be in its message."""

    id: str
    overrides: dict[str, Any]
    field: str
    words: str


REFUSED = [
    BadManifest("missing-bar", {"spec.bar": DELETE}, "spec.bar", "Required"),
    BadManifest("threshold-out-of-range", {"spec.bar.threshold": 1.5}, "spec.bar.threshold", "1"),
    BadManifest("unknown-metric", {"spec.bar.metric": "vibes"}, "spec.bar.metric", "vibes"),
    BadManifest("unknown-ray-mode", {"spec.ray.mode": "slurm"}, "spec.ray.mode", "slurm"),
    BadManifest(
        "negative-deadline", {"spec.policy.deadlineSeconds": -5},
        "spec.policy.deadlineSeconds", "1",
    ),
    BadManifest(
        "student-larger-than-teacher",
        {"spec.students.candidates.1.parameters": 90_000_000},
        "spec.students.candidates", "fewer parameters than the teacher",
    ),
    BadManifest(
        "inline-api-key", {"spec.teacher.apiKey": "sk-live-123"},
        "spec.teacher.apiKey", "Secret",
    ),
    BadManifest(
        "malformed-artifact-uri", {"spec.artifacts.uri": "/tmp/no-scheme"},
        "spec.artifacts.uri", "should match",
    ),
    # Our own:
    BadManifest(
        "one-student-only",
        {"spec.students.candidates": [{"name": "tiny", "preset": "tiny"}]},
        "spec.students.candidates", "2",
    ),
    BadManifest(
        "duplicate-candidate-names",
        {"spec.students.candidates.1.name": "tiny"},
        "spec.students.candidates", "Duplicate",
    ),
    BadManifest(
        "openai-without-endpoint",
        {"spec.teacher.backend": "openai",
         "spec.teacher.apiKeySecretRef": {"name": "teacher-key", "key": "api-key"},
         "spec.investigate.alternatives": [
             {"name": "terse", "kind": "prompt_variant", "prompt": "Label only."}]},
        "spec.teacher.endpoint", "endpoint",
    ),
    BadManifest(
        "quantized-api-teacher",
        {"spec.teacher.backend": "anthropic", "spec.teacher.model": "claude",
         "spec.teacher.apiKeySecretRef": {"name": "teacher-key", "key": "api-key"}},
        "spec.investigate.alternatives", "local teacher",
    ),
    BadManifest(
        "off-the-shelf-without-model",
        {"spec.investigate.alternatives": [{"name": "small", "kind": "off_the_shelf"}]},
        "spec.investigate.alternatives[0].model", "needs model",
    ),
    BadManifest(
        "prompt-variant-without-prompt",
        {"spec.investigate.alternatives": [{"name": "terse", "kind": "prompt_variant"}]},
        "spec.investigate.alternatives[0].prompt", "needs prompt",
    ),
    BadManifest(
        "python-metric-without-function", {"spec.bar.metric": "python"},
        "spec.bar.metricFunction", "metricFunction",
    ),
    BadManifest(
        "candidate-with-preset-and-config",
        {"spec.students.candidates.0.config": {"n_layer": 2}},
        "spec.students.candidates[0].preset", "exactly one of",
    ),
    BadManifest(
        "rayjob-without-image", {"spec.ray.mode": "rayjob"}, "spec.ray.image", "rayjob needs",
    ),
    BadManifest(
        "rayjob-with-cluster-secrets",
        {"spec.ray": {"mode": "rayjob", "image": "ray:2", "secretDelivery": "cluster"}},
        "spec.ray.secretDelivery", "for mode submit",
    ),
    BadManifest(
        "no-alternatives", {"spec.investigate.alternatives": []},
        "spec.investigate.alternatives", "1",
    ),
    BadManifest(
        "unknown-lr-schedule", {"spec.students.training.lrSchedule": "step"},
        "spec.students.training.lrSchedule", "step",
    ),
    BadManifest(
        "validation-fraction-over-half", {"spec.students.training.validationFraction": 0.9},
        "spec.students.training.validationFraction", "0.5",
    ),
    BadManifest(
        "router-deployment-on-any-port",
        {"spec.launch.router": {"platform": "kubernetes", "port": 0}},
        "spec.launch.router.port", "needs a fixed port",
    ),
    BadManifest(
        "unknown-router-platform", {"spec.launch.router.platform": "nomad"},
        "spec.launch.router.platform", "nomad",
    ),
]  # fmt: skip
