"""How much memory this machine has free, and refusing work that cannot fit in it.

A run whose data cannot fit in memory does not fail cleanly: it swaps, or the kernel's
out-of-memory killer ends it (or another process) after minutes of work. Commands therefore
estimate what they will hold (a simple bytes-per-item × items, see the callers) and refuse
before starting when that exceeds what the machine has available (:func:`check_fits`), and
file readers refuse an archive whose arrays declare more than that before reading any
(:mod:`fedmoe.npzfile`).

"Available" is Linux's ``MemAvailable`` (``/proc/meminfo``: free memory plus what the page
cache can give back without swapping); elsewhere the physical pages free
(``os.sysconf``), else the total physical memory; ``None`` when none of them can be read,
and then nothing is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedmoe.errors import UsageError

MEMINFO = Path("/proc/meminfo")


class MemoryEstimateError(UsageError):
    """The work asked for needs more memory than this machine has available (one-line message)."""


def available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """Memory available to a new process now, in bytes (module docstring); ``None`` if unknown.

    Parameters
    ----------
    meminfo : Path, optional
        Linux's ``/proc/meminfo`` (a parameter so that tests can give another file).
    """
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the value is in kiB
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return int(os.sysconf(pages)) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            continue
    return None


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at or above 1 (``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_fits(need_bytes: float, what: str, available: int | None = None) -> None:
    """Refuse (:class:`MemoryEstimateError`) work estimated to need ``need_bytes`` when that is more
    than the memory available.

    Parameters
    ----------
    need_bytes : float
        The estimate.
    what : str
        What needs it and how the estimate was made, for the message
        (``"partition.samples_per_device=10000000 (7.5 kB a sample)"``).
    available : int, optional
        The memory to compare with; default :func:`available_bytes` (nothing is refused when
        that is unknown).
    """
    have = available_bytes() if available is None else available
    if have is not None and need_bytes > have:
        raise MemoryEstimateError(f"{what} needs about {format_bytes(need_bytes)} of memory, more than the "
                                  f"{format_bytes(have)} this machine has available; make it smaller")
