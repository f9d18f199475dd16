"""Kubernetes API failures, in the operator's error types (shared by the launchers that
create Kubernetes objects)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from distill_operator.errors import PermanentError, TransientError, UnreachableError


def api_message(error: ApiException) -> str:
    """The API server's own explanation (``Status.message``), else the raw body."""
    body = str(error.body or "")
    try:
        status = yaml.safe_load(body)  # JSON is YAML
    except yaml.YAMLError:
        return body or str(error.reason)
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return body or str(error.reason)


@contextmanager
def kubernetes_errors(action: str) -> Iterator[None]:
    """Translate API-server failures left unhandled by the caller into the operator's types."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise UnreachableError(f"{action}: Kubernetes API unreachable: {error}") from error
    except ApiException as error:
        status = int(error.status or 0)
        if status >= 500:
            raise UnreachableError(f"{action}: {status}: {api_message(error)}") from error
        if status == 429:
            raise TransientError(f"{action}: throttled: {api_message(error)}") from error
        raise PermanentError(f"{action}: {status}: {api_message(error)}") from error
