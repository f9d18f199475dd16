"""What can go wrong for a user of the CLI, each a one-line message (never a traceback)."""

from __future__ import annotations


class CliError(Exception):
    """A problem the user can act on; ``main`` prints it on one line and exits 1."""


class NotFoundError(CliError):
    """A project, namespace, report, stage or job that does not exist (yet)."""


class UnreachableError(CliError):
    """The API server or a Ray dashboard did not answer."""
