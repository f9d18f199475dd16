"""Readiness probes over plain HTTP(S), without a client library."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpAnswer:
    """What an endpoint answered."""

    status: int
    body: str


def http_get(
    url: str,
    *,
    timeout_s: float,
    bearer_token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpAnswer | None:
    """GET ``url``; None when nothing answers (refused, reset, timed out, TLS failure).

    An HTTP error status is an answer, not None.

    Args:
        url: The address.
        timeout_s: Socket timeout.
        bearer_token: Sent as ``Authorization: Bearer``.
        ssl_context: For https; the system's default when None.
    """
    request = urllib.request.Request(url)
    if bearer_token is not None:
        request.add_header("Authorization", f"Bearer {bearer_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=ssl_context) as response:
            return HttpAnswer(status=response.status, body=response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return HttpAnswer(status=error.code, body=error.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def unverified_tls() -> ssl.SSLContext:
    """A TLS context that trusts any certificate: only for polling a server we started."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
