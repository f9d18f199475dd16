"""Fixtures of the workload tests: the tiny model, local API servers, an in-process Ray.

Everything is real and local: the model is built in code, servers bind 127.0.0.1, and
Ray runs in this process on loopback only, with a temporary directory of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from distill_jobs.records import PromptRecord, prompt_hash
from distill_jobs.teachers import RetryPolicy

# Short waits so retry tests take milliseconds; the production defaults are untouched.
FAST_RETRY = RetryPolicy(base_seconds=0.01, max_seconds=0.05, max_retry_after_seconds=0.05)
SERVED_MODEL = "tiny-teacher"
SERVER_KEY = "test-key"


def prompt(text: str, *, copy: int = 0, system: str | None = None) -> PromptRecord:
    """A one-turn PromptRecord (with a system turn when given)."""
    messages = [{"role": "system", "content": system}] if system else []
    return PromptRecord(
        id=prompt_hash(text),
        messages=[*messages, {"role": "user", "content": text}],
        prompt_text=text,
        slice="arithmetic",
        copy=copy,
    )


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON line per row (a string row is written as it is: a malformed line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def single_torch_thread() -> Iterator[None]:
    """One torch thread: the tiny model's ops are too small to gain from more, and on
    shared cores thread contention makes generation many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny teacher (random weights), built once per session."""
    from distill_jobs.tiny import build_tiny_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_tiny_model(directory=tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path, single_torch_thread: None) -> Any:
    """The tiny model loaded once, for every server of the session."""
    from distill_jobs.teachers.generation import LocalGenerator

    return LocalGenerator.load(model=str(tiny_model_dir), device="cpu")


@pytest.fixture
def api_server(tiny_generator: Any) -> Iterator[Callable[..., Any]]:
    """Start ApiServers serving the tiny model: ``api_server(**ApiServer options)``.

    Returns the running :class:`~distill_jobs.apiserver.ServerThread` (``.url`` for the
    OpenAI SDK, ``.root`` for the Anthropic SDK); all are stopped after the test.
    """
    from distill_jobs.apiserver import ApiServer, ServerThread

    with ExitStack() as servers:

        def start(**options: Any) -> ServerThread:
            server = ApiServer(generator=tiny_generator, model_name=SERVED_MODEL, **options)
            return servers.enter_context(ServerThread(server))

        yield start


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """Ray in this process via ``raycluster.connect``, loopback only, token auth off."""
    import ray

    from distill_jobs.raycluster import connect

    if ray.is_initialized():  # another suite of this session started one: share it
        yield
        return
    # A short private temp dir: Ray's socket paths must stay under the 107-byte limit.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)
        for key, value in {
            "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": ray_tmp,
            "HF_HUB_OFFLINE": "1",
        }.items():
            patch.setenv(key, value)
        connect(num_cpus=2)
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)
