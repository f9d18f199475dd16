"""What the operator tells a platform team: Prometheus metrics and structured log lines.

Nothing here decides anything. The metrics are derived from the statuses the reconciler
reads and writes and from the jobs it launches (the pure machine is not touched), and
the log lines name the project and the stage they are about.
"""

from distill_operator.telemetry.book import ProjectBook
from distill_operator.telemetry.logs import LOG_FORMATS, about_project, configure_logging
from distill_operator.telemetry.metrics import OperatorMetrics
from distill_operator.telemetry.transitions import AttemptFailed, Changes, Finished, changes

__all__ = [
    "LOG_FORMATS",
    "AttemptFailed",
    "Changes",
    "Finished",
    "OperatorMetrics",
    "ProjectBook",
    "about_project",
    "changes",
    "configure_logging",
]
