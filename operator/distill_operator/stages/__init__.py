"""The seven stages, one module each, and the pipeline that orders them."""

from collections.abc import Mapping
from types import MappingProxyType

from distill_operator.api import Stage
from distill_operator.stages import define, investigate, iterate, launch, look, source, teach
from distill_operator.stages.base import Facts, StageDefinition, Verdict

PIPELINE: tuple[StageDefinition, ...] = tuple(
    module.DEFINITION for module in (define, investigate, source, teach, iterate, look, launch)
)
BY_STAGE: Mapping[Stage, StageDefinition] = MappingProxyType({d.stage: d for d in PIPELINE})

__all__ = ["BY_STAGE", "PIPELINE", "Facts", "StageDefinition", "Verdict"]
