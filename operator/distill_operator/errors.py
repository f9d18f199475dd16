"""The operator's error types: each says how the caller should react, not where it arose.

A transient fault is retried with backoff; a permanent one is reported (a condition with a
reason and a message) and not retried; anything else escaping is a bug.
"""

from __future__ import annotations


class DistillError(Exception):
    """Base of every error the operator raises on purpose."""


class TransientError(DistillError):
    """Retrying later may succeed (a dependency is down, busy or mid-restart).

    Attributes:
        delay: Seconds the caller should wait before the next try.
    """

    def __init__(self, message: str, *, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class UnreachableError(TransientError):
    """A backend (Ray's dashboard, the Kubernetes API) could not be reached or answered 5xx."""


class PermanentError(DistillError):
    """Retrying the same request cannot succeed; someone has to change something."""


class LaunchError(PermanentError):
    """The platform refused a stage job as specified (an invalid RayJob, a bad name)."""
