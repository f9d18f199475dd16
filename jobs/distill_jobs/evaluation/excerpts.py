"""The spec excerpts of Investigate and Look inputs, parsed with the API's own models.

A malformed excerpt (the operator validated the spec, so this means a hand-written or
stale input) is a ``StageFailure("InvalidInput")`` naming the field, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from distill_jobs.upstream import StageFailure, first_line


def parse_fields(excerpt: Mapping[str, Any], models: Mapping[str, type[BaseModel]]) -> list[Any]:
    """Each ``excerpt[name]`` validated as ``models[name]`` (camelCase JSON), in order; an
    absent field is validated from ``{}`` (its model's defaults, or an error)."""
    parsed = []
    for name, model in models.items():
        try:
            parsed.append(model.model_validate(excerpt.get(name) or {}))
        except ValidationError as error:
            raise StageFailure(
                "InvalidInput", f"the stage input's spec.{name}: {first_line(error)}"
            ) from None
    return parsed


def api_json(model: BaseModel) -> dict[str, Any]:
    """A spec object as the camelCase JSON the operator sends (what make_teacher reads)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class AlternativeSpec:
    """Investigate's excerpt for one alternative.

    Attributes:
        task: the task in one sentence.
        bar, teacher, teach, alternative: the API models of those fields.
        serving: the students' ``Training`` settings, of which only the serving fields
            (``pricePerAcceleratorHour``, ``cpusPerWorker``, ``gpusPerWorker``) are sent:
            a local alternative is measured where, and at the price, a student would be.
    """

    task: str
    bar: Any
    teacher: Any
    teach: Any
    alternative: Any
    serving: Any

    @classmethod
    def parse(cls, excerpt: Mapping[str, Any]) -> AlternativeSpec:
        from distill_operator.api.spec import Alternative, Bar, Teach, Teacher, Training

        bar, teacher, teach, alternative, serving = parse_fields(
            excerpt,
            {
                "bar": Bar,
                "teacher": Teacher,
                "teach": Teach,
                "alternative": Alternative,
                "serving": Training,
            },
        )
        return cls(
            task=str(excerpt.get("task", "")),
            bar=bar,
            teacher=teacher,
            teach=teach,
            alternative=alternative,
            serving=serving,
        )

    @property
    def field(self) -> str:
        """Where the alternative is in the spec, for messages."""
        return f"spec.investigate.alternatives[{self.alternative.name}]"


@dataclass(frozen=True)
class LookSpec:
    """Look's excerpt: the bar, the Look and Source settings, the teacher and Teach."""

    bar: Any
    look: Any
    source: Any
    teacher: Any
    teach: Any

    @classmethod
    def parse(cls, excerpt: Mapping[str, Any]) -> LookSpec:
        from distill_operator.api.spec import Bar, Look, Source, Teach, Teacher

        bar, look, source, teacher, teach = parse_fields(
            excerpt,
            {"bar": Bar, "look": Look, "source": Source, "teacher": Teacher, "teach": Teach},
        )
        return cls(bar=bar, look=look, source=source, teacher=teacher, teach=teach)
