"""Start background processes and stop every one of them by PID, with bounded waits.

Flower's daemons start children of their own: ``flower-superlink`` and ``flower-supernode``
each spawn a ``flower-superexec`` (in a new session, so signalling a process group does not
reach it), which spawns a ``flwr-serverapp`` per run or a ``flwr-clientapp`` per message.
A :class:`ProcessSet` therefore stamps every process it starts with an environment variable
holding a random token; children inherit it, so at shutdown the set finds all of its
processes — descendants still attached to a parent and orphans re-parented to PID 1 alike —
by reading ``/proc/<pid>/environ`` (through psutil), never by matching program names.

On Linux the processes started directly also get SIGTERM from the kernel if the starting
process dies without cleaning up (``PR_SET_PDEATHSIG``), e.g. when it is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import psutil

TOKEN_VAR = "FEDMOE_DEPLOY_TOKEN"
"""Environment variable that marks the processes of one :class:`ProcessSet` (and their children)."""


class ProcessError(RuntimeError):
    """A process did not start, did not become ready in time, or exited early (one-line message)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports (all sockets held open until every port is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM this process when the thread that started it exits (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Started:
    """A process started by a :class:`ProcessSet`, with its log file."""

    name: str
    popen: subprocess.Popen
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float, poll: float = 0.2) -> re.Match:
        """Wait up to ``timeout`` s for ``pattern`` in the log; :class:`ProcessError` if it exits first or time
        runs out."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            rc = self.returncode()
            if rc is not None:
                raise ProcessError(f"{self.name} exited with status {rc} before it was ready; see {self.log}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name} not ready within {timeout:.0f} s (no {pattern!r} in {self.log})")
            time.sleep(poll)

    def wait(self, timeout: float) -> int | None:
        """Exit status after at most ``timeout`` s, or ``None`` if it still runs."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


class ProcessSet:
    """Processes started together and stopped together (see the module docstring).

    Use as a context manager: leaving the block — normally, on an exception or on
    KeyboardInterrupt — stops every process of the set.
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None, term_timeout: float = 15.0) -> None:
        self.log_dir = Path(log_dir)
        self.token = uuid.uuid4().hex
        self.env = dict(os.environ if env is None else env)
        self.env[TOKEN_VAR] = self.token
        self.term_timeout = term_timeout
        self.started: list[Started] = []
        self.stop_report: dict[str, list[int]] = {}

    def __enter__(self) -> "ProcessSet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Started:
        """Start ``argv`` in the background, stdout and stderr to ``log_dir/name.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        full_env = {**self.env, **(env or {}), TOKEN_VAR: self.token}
        with open(log, "wb") as f:
            try:
                popen = subprocess.Popen(list(argv), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=full_env, cwd=cwd,
                                         preexec_fn=die_with_parent if sys.platform == "linux" else None)
            except OSError as err:
                raise ProcessError(f"cannot start {name} ({argv[0]}): {err.strerror or err}") from None
        proc = Started(name, popen, log, list(argv))
        self.started.append(proc)
        return proc

    # ------------------------------------------------------------------ finding and stopping

    def members(self) -> list[psutil.Process]:
        """Every live process of this set: those started, their descendants, and any process carrying the token."""
        found: dict[int, psutil.Process] = {}
        for s in self.started:
            if s.popen.poll() is not None:
                continue
            try:
                p = psutil.Process(s.pid)
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
            except psutil.Error:
                pass
        found = {pid: p for pid, p in found.items() if _running(p)}
        for p in psutil.process_iter():
            if p.pid in found or p.pid == os.getpid():
                continue
            try:
                if p.environ().get(TOKEN_VAR) == self.token and _running(p):
                    found[p.pid] = p
            except (psutil.Error, OSError):
                continue  # gone, a zombie, or another user's process
        return list(found.values())

    def stop(self) -> dict[str, list[int]]:
        """SIGTERM every member, SIGKILL those left after ``term_timeout`` s; repeat once for late children.

        Returns ``{"terminated": [...], "killed": [...]}`` (PIDs) and keeps it in ``stop_report``.
        """
        terminated: list[int] = []
        killed: list[int] = []
        for _ in range(3):
            procs = self.members()
            if not procs:
                break
            for p in procs:
                try:
                    p.send_signal(signal.SIGTERM)
                    terminated.append(p.pid)
                except psutil.Error:
                    pass
            alive = _wait_gone(procs, self.term_timeout)
            for p in alive:
                try:
                    p.kill()
                    killed.append(p.pid)
                except psutil.Error:
                    pass
            _wait_gone(alive, 5.0)
        for s in self.started:  # reap our own children
            try:
                s.popen.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        self.stop_report = {"terminated": sorted(set(terminated)), "killed": sorted(set(killed))}
        return self.stop_report


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent's wait is missing)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s until every process has exited (zombies count as exited); the rest."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        for p in alive:
            try:
                p.wait(timeout=0)  # reaps our own children
            except (psutil.TimeoutExpired, psutil.Error):
                pass
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return alive
