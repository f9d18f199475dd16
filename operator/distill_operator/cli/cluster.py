"""What the CLI reads from the cluster: the project, its report ConfigMap, the RayJob or
Deployment of a job and its pods, each failure turned into a :class:`CliError`.

The namespace defaults to the kubeconfig context's, as kubectl (and so a kubectl
plugin) does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from distill_operator import api
from distill_operator.cli.errors import CliError, NotFoundError, UnreachableError

DEFAULT_NAMESPACE = "default"

T = TypeVar("T")


def kubeconfig_path() -> str:
    """``KUBECONFIG`` as it is now (the client library reads it once, at import)."""
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def context_namespace() -> str:
    """The namespace of the kubeconfig's current context, else ``default``.

    Read without contacting the server; a missing or broken kubeconfig is left for the
    first call that needs the server to report.
    """
    try:
        _, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig_path()
        )
    except (config.ConfigException, OSError, TypeError, ValueError):
        return DEFAULT_NAMESPACE
    namespace = ((current or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else DEFAULT_NAMESPACE


class Cluster:
    """The API calls of the CLI. The client is built on first use."""

    @cached_property
    def _api_client(self) -> Any:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            pass  # not in a pod: the kubeconfig
        try:
            path = kubeconfig_path()
            return config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as error:
            raise CliError(f"no cluster to talk to (set KUBECONFIG): {error}") from error

    def project(self, namespace: str, name: str) -> dict[str, Any]:
        """The DistillationProject, status included."""
        custom = client.CustomObjectsApi(self._api_client)
        found = self._call(
            f"project {namespace}/{name}",
            lambda: custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name
            ),
            namespace=namespace,
        )
        return cast(dict[str, Any], found)

    def config_map(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's data."""
        core = client.CoreV1Api(self._api_client)
        found = self._call(
            f"ConfigMap {namespace}/{name}",
            lambda: core.read_namespaced_config_map(name, namespace),
            namespace=namespace,
        )
        return dict(found.data or {})

    def rayjob(self, namespace: str, name: str) -> dict[str, Any]:
        """A KubeRay RayJob (ray.io/v1)."""
        from distill_operator.launch import rayjob  # here: the launch package imports Ray

        custom = client.CustomObjectsApi(self._api_client)
        found = self._call(
            f"RayJob {namespace}/{name}",
            lambda: custom.get_namespaced_custom_object(
                rayjob.GROUP, rayjob.VERSION, namespace, rayjob.PLURAL, name
            ),
            namespace=namespace,
        )
        return cast(dict[str, Any], found)

    def deployment_pods(self, namespace: str, name: str) -> list[str]:
        """The names of the pods a Deployment selects, oldest first."""
        apps = client.AppsV1Api(self._api_client)
        deployment = self._call(
            f"Deployment {namespace}/{name}",
            lambda: apps.read_namespaced_deployment(name, namespace),
            namespace=namespace,
        )
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        core = client.CoreV1Api(self._api_client)
        pods = self._call(
            f"pods of Deployment {namespace}/{name}",
            lambda: core.list_namespaced_pod(namespace, label_selector=selector),
            namespace=namespace,
        )
        metas = [pod.metadata for pod in pods.items if pod.metadata is not None]
        ordered = sorted(metas, key=lambda meta: str(meta.creation_timestamp or ""))
        return [str(meta.name) for meta in ordered]

    def pod_log(self, namespace: str, pod: str, *, follow: bool) -> Iterator[str]:
        """A pod's log, line by line (as it grows, with ``follow``)."""
        core = client.CoreV1Api(self._api_client)
        if not follow:
            text = self._call(
                f"log of pod {namespace}/{pod}",
                lambda: core.read_namespaced_pod_log(pod, namespace),
                namespace=namespace,
            )
            yield from str(text).splitlines()
            return
        response: Any = self._call(
            f"log of pod {namespace}/{pod}",
            lambda: core.read_namespaced_pod_log(
                pod, namespace, follow=True, _preload_content=False
            ),
            namespace=namespace,
        )
        for line in response.stream():  # bytes as they arrive
            yield from line.decode(errors="replace").splitlines()

    def _call(self, what: str, request: Callable[[], T], *, namespace: str) -> T:
        """Run one API request; a 404, a refusal or no answer becomes a CliError."""
        try:
            return request()
        except ApiException as error:
            if error.status == 404:
                if not self._namespace_exists(namespace):
                    raise NotFoundError(f"namespace {namespace} not found") from error
                raise NotFoundError(f"{what} not found") from error
            if error.status in (401, 403):
                raise CliError(f"{what}: not allowed ({error.status} {error.reason})") from error
            raise CliError(f"{what}: {error.status} {error.reason}") from error
        except HTTPError as error:
            host = getattr(self._api_client.configuration, "host", "the API server")
            raise UnreachableError(f"cannot reach {host}: {error}") from error

    def _namespace_exists(self, namespace: str) -> bool:
        """False only when the API server says the namespace does not exist (a user who
        may not read namespaces learns about the object instead)."""

        try:
            client.CoreV1Api(self._api_client).read_namespace(namespace)
        except ApiException as error:
            return bool(error.status != 404)
        return True
