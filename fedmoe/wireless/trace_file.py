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
line 1) and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedmoe.errors import UsageError
from fedmoe.files import read_csv_rows
from fedmoe.wireless.trace import ChannelTrace

COLUMNS = ("device", "time_s", "gain_db", "blocked")
REQUIRED = COLUMNS[:3]
_FLAGS = {"0": False, "1": True, "false": False, "true": True}


class TraceFormatError(UsageError):
    """A channel trace file is missing, malformed or does not fit the scenario (one line: file, row, field)."""


def read_trace_csv(path: str | Path, num_devices: int, **settings: Any) -> ChannelTrace:
    """Read a trace file for ``num_devices`` devices (module docstring); ``settings`` go to
    :class:`~fedmoe.wireless.trace.ChannelTrace` (``between``, ``after_end``, ``start_s``, ...)."""
    path = Path(path)
    try:
        rows = read_csv_rows(path, TraceFormatError,
                             f"empty trace file (need the header {','.join(REQUIRED)}[,blocked])")
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such trace file") from None
    except OSError as err:
        raise TraceFormatError(f"{path}: cannot read the trace file ({err.strerror})") from None
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [h for h in header if h not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        what = (f"missing column {missing[0]!r}" if missing else f"unknown column {unknown[0]!r}" if unknown
                else "duplicate columns")
        raise TraceFormatError(f"{path}: {what}; the header must be {','.join(REQUIRED)}[,blocked], got "
                               f"{','.join(header)}")
    if len(rows) == 1:
        raise TraceFormatError(f"{path}: no data rows")
    col = {name: header.index(name) for name in header}
    device, time_s, gain_db, blocked = [], [], [], []
    last: dict[int, tuple[float, int]] = {}
    for r, row in enumerate(rows[1:], start=1):
        where = f"{path}: row {r} (line {r + 1})"
        if len(row) != len(header):
            raise TraceFormatError(f"{where}: {len(row)} fields, the header has {len(header)}")
        k = _device(row[col["device"]], where, num_devices)
        t = _number(row[col["time_s"]], where, "time_s")
        if t < 0:
            raise TraceFormatError(f"{where}, field 'time_s': {t:g} is negative")
        if k in last and t <= last[k][0]:
            raise TraceFormatError(f"{where}, field 'time_s': {t:g} is not after device {k}'s previous time "
                                   f"{last[k][0]:g} (row {last[k][1]}); a device's times must increase")
        last[k] = (t, r)
        device.append(k)
        time_s.append(t)
        gain_db.append(_number(row[col["gain_db"]], where, "gain_db"))
        blocked.append(_flag(row[col["blocked"]], where) if "blocked" in col else False)
    absent = sorted(set(range(num_devices)) - set(last))
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


def _device(cell: str, where: str, num_devices: int) -> int:
    text = cell.strip()
    try:
        k = int(text)
    except ValueError:
        raise TraceFormatError(f"{where}, field 'device': {text!r} is not an integer device id") from None
    if not 0 <= k < num_devices:
        raise TraceFormatError(f"{where}, field 'device': unknown device id {k} (the scenario has {num_devices} "
                               f"devices, ids 0..{num_devices - 1})")
    return k


def _number(cell: str, where: str, field: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(f"{where}, field {field!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceFormatError(f"{where}, field {field!r}: {text!r} is not finite")
    return value


def _flag(cell: str, where: str) -> bool:
    text = cell.strip().lower()
    if text not in _FLAGS:
        raise TraceFormatError(f"{where}, field 'blocked': {cell.strip()!r} is not 0, 1, true or false")
    return _FLAGS[text]


def _few(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 5 else f"[{', '.join(map(str, ids[:5]))}, ... ({len(ids)} in all)]"


__all__ = ["COLUMNS", "REQUIRED", "TraceFormatError", "read_trace_csv", "write_trace_csv"]
