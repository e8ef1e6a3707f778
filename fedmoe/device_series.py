"""Per-device time-series CSV files: the rules every such file of the project shares.

A file has a header, then one row per sample; two columns are always there::

    device,time_s,...

* ``device``: integer device id ``0 .. K-1`` (the rows of the scenario's devices);
* ``time_s``: sample time in s, finite and >= 0, strictly increasing over one device's rows
  (rows of different devices may interleave).

The other columns are the format's own (:func:`read_device_rows` checks the header against
them: a missing required column, an unknown or a repeated one is refused, since a misspelt
column would otherwise be ignored). Every problem is an error of the caller's type, in one line
naming the file, the data row (1-based; the header is line 1) and the field. Readers:
:mod:`fedmoe.wireless.trace_file` (channel traces) and :mod:`fedmoe.federated.dynamics`
(availability traces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fedmoe.files import read_csv_rows

KEYS = ("device", "time_s")
"""The columns every per-device time series has."""

_FLAGS = {"0": False, "1": True, "false": False, "true": True}


@dataclass(frozen=True)
class DeviceRow:
    """One data row: its device, its time, its cells by column name, and where it is (for errors)."""

    device: int
    time_s: float
    cells: dict[str, str]
    where: str


def read_device_rows(path: str | Path, num_devices: int, columns: tuple[str, ...], required: tuple[str, ...],
                     error: type[Exception], what: str) -> list[DeviceRow]:
    """The data rows of the per-device time series ``path`` (module docstring), checked.

    Parameters
    ----------
    path : str or Path
        The file.
    num_devices : int
        ``K``: device ids must lie in ``0 .. K-1``.
    columns, required : tuple of str
        The columns the format knows, and those it needs (both include :data:`KEYS`).
    error : type
        The exception raised, with a one-line message naming the file, row and field.
    what : str
        What the file is, for messages (``"trace file"``).
    """
    path = Path(path)
    shape = f"{','.join(required)}" + "".join(f"[,{c}]" for c in columns if c not in required)
    try:
        rows = read_csv_rows(path, error, f"empty {what} (need the header {shape})")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror})") from None
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in required if c not in header]
    unknown = [h for h in header if h not in columns]
    if missing or unknown or len(set(header)) != len(header):
        problem = (f"missing column {missing[0]!r}" if missing else f"unknown column {unknown[0]!r}" if unknown
                   else "duplicate columns")
        raise error(f"{path}: {problem}; the header must be {shape}, got {','.join(header)}")
    if len(rows) == 1:
        raise error(f"{path}: no data rows")
    out: list[DeviceRow] = []
    last: dict[int, tuple[float, int]] = {}
    for r, row in enumerate(rows[1:], start=1):
        where = f"{path}: row {r} (line {r + 1})"
        if len(row) != len(header):
            raise error(f"{where}: {len(row)} fields, the header has {len(header)}")
        cells = dict(zip(header, row))
        k = device_cell(cells["device"], where, num_devices, error)
        t = number_cell(cells["time_s"], where, "time_s", error)
        if t < 0:
            raise error(f"{where}, field 'time_s': {t:g} is negative")
        if k in last and t <= last[k][0]:
            raise error(f"{where}, field 'time_s': {t:g} is not after device {k}'s previous time "
                        f"{last[k][0]:g} (row {last[k][1]}); a device's times must increase")
        last[k] = (t, r)
        out.append(DeviceRow(k, t, cells, where))
    return out


def device_cell(cell: str, where: str, num_devices: int, error: type[Exception]) -> int:
    """The device id in ``cell``: an integer in ``0 .. num_devices - 1``."""
    text = cell.strip()
    try:
        k = int(text)
    except ValueError:
        raise error(f"{where}, field 'device': {text!r} is not an integer device id") from None
    if not 0 <= k < num_devices:
        raise error(f"{where}, field 'device': unknown device id {k} (the scenario has {num_devices} "
                    f"devices, ids 0..{num_devices - 1})")
    return k


def number_cell(cell: str, where: str, field: str, error: type[Exception]) -> float:
    """The finite number in ``cell`` of column ``field``."""
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        raise error(f"{where}, field {field!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise error(f"{where}, field {field!r}: {text!r} is not finite")
    return value


def flag_cell(cell: str, where: str, field: str, error: type[Exception]) -> bool:
    """The flag in ``cell`` of column ``field``: ``0``/``1``/``false``/``true`` (any case)."""
    text = cell.strip().lower()
    if text not in _FLAGS:
        raise error(f"{where}, field {field!r}: {cell.strip()!r} is not 0, 1, true or false")
    return _FLAGS[text]


__all__ = ["KEYS", "DeviceRow", "device_cell", "flag_cell", "number_cell", "read_device_rows"]
