"""Errors of the local dev stack, one type per way it fails."""

from __future__ import annotations


class DevStackError(Exception):
    """Base of every dev stack failure."""


class BinariesUnavailableError(DevStackError):
    """kube-apiserver, etcd or kubectl can neither be found nor built."""


class StartupError(DevStackError):
    """A component did not become ready; the message quotes the end of its log."""


class KubectlError(DevStackError):
    """A kubectl call exited non-zero; the message carries its stderr."""


class StackStateError(DevStackError):
    """The dev stack's state file is missing, unreadable or describes another stack."""
