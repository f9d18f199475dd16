"""A real key-checking teacher endpoint for the secret tests: ``python -m
distill_jobs.apiserver`` requiring an API key, with its access log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from .projects import unused_loopback_port, wait_for

SERVED_MODEL = "keyed-teacher"
KEY_ENV = "KEYED_TEACHER_API_KEY"
# aiohttp's access log: `"POST /v1/chat/completions HTTP/1.1" 200`.
ANSWERED = re.compile(r'"POST /v1/chat/completions HTTP/[\d.]+" 200 ')
REFUSED = re.compile(r'"POST /v1/chat/completions HTTP/[\d.]+" 401 ')


class KeyedTeacher:
    """``python -m distill_jobs.apiserver`` requiring ``key``, with its access log."""

    def __init__(self, *, model: Path, key: str, log_path: Path) -> None:
        self.port = unused_loopback_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        command = [sys.executable, "-m", "distill_jobs.apiserver", "--model", str(model),
                   "--served-model-name", SERVED_MODEL, "--port", str(self.port),
                   "--api-key-env", KEY_ENV]  # fmt: skip
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, KEY_ENV: key}, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_until_serving(self) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, self.log_text()
            try:
                return requests.get(f"{self.endpoint}/models", timeout=2).status_code == 401
            except requests.ConnectionError:
                return False

        wait_for("the teacher endpoint to listen", answers, timeout_s=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
