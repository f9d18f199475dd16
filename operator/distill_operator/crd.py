"""API models → the CustomResourceDefinition YAML in ``crds/``.

Pydantic emits JSON Schema (2020-12); a CRD needs a *structural* OpenAPI v3.0 schema:
no ``$ref``, no ``anyOf`` with null, ``exclusiveMinimum`` as a flag, no titles. This
module does that translation and adds what only a CRD has: CEL rules, printer columns,
the status subresource, short names.
"""

from __future__ import annotations

from typing import Any

import yaml

from distill_operator import api

# Keys of JSON Schema that a structural schema keeps as they are.
_KEPT = {
    "type", "description", "enum", "default", "pattern", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "maxProperties", "items", "properties",
    "required",
    "additionalProperties", "x-kubernetes-validations", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s, keeping the referring field's own description."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return _resolve(target, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Translate one resolved JSON Schema node into a structural OpenAPI node."""
    node = dict(node)
    variants = node.pop("anyOf", None)
    if variants is not None:  # Optional[X]: absent means null in Kubernetes
        concrete = [v for v in variants if v.get("type") != "null"]
        if len(concrete) != 1:
            raise ValueError(f"unsupported union in the API: {variants}")
        merged = dict(concrete[0])
        merged.update(node)
        node = merged
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            node[flag] = node.pop(bound)
            node[bound] = True
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEPT or k.startswith("exclusive")}
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out = {
            k: v
            for k, v in out.items()
            if k in ("description", "x-kubernetes-preserve-unknown-fields")
        }
        out["type"] = "object"
        return out
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _structural(v) for k, v in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(out["additionalProperties"])
    elif "additionalProperties" in out:
        del out["additionalProperties"]  # structural schemas prune unknown fields anyway
    if "items" in out:
        out["items"] = _structural(out["items"])
    return out


def openapi_schema(model: type[api.ProjectSpec] | type[api.ProjectStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


PRINTER_COLUMNS = [
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Student", "type": "string", "jsonPath": ".status.student.name"},
    {"name": "Score", "type": "number", "jsonPath": ".status.student.score"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # -o wide: where the debugging map points when the project fails or is weak.
    {"name": "Fault", "type": "string", "jsonPath": ".status.diagnosis.stage", "priority": 1},
]


def crd() -> dict[str, Any]:
    """The DistillationProject CRD as a dict."""
    spec_schema = openapi_schema(api.ProjectSpec)
    status_schema = openapi_schema(api.ProjectStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["distill"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A DistillationProject walks a teacher-to-student "
                            "distillation through the seven DISTILL stages: Define, "
                            "Investigate, Source, Teach, Iterate, Look, Launch.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


CRD_FILE = f"{api.GROUP}_{api.PLURAL}.yaml"


def render() -> str:
    header = "# Generated by `distill crd` from distill_operator.api: do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
