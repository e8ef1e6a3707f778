"""The project's channel trace file: a CSV of per-device gain samples (``docs/traces.md``).

::

    device,time_s,gain_db,blocked
    0,0.0,-98.5,0
    0,0.1,-121.0,1
    1,0.0,-104.2,0

* ``device``: integer device id ``0 .. K-1`` (the rows of the scenario's devices); every device
  has at least one row;
* ``time_s``: sample time in s, finite and >= 0, strictly increasing over one device's rows
  (rows of different devices may interleave);
* ``gain_db``: channel power gain ``10 log10 h`` in dB (finite), ``h`` as in
  :class:`~fedmoe.wireless.devices.DeviceProfiles`;
* ``blocked`` (optional): ``0``/``1`` (or ``false``/``true``); absent: never blocked.

Other columns are refused (a misspelt one would otherwise be ignored). Every problem is a
:class:`TraceFormatError` of one line naming the file, the data row (1-based; the header is
line 1) and the field (the rules shared with other per-device files: :mod:`fedmoe.device_series`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedmoe.device_series import flag_cell, number_cell, read_device_rows
from fedmoe.errors import UsageError
from fedmoe.wireless.trace import ChannelTrace

COLUMNS = ("device", "time_s", "gain_db", "blocked")
REQUIRED = COLUMNS[:3]


class TraceFormatError(UsageError):
    """A channel trace file is missing, malformed or does not fit the scenario (one line: file, row, field)."""


def read_trace_csv(path: str | Path, num_devices: int, **settings: Any) -> ChannelTrace:
    """Read a trace file for ``num_devices`` devices (module docstring); ``settings`` go to
    :class:`~fedmoe.wireless.trace.ChannelTrace` (``between``, ``after_end``, ``start_s``, ...)."""
    path = Path(path)
    rows = read_device_rows(path, num_devices, COLUMNS, REQUIRED, TraceFormatError, "trace file")
    device = [row.device for row in rows]
    time_s = [row.time_s for row in rows]
    gain_db = [number_cell(row.cells["gain_db"], row.where, "gain_db", TraceFormatError) for row in rows]
    blocked = [flag_cell(row.cells["blocked"], row.where, "blocked", TraceFormatError) if "blocked" in row.cells
               else False for row in rows]
    absent = sorted(set(range(num_devices)) - set(device))
    if absent:
        raise TraceFormatError(f"{path}: no rows for devices {_few(absent)} (the scenario has {num_devices} devices, "
                               f"ids 0..{num_devices - 1}; each needs at least one row)")
    return ChannelTrace.from_samples(device, time_s, gain_db, blocked, source=str(path), **settings)


def write_trace_csv(trace: ChannelTrace, path: str | Path) -> Path:
    """Write ``trace`` in the format of the module docstring (device by device, in time order)."""
    path = Path(path)
    lines = [",".join(COLUMNS)]
    for k, (t, g, b) in enumerate(zip(trace.times_s, trace.gain_db, trace.blocked)):
        lines += [f"{k},{ti!r},{gi!r},{int(bi)}" for ti, gi, bi in zip(t.tolist(), g.tolist(), b.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _few(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 5 else f"[{', '.join(map(str, ids[:5]))}, ... ({len(ids)} in all)]"


__all__ = ["COLUMNS", "REQUIRED", "TraceFormatError", "read_trace_csv", "write_trace_csv"]
