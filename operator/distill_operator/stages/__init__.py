"""The seven stages, one module each, and the pipeline that orders them."""

from collections.abc import Mapping
from types import MappingProxyType

from distill_operator.api import Stage
from distill_operator.stages import define, investigate, iterate, launch, look, source, teach
from distill_operator.stages.base import Facts, StageDefinition, Verdict

# The DISTILL order: how status lists the stages.
PIPELINE: tuple[StageDefinition, ...] = tuple(
    module.DEFINITION for module in (define, investigate, source, teach, iterate, look, launch)
)
BY_STAGE: Mapping[Stage, StageDefinition] = MappingProxyType({d.stage: d for d in PIPELINE})

# The order stages run in: every stage after the stages it builds on. Source (cheap: no
# teacher, no training) runs before Investigate, whose alternatives are judged on
# Source's held-out set; everything costly still waits until Investigate has ruled
# every alternative out.
RUN_ORDER: tuple[Stage, ...] = (
    Stage.DEFINE,
    Stage.SOURCE,
    Stage.INVESTIGATE,
    Stage.TEACH,
    Stage.ITERATE,
    Stage.LOOK,
    Stage.LAUNCH,
)

__all__ = ["BY_STAGE", "PIPELINE", "RUN_ORDER", "Facts", "StageDefinition", "Verdict"]
