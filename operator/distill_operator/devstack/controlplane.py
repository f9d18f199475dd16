"""A local Kubernetes control plane (etcd + kube-apiserver on loopback), or a user's cluster.

Flags follow controller-runtime's envtest: no controller-manager and no scheduler, so
there is no garbage collection and namespaces never finish terminating. Authentication
is a static token for user ``admin`` in ``system:masters``; authorization is RBAC, as
in a real cluster.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from distill_operator.devstack.binaries import ControlPlaneBinaries, resolve_binaries
from distill_operator.devstack.errors import DevStackError, KubectlError, StartupError
from distill_operator.devstack.kubectl import kubectl
from distill_operator.devstack.probes import http_get, unverified_tls
from distill_operator.devstack.procs import ManagedProcess, ProcessRecord, free_ports, wait_until
from distill_operator.devstack.settings import DevStackSettings

_ADMIN_USER = "admin"
_ADMIN_GROUP = "system:masters"
_SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_CONTEXT = "distill-dev"


class Cluster(Protocol):
    """What the tests and ``distill dev up`` need of a cluster, local or not."""

    @property
    def kubeconfig(self) -> Path:
        """Path of a kubeconfig with admin rights on the cluster."""
        ...

    @property
    def is_local(self) -> bool:
        """Whether this process started the cluster (and :meth:`stop` ends it)."""
        ...

    def start(self) -> None:
        """Make the cluster answer, or raise :class:`StartupError`."""
        ...

    def stop(self) -> None:
        """End what :meth:`start` started."""
        ...


class ExistingCluster:
    """A cluster someone else runs (``KUBECONFIG``, e.g. kind): used, never stopped."""

    def __init__(self, *, kubeconfig: Path) -> None:
        """Point at the cluster.

        Args:
            kubeconfig: Its kubeconfig.
        """
        self._kubeconfig = kubeconfig

    @property
    def kubeconfig(self) -> Path:
        """The user's kubeconfig."""
        return self._kubeconfig

    @property
    def is_local(self) -> bool:
        """Always False: this process did not start it."""
        return False

    def start(self) -> None:
        """Check the cluster answers ``/readyz``.

        Raises:
            StartupError: It does not; the message says how to use a local one instead.
        """
        try:
            kubectl(self._kubeconfig, "get", "--raw", "/readyz")
        except KubectlError as error:
            raise StartupError(
                f"KUBECONFIG={self._kubeconfig} names a cluster that does not answer "
                f"/readyz ({error}); unset KUBECONFIG to start a local control plane"
            ) from error

    def stop(self) -> None:
        """Nothing to stop: the cluster is not ours."""


