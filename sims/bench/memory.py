"""Peak resident memory of this process and every Ray process it started, sampled in a thread.

RSS counts shared pages once per process, so the sum over processes *over*-states the
memory really used (PSS would be fairer but costs ~100 ms per process to read); the
figures in the benchmarks are therefore upper bounds.
"""

from __future__ import annotations

import os
import threading
import time

import psutil


def _ours() -> list[psutil.Process]:
    me = psutil.Process(os.getpid())
    procs = {me.pid: me}
    for p in me.children(recursive=True):
        procs[p.pid] = p
    for p in psutil.process_iter(["cmdline", "username"]):  # Ray workers are re-parented away from us
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.info["username"] == me.username() and ("ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd
                                                     or "default_worker.py" in cmd):
            procs[p.pid] = p
    return list(procs.values())


class PeakMemory:
    """Context manager: ``peak_rss_bytes`` (all processes) and ``peak_self_bytes`` (this one)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.peak_self_bytes = 0
        self._stop = threading.Event()

    def sample(self) -> None:
        total = 0
        for p in _ours():
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            if p.pid == os.getpid():
                self.peak_self_bytes = max(self.peak_self_bytes, rss)
        self.peak_rss_bytes = max(self.peak_rss_bytes, total)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
