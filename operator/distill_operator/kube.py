"""The operator's thin Kubernetes adapter: read a project, patch its status, look up
Secrets, publish report ConfigMaps. Sync client calls, run in a thread so kopf's event
loop never blocks."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from distill_operator import api
from distill_operator.errors import PermanentError, TransientError, UnreachableError


def load_api_client(*, connections: int = 10) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG),
    with up to ``connections`` kept open (one per thread that may call at once)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


async def _call(action: str, function: Callable[..., Any], *args: Any) -> Any:
    """Run one blocking client call in a thread. A refused or dropped connection (the API
    server restarting) is transient: the project's loop retries instead of crashing."""
    try:
        return await asyncio.to_thread(function, *args)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise UnreachableError(f"{action}: Kubernetes API unreachable: {error}") from error


class Kube:
    """The calls the handlers make, each a coroutine."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    async def get_project(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await _call(
                f"reading {namespace}/{name}",
                self._custom.get_namespaced_custom_object,
                api.GROUP, api.VERSION, namespace, api.PLURAL, name,
            )  # fmt: skip
            return cast(dict[str, Any], found)
        except ApiException as error:
            if error.status == 404:
                return None
            raise TransientError(f"reading {namespace}/{name}: {error.reason}") from error

    async def replace_status(self, *, project: dict[str, Any], status: dict[str, Any]) -> None:
        """Write the whole status (PUT on the status subresource).

        The object's resourceVersion goes along, so a write based on a stale read is
        refused (409) instead of overwriting newer status: the next pass reads again.
        """
        meta = project["metadata"]
        body = {
            "apiVersion": project["apiVersion"],
            "kind": project["kind"],
            "metadata": {"name": meta["name"], "resourceVersion": meta["resourceVersion"]},
            "status": status,
        }
        try:
            await _call(
                f"writing status of {meta['namespace']}/{meta['name']}",
                self._custom.replace_namespaced_custom_object_status,
                api.GROUP, api.VERSION, meta["namespace"], api.PLURAL, meta["name"], body,
            )  # fmt: skip
        except ApiException as error:
            if error.status == 404:
                return  # deleted meanwhile: nothing left to report on
            where = f"{meta['namespace']}/{meta['name']}"
            # A conflict means a newer object (often kopf's finalizer): read it at once.
            delay = 0.0 if error.status == 409 else 10.0
            raise TransientError(
                f"writing status of {where}: {error.status} {error.reason}: {error.body}",
                delay=delay,
            ) from error

    async def missing_secret_keys(
        self, *, namespace: str, refs: list[tuple[str, str]]
    ) -> tuple[str, ...]:
        """``name/key`` of each referenced Secret key that does not exist."""
        missing = []
        for name, key in refs:
            try:
                secret = await _call(
                    f"reading Secret {name}", self._core.read_namespaced_secret, name, namespace
                )
            except ApiException as error:
                if error.status != 404:
                    raise TransientError(f"reading Secret {name}: {error.reason}") from error
                missing.append(f"{name}/{key}")
                continue
            if key not in (secret.data or {}) and key not in (secret.string_data or {}):
                missing.append(f"{name}/{key}")
        return tuple(missing)

    async def secret_value(self, *, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded; a missing Secret or key is a PermanentError."""
        try:
            secret = await _call(
                f"reading Secret {name}", self._core.read_namespaced_secret, name, namespace
            )
        except ApiException as error:
            if error.status == 404:
                raise PermanentError(f"Secret {namespace}/{name} does not exist") from error
            raise TransientError(f"reading Secret {name}: {error.reason}") from error
        encoded = (secret.data or {}).get(key)
        if encoded is None:
            raise PermanentError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(encoded).decode()

    async def config_map_annotation(self, *, namespace: str, name: str, key: str) -> str | None:
        """One annotation of a ConfigMap; None when the ConfigMap or the annotation is absent."""
        try:
            found = await _call(
                f"reading ConfigMap {name}", self._core.read_namespaced_config_map, name, namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise TransientError(f"reading ConfigMap {name}: {error.reason}") from error
        annotations = (found.metadata.annotations if found.metadata else None) or {}
        value = annotations.get(key)
        return str(value) if value is not None else None

    async def apply_config_map(
        self, *, owner: dict[str, Any], name: str, data: dict[str, str], labels: dict[str, str],
        annotations: dict[str, str],
    ) -> None:  # fmt: skip
        """Create or replace a ConfigMap owned by the project (garbage-collected with it
        where a controller manager runs).

        Raises:
            PermanentError: the API server refused it as given (too large, forbidden).
            TransientError: anything that may pass on a later try.
        """
        meta = owner["metadata"]
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=meta["namespace"],
                labels=labels,
                annotations=annotations,
                owner_references=[
                    client.V1OwnerReference(
                        api_version=owner["apiVersion"], kind=owner["kind"],
                        name=meta["name"], uid=meta["uid"],
                    )
                ],
            ),
            data=data,
        )  # fmt: skip
        namespace = meta["namespace"]
        try:
            try:
                await _call(
                    f"creating ConfigMap {namespace}/{name}",
                    self._core.create_namespaced_config_map, namespace, body,
                )  # fmt: skip
            except ApiException as error:
                if error.status != 409:
                    raise
                await _call(
                    f"replacing ConfigMap {namespace}/{name}",
                    self._core.replace_namespaced_config_map, name, namespace, body,
                )  # fmt: skip
        except ApiException as error:
            message = f"ConfigMap {namespace}/{name}: {error.status} {error.reason}"
            if error.status in (400, 403, 413, 422):
                raise PermanentError(message) from error
            raise TransientError(message) from error