class ControlPlane:
    """etcd and kube-apiserver on 127.0.0.1, free ports, state in one directory."""

    def __init__(
        self,
        *,
        state_dir: Path,
        settings: DevStackSettings | None = None,
        binaries: ControlPlaneBinaries | None = None,
        fate_share: bool = True,
    ) -> None:
        """Describe the control plane; nothing starts until :meth:`start`.

        Args:
            state_dir: Holds etcd's data, certificates, logs and the kubeconfig. Emptied
                of a previous run's data on start: every start is a fresh cluster.
            settings: Timings; defaults when None.
            binaries: Binaries to run; resolved (and built if need be) when None.
            fate_share: Stop the processes when this process dies (tests); False keeps
                them running after it exits (``distill dev up``).
        """
        self.state_dir = state_dir
        self.settings = settings or DevStackSettings()
        self._binaries = binaries
        self._fate_share = fate_share
        self._token = secrets.token_hex(16)
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._server: str | None = None

    @property
    def kubeconfig(self) -> Path:
        """Path of the admin kubeconfig, written by :meth:`start`."""
        return self.state_dir / "kubeconfig"

    @property
    def is_local(self) -> bool:
        """Always True: :meth:`stop` ends this control plane."""
        return True

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:PORT``.

        Raises:
            RuntimeError: Not started.
        """
        if self._server is None:
            raise RuntimeError("the control plane was not started")
        return self._server

    @property
    def token(self) -> str:
        """The admin bearer token."""
        return self._token

    def records(self) -> list[ProcessRecord]:
        """Records of the started processes, in stop order (kube-apiserver first)."""
        started = [self._apiserver, self._etcd]
        return [process.record for process in started if process is not None]

    def start(self) -> None:
        """Start etcd, then kube-apiserver; wait for ``/readyz``; write the kubeconfig.

        Raises:
            BinariesUnavailableError: The binaries are missing and cannot be built.
            StartupError: A process did not become ready; the message ends with its log.
        """
        binaries = self._binaries or resolve_binaries(version=self.settings.k8s_version)
        for stale in ("etcd", "certs"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, apiserver_port = free_ports(3)
        try:
            self._start_etcd(binaries, client_port=etcd_port, peer_port=peer_port)
            self._start_apiserver(binaries, etcd_port=etcd_port, port=apiserver_port)
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise

    def restart_apiserver(self, *, downtime_s: float = 0.0) -> None:
        """Stop kube-apiserver alone, wait, and start it again as it was.

        The same port, etcd (so every object survives), serving certificate, service
        account key and token: clients holding the kubeconfig reconnect unchanged, as
        they would to a real cluster's API server coming back from a restart.

        Args:
            downtime_s: How long the API server stays down.

        Raises:
            RuntimeError: Not started.
            DevStackError: The old kube-apiserver survived SIGKILL.
            StartupError: The new one did not become ready.
        """
        if self._apiserver is None:
            raise RuntimeError("the control plane was not started")
        survivors = self._apiserver.stop(
            timeout_s=self.settings.stop_timeout_s, poll_interval_s=self.settings.poll_interval_s
        )
        if survivors:
            raise DevStackError(f"kube-apiserver survived SIGKILL: {sorted(survivors)}")
        time.sleep(downtime_s)
        self._run_apiserver(self._apiserver)

    def _start_etcd(
        self, binaries: ControlPlaneBinaries, *, client_port: int, peer_port: int
    ) -> None:
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._etcd = ManagedProcess(
            name="etcd",
            argv=[
                str(binaries.etcd),
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # A throwaway store: durability only costs time.
                "--unsafe-no-fsync=true",
            ],
            log_path=self.state_dir / "etcd.log",
            env=os.environ,
            fate_share=self._fate_share,
        )
        self._etcd.start()
        self._wait_ready(self._etcd, url=f"{client_url}/health", expect='"health":"true"')

    def _start_apiserver(
        self, binaries: ControlPlaneBinaries, *, etcd_port: int, port: int
    ) -> None:
        cert_dir = self.state_dir / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        key_file = self._write_service_account_key()
        token_file = self.state_dir / "tokens.csv"
        token_file.write_text(f'{self._token},{_ADMIN_USER},{_ADMIN_USER},"{_ADMIN_GROUP}"\n')
        token_file.chmod(0o600)
        self._apiserver = ManagedProcess(
            name="kube-apiserver",
            argv=[
                str(binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--cert-dir={cert_dir}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={_SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer=https://127.0.0.1:{port}",
                f"--service-account-key-file={key_file}",
                f"--service-account-signing-key-file={key_file}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={token_file}",
                "--allow-privileged=true",
                # No controller-manager creates "default" service accounts, so this
                # plugin would reject every pod (envtest disables it for the same reason).
                "--disable-admission-plugins=ServiceAccount",
            ],
            log_path=self.state_dir / "kube-apiserver.log",
            env=os.environ,
            fate_share=self._fate_share,
        )
        self._server = f"https://127.0.0.1:{port}"
        self._run_apiserver(self._apiserver)

    def _run_apiserver(self, apiserver: ManagedProcess) -> None:
        apiserver.start()
        self._wait_ready(
            apiserver,
            url=f"{self.server}/readyz",
            expect="ok",
            bearer_token=self._token,
            ssl_context=unverified_tls(),
        )

    def _write_service_account_key(self) -> Path:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = self.state_dir / "service-account.key"
        path.write_bytes(
            key.private_bytes(
                encoding=serialization.Encoding.PEM,
                format=serialization.PrivateFormat.TraditionalOpenSSL,
                encryption_algorithm=serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def _wait_ready(
        self,
        process: ManagedProcess,
        *,
        url: str,
        expect: str,
        bearer_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        def answered() -> bool:
            if not process.is_running():
                return True  # stop polling; reported below
            answer = http_get(
                url,
                timeout_s=self.settings.probe_timeout_s,
                bearer_token=bearer_token,
                ssl_context=ssl_context,
            )
            return answer is not None and answer.status == 200 and expect in answer.body

        ready = wait_until(
            answered,
            timeout_s=self.settings.control_plane_start_timeout_s,
            poll_interval_s=self.settings.poll_interval_s,
        )
        if ready and process.is_running():
            return
        why = (
            f"exited with code {process.exit_code()}"
            if not process.is_running()
            else f"did not answer {url} within {self.settings.control_plane_start_timeout_s} s"
        )
        raise StartupError(
            f"{process.name} {why}; last lines of {process.log_path}:\n"
            f"{process.log_tail(lines=self.settings.log_tail_lines)}"
        )

    def _serving_ca(self) -> Path | None:
        # kube-apiserver writes a self-signed CA and a serving cert for 127.0.0.1 into
        # one file; use it as the trust root when it verifies, which kubectl, the
        # kubernetes client and kopf all accept.
        bundle = self.state_dir / "certs" / "apiserver.crt"
        if not bundle.is_file():
            return None
        context = ssl.create_default_context(cafile=str(bundle))
        answer = http_get(
            f"{self.server}/readyz",
            timeout_s=self.settings.probe_timeout_s,
            bearer_token=self._token,
            ssl_context=context,
        )
        return bundle if answer is not None and answer.status == 200 else None

    def _write_kubeconfig(self) -> None:
        ca = self._serving_ca()
        cluster: dict[str, object] = {"server": self.server}
        if ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
        else:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": _CONTEXT, "cluster": cluster}],
            "users": [{"name": _ADMIN_USER, "user": {"token": self._token}}],
            "contexts": [{"name": _CONTEXT, "context": {"cluster": _CONTEXT, "user": _ADMIN_USER}}],
            "current-context": _CONTEXT,
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after the grace).

        Raises:
            DevStackError: A process survived SIGKILL.
        """
        survivors: set[int] = set()
        for process in (self._apiserver, self._etcd):
            if process is not None:
                survivors |= process.stop(
                    timeout_s=self.settings.stop_timeout_s,
                    poll_interval_s=self.settings.poll_interval_s,
                )
        if survivors:
            raise DevStackError(f"control plane processes survived SIGKILL: {sorted(survivors)}")

    def __enter__(self) -> ControlPlane:
        """Start on entering a ``with`` block."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop on leaving it."""
        self.stop()


