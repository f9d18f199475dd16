"""docs/api.md: generated from the CRD's schema, complete, and its links lead somewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_operator import apidocs, crd

API_MD = Path(__file__).parents[2] / "docs" / "api.md"
SCHEMA = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def described_fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, str, str]]:
    """(object path, field name, description) of every described field under ``node``."""
    for name, child in node.get("properties", {}).items():
        if "description" in child:
            yield path, name, child["description"]
        element = child.get("items", child)
        suffix = "[]" if "items" in child else ""
        yield from described_fields(element, f"{path}.{name}{suffix}")


def section(text: str, heading: str) -> str:
    """The text under ``### heading`` up to the next heading."""
    start = text.index(f"\n### {heading}\n")
    end = text.find("\n#", start + 1)
    return text[start : end if end != -1 else None]


def unescaped(markdown: str) -> str:
    """The prose as a reader sees it: table and emphasis escapes undone."""
    for escaped, plain in (("\\|", "|"), ("\\*", "*"), ("&lt;", "<"), ("&gt;", ">")):
        markdown = markdown.replace(escaped, plain)
    return markdown.replace("\\\\", "\\")


def test_docs_api_md_is_generated_from_the_current_models() -> None:
    assert API_MD.read_text() == apidocs.render(), "docs/api.md is out of date: run `make docs`"


def test_every_described_spec_and_status_field_is_in_its_section() -> None:
    text = API_MD.read_text()
    fields = [
        *described_fields(SCHEMA["spec"], "spec"),
        *described_fields(SCHEMA["status"], "status"),
    ]
    assert len(fields) > 100
    missing = [
        f"{path}.{name}"
        for path, name, description in fields
        if f"| `{name}`" not in section(text, path)
        or " ".join(description.split()) not in unescaped(section(text, path))
    ]
    assert not missing, missing


def test_every_link_in_the_reference_leads_to_a_section() -> None:
    text = API_MD.read_text()
    anchors = {apidocs.github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets and targets <= anchors, targets - anchors


def test_the_reference_shows_defaults_bounds_and_the_rules_the_api_server_enforces() -> None:
    teacher = unescaped(section(API_MD.read_text(), "spec.teacher"))
    assert "an inline apiKey is refused: store it in a Secret and set apiKeySecretRef" in teacher
    assert "| `topLogprobs` | integer | `20` |" in teacher
    assert "one of `hf`, `openai`, `anthropic`" in teacher
    assert "| `model` **required** |" in teacher
