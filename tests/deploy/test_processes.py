"""fedmoe.deploy.processes: every process of a set is stopped by PID — grandchildren in their own
session and orphans included — and a process that ignores SIGTERM is killed after the timeout."""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from fedmoe.deploy.processes import ProcessError, ProcessSet, free_ports

# A parent that starts a child in a new session (as flower-superlink starts flower-superexec),
# prints the child's PID, and sleeps; with "orphan" the parent exits and leaves the child behind.
SPAWNER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print("child", child.pid, flush=True)
if sys.argv[1] == "orphan":
    sys.exit(0)
time.sleep(600)
"""
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(600)")


def _child_pid(proc) -> int:
    return int(proc.wait_for_log(r"child (\d+)", timeout=30).group(1))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_reaches_children_in_another_session_and_orphans(tmp_path):
    with ProcessSet(tmp_path, term_timeout=5) as procs:
        attached = procs.start("attached", [sys.executable, "-c", SPAWNER, "stay"])
        orphaner = procs.start("orphaner", [sys.executable, "-c", SPAWNER, "orphan"])
        kids = [_child_pid(attached), _child_pid(orphaner)]
        assert orphaner.wait(30) == 0  # its child is now an orphan, found only by the token
        members = {p.pid for p in procs.members()}
        assert {attached.pid, *kids} <= members
    assert all(_gone(pid) for pid in [attached.pid, *kids])
    assert set(kids) <= set(procs.stop_report["terminated"]) and not procs.stop_report["killed"]
    assert procs.members() == []


def test_a_process_ignoring_sigterm_is_killed_after_the_timeout(tmp_path):
    procs = ProcessSet(tmp_path, term_timeout=1)
    stubborn = procs.start("stubborn", [sys.executable, "-c", STUBBORN])
    stubborn.wait_for_log("ready", timeout=30)
    t0 = time.monotonic()
    report = procs.stop()
    assert report["killed"] == [stubborn.pid] and stubborn.returncode() is not None
    assert time.monotonic() - t0 < 10


def test_leaving_the_block_on_an_exception_stops_everything(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ProcessSet(tmp_path, term_timeout=5) as procs:
            sleeper = procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
            raise KeyboardInterrupt
    assert sleeper.returncode() is not None


def test_waits_are_bounded_and_name_the_log(tmp_path):
    procs = ProcessSet(tmp_path)
    quitter = procs.start("quitter", [sys.executable, "-c", "print('bye')"])
    with pytest.raises(ProcessError, match=r"quitter exited with status 0 before it was ready; see .*quitter.log"):
        quitter.wait_for_log("never printed", timeout=30)
    sleeper = procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    with pytest.raises(ProcessError, match="sleeper not ready within 1 s"):
        sleeper.wait_for_log("never printed", timeout=1)
    procs.stop()
    with pytest.raises(ProcessError, match="cannot start missing"):
        procs.start("missing", [str(tmp_path / "no-such-program")])


def test_free_ports_are_distinct():
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(1024 <= p <= 65535 for p in ports)