def existing_kubeconfig(
    *, environ: Mapping[str, str] | None = None, ignore: Path | None = None
) -> Path | None:
    """The kubeconfig of a cluster the user asked for through ``KUBECONFIG``, if any.

    Args:
        environ: Environment to read; the process's by default.
        ignore: A kubeconfig that does not count (the dev stack's own, left behind by a
            stopped stack and still exported in the user's shell).

    Returns:
        The first existing file named by ``KUBECONFIG``, or None.
    """
    env = os.environ if environ is None else environ
    for entry in env.get("KUBECONFIG", "").split(os.pathsep):
        if not entry:
            continue
        path = Path(entry).expanduser()
        if path.is_file():
            if ignore is not None and path.resolve() == ignore.resolve():
                return None
            return path
    return None


def cluster_from_environment(
    *,
    state_dir: Path,
    settings: DevStackSettings | None = None,
    environ: Mapping[str, str] | None = None,
    fate_share: bool = True,
) -> ControlPlane | ExistingCluster:
    """The user's cluster when ``KUBECONFIG`` names one, else a local control plane.

    Args:
        state_dir: The local control plane's directory (unused for an existing cluster).
        settings: Timings; defaults when None.
        environ: Environment to read; the process's by default.
        fate_share: Whether a local control plane dies with this process.
    """
    own = state_dir / "kubeconfig"
    existing = existing_kubeconfig(environ=environ, ignore=own)
    if existing is not None:
        return ExistingCluster(kubeconfig=existing)
    return ControlPlane(state_dir=state_dir, settings=settings, fate_share=fate_share)
