"""Child processes of the dev stack: start detached, find by group or marker, stop.

Stopping works from a pid alone (``distill dev down`` runs in a later process than
``distill dev up``), so identity is a :class:`ProcessRecord`: the pid plus the kernel's
start time of that pid, which guards against signalling a recycled pid. Linux only:
everything here reads ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

_PR_SET_PDEATHSIG = 1


class ProcessRecord(BaseModel):
    """A process the stack started: enough to find and stop it from another process."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    start_ticks: int


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    state: str
    pgid: int
    start_ticks: int


def _read_proc(pid: int) -> _ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return _ProcInfo(pid=pid, state=fields[0], pgid=int(fields[2]), start_ticks=int(fields[19]))


def _all_processes() -> Iterator[_ProcInfo]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _read_proc(int(entry.name))
            if info is not None and info.state != "Z":
                yield info


def record_of(*, name: str, pid: int) -> ProcessRecord:
    """The record of a running process.

    Args:
        name: What the process is, for messages.
        pid: Its pid.

    Raises:
        ProcessLookupError: The process is gone already.
    """
    info = _read_proc(pid)
    if info is None:
        raise ProcessLookupError(f"{name} (pid {pid}) exited right after it started")
    return ProcessRecord(name=name, pid=pid, start_ticks=info.start_ticks)


def pid_alive(pid: int) -> bool:
    """Whether some process with this pid runs (a zombie does not count)."""
    info = _read_proc(pid)
    return info is not None and info.state != "Z"


def is_running(record: ProcessRecord) -> bool:
    """Whether the recorded process (not a later one with its pid) still runs."""
    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our exited child; a zombie is not running.
        os.waitpid(record.pid, os.WNOHANG)
    info = _read_proc(record.pid)
    return info is not None and info.state != "Z" and info.start_ticks == record.start_ticks


def group_members(record: ProcessRecord) -> set[int]:
    """Live pids in the process group the recorded process leads.

    Members started before the leader cannot belong to it: they would be a recycled
    pid's group.
    """
    with contextlib.suppress(ChildProcessError):
        os.waitpid(record.pid, os.WNOHANG)
    return {
        info.pid
        for info in _all_processes()
        if info.pgid == record.pid and info.start_ticks >= record.start_ticks
    }


def pids_with_environ(*, key: str, value: str) -> set[int]:
    """Live pids whose environment holds ``key=value`` (processes we may read)."""
    wanted = f"{key}={value}".encode()
    found: set[int] = set()
    for info in _all_processes():
        try:
            environ = Path(f"/proc/{info.pid}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.add(info.pid)
    return found


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_processes(
    find: Callable[[], set[int]], *, timeout_s: float, poll_interval_s: float
) -> set[int]:
    """SIGTERM what ``find`` returns, wait, then SIGKILL whatever is left.

    ``find`` is asked again on every poll, so processes spawned during shutdown are
    caught too.

    Args:
        find: Returns the live pids to stop.
        timeout_s: Grace after SIGTERM, and again after SIGKILL.
        poll_interval_s: How often ``find`` is asked.

    Returns:
        The pids still alive after SIGKILL and the second wait (empty on success).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + timeout_s
        signalled: set[int] = set()
        while True:
            alive = find()
            if not alive:
                return set()
            # New arrivals get the current signal too; the others are not re-signalled.
            _signal_all(alive - signalled, sig)
            signalled |= alive
            if time.monotonic() >= deadline:
                break
            time.sleep(poll_interval_s)
    return find()


def stop_recorded(record: ProcessRecord, *, timeout_s: float, poll_interval_s: float) -> set[int]:
    """Stop the recorded process's group from any process; tolerate it being gone.

    Returns:
        Pids that survived SIGKILL (empty on success).
    """
    return stop_processes(
        lambda: group_members(record), timeout_s=timeout_s, poll_interval_s=poll_interval_s
    )


def wait_until(ready: Callable[[], bool], *, timeout_s: float, poll_interval_s: float) -> bool:
    """Poll ``ready`` until it returns True or the deadline passes; return the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_interval_s)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now.

    All sockets stay open until every port is chosen, so the ports differ.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def log_tail(path: Path, *, lines: int) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook: the child gets SIGKILL when the thread that started it ends.

    A test session that is killed then takes its processes along instead of leaking
    them. libc is loaded here, before the fork, because the dynamic loader's lock may
    be held by another thread at fork time.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    fate_share: bool,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, stdout and stderr appended to ``log_path``.

    Args:
        argv: The command.
        log_path: Log file; created, or appended to.
        env: The complete environment.
        fate_share: Kill the process when this one dies (tests); False keeps it running
            after the caller exits (``distill dev up``). Linux ties this to the thread
            that started the process: start fate-sharing processes from a thread that
            lives as long as they should (the main thread, in pytest fixtures).
        cwd: Working directory.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            # Own session: signals to our terminal's group do not reach it, and its
            # group id is its pid, which is how it is stopped later.
            start_new_session=True,
            preexec_fn=_die_with_parent() if fate_share else None,
        )


class ManagedProcess:
    """One child process of the stack, started detached and logging to a file."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        fate_share: bool,
        cwd: Path | None = None,
    ) -> None:
        """Describe the process; nothing starts until :meth:`start`.

        Args:
            name: What it is, for messages and state files.
            argv: The command.
            log_path: Where its output goes.
            env: Its complete environment.
            fate_share: Whether it dies with the current process.
            cwd: Working directory.
        """
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env)
        self.fate_share = fate_share
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._record: ProcessRecord | None = None

    @property
    def record(self) -> ProcessRecord:
        """The running process's record.

        Raises:
            RuntimeError: It was never started.
        """
        if self._record is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._record

    def start(self) -> ProcessRecord:
        """Start the process and return its record."""
        self._popen = spawn(
            self.argv,
            log_path=self.log_path,
            env=self.env,
            fate_share=self.fate_share,
            cwd=self.cwd,
        )
        self._record = record_of(name=self.name, pid=self._popen.pid)
        return self._record

    def is_running(self) -> bool:
        """Whether the process runs (False before start and after exit)."""
        if self._popen is None:
            return False
        return self._popen.poll() is None

    def exit_code(self) -> int | None:
        """The exit status, or None while running or before start."""
        return None if self._popen is None else self._popen.poll()

    def stop(self, *, timeout_s: float, poll_interval_s: float) -> set[int]:
        """SIGTERM the process group, then SIGKILL; return pids that survived."""
        if self._record is None:
            return set()
        record = self._record

        def members() -> set[int]:
            self.is_running()  # reap the leader so it does not linger as a zombie
            return group_members(record)

        return stop_processes(members, timeout_s=timeout_s, poll_interval_s=poll_interval_s)

    def kill(self) -> None:
        """SIGKILL the process group at once and reap the leader."""
        if self._record is None or self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._record.pid, signal.SIGKILL)
        self._popen.wait()

    def log_tail(self, *, lines: int) -> str:
        """The last lines of the process's log."""
        return log_tail(self.log_path, lines=lines)
