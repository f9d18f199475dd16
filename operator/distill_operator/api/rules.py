"""Cross-field rules, written once and enforced twice.

Each :class:`Rule` carries a CEL expression (the API server rejects a manifest that
breaks it) and the same check in Python (the operator refuses a spec that reached it
another way, e.g. a cluster where the CRD is older). A test keeps the two in agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A cross-field check on one object of the spec.

    Attributes:
        cel: the CEL expression, evaluated with ``self`` bound to the object.
        message: what the user sees; it names the field and the fix.
        field_path: the field the message points at, relative to the object (``.bar``).
        holds: the same check in Python, given the validated model.
    """

    cel: str
    message: str
    field_path: str
    holds: Callable[[Any], bool]

    def as_validation(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field_path}


def _schema_with_rules(schema: dict[str, Any], model: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(model, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.as_validation() for rule in rules]


class ApiModel(BaseModel):
    """Base of every spec and status object: camelCase on the wire, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_schema_with_rules,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        broken = [
            f"{rule.field_path}: {rule.message}" for rule in self.rules if not rule.holds(self)
        ]
        if broken:
            raise ValueError("; ".join(broken))
        return self


def _names_are_unique(items: list[Any]) -> list[Any]:
    names = [item.name for item in items]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Duplicate value: names must be unique ({', '.join(duplicates)})")
    return items


# A list keyed by name: x-kubernetes-list-type map on the server, the same check here.
UniqueNames = AfterValidator(_names_are_unique)
