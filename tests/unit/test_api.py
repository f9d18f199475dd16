"""The API models and the CRD generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from distill_operator import crd
from distill_operator.api import ProjectSpec
from distill_operator.reconciler import format_validation_error
from manifests import REFUSED, BadManifest, example_manifest

CRD_PATH = Path(__file__).parents[2] / "crds" / crd.CRD_FILE


def test_crds_directory_is_generated_from_the_current_models() -> None:
    assert CRD_PATH.read_text() == crd.render(), "crds/ is out of date: run `make crds`"


def test_the_example_is_a_valid_spec() -> None:
    spec = ProjectSpec.model_validate(example_manifest()["spec"])
    assert spec.students.candidates[0].name == "tiny"


def test_training_defaults_to_cosine_decay_and_holds_back_a_validation_split() -> None:
    manifest = example_manifest(**{"spec.students.training": {}})
    training = ProjectSpec.model_validate(manifest["spec"]).students.training
    assert (training.lr_schedule, training.weight_decay, training.seed) == ("cosine", 0.0, 0)
    assert (training.checkpoint_every_steps, training.validation_fraction) == (50, 0.1)
    assert training.max_sequence_length == 512


def test_a_candidate_can_bring_the_teachers_tokenizer() -> None:
    manifest = example_manifest(**{"spec.students.candidates.0.tokenizer": "/models/teacher"})
    spec = ProjectSpec.model_validate(manifest["spec"])
    assert spec.students.candidates[0].tokenizer == "/models/teacher"
    assert spec.students.candidates[1].tokenizer is None


def test_kubectl_explain_tells_what_the_training_schedule_does() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    students = schema["properties"]["students"]["properties"]
    training = students["training"]["properties"]
    assert training["lrSchedule"]["enum"] == ["constant", "linear", "cosine"]
    assert "warm-up" in training["lrSchedule"]["description"]
    assert "never trained on" in training["validationFraction"]["description"]
    tokenizer = students["candidates"]["items"]["properties"]["tokenizer"]["description"]
    assert "soft labels" in tokenizer.lower()


@pytest.mark.parametrize("bad", REFUSED, ids=lambda b: b.id)
def test_the_operator_refuses_every_bad_manifest_too(bad: BadManifest) -> None:
    """Specs that reach the operator some other way meet the same rules as CEL."""
    with pytest.raises(ValidationError) as caught:
        ProjectSpec.model_validate(example_manifest(**bad.overrides)["spec"])
    message = format_validation_error(caught.value)
    assert message.startswith("spec")


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented: list[str] = []

    def walk(node: dict, path: str) -> None:
        for key, child in node.get("properties", {}).items():
            if "description" not in child:
                undocumented.append(f"{path}.{key}")
            walk(child, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], path + "[]")

    walk(schema, "spec")
    assert len(undocumented) < 25, undocumented


def test_the_crd_schema_is_structural() -> None:
    """No $ref, anyOf or titles survive the translation; every node has a type."""
    text = crd.render()
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict) -> None:
        assert "type" in node, node
        for child in node.get("properties", {}).values():
            walk(child)
        if "items" in node:
            walk(node["items"])

    walk(schema)


def test_printer_columns_show_stage_phase_student_score_age_and_wide_the_fault() -> None:
    columns = crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["Stage", "Phase", "Student", "Score", "Age"]
    wide = [c for c in columns if c.get("priority")]
    assert [(c["name"], c["jsonPath"]) for c in wide] == [("Fault", ".status.diagnosis.stage")]
