"""Positions in one local frame, sequences, and each row's previous and next fix.

The frame's origin is, in order: ``origin=`` if given; the row's ``unit1_loc`` fix; the
scenario's base-station file ``unit1/GPS_data/gps_location.txt`` (the same for every split
CSV of the scenario, so they all share one frame); else the CSV's first user fix, with a
warning (each split CSV would then get an origin of its own).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmoe.data.deepsense.cells import CellReader
from fedmoe.data.deepsense.errors import DeepSenseFormatError, FileProblem
from fedmoe.data.deepsense.files import read_latlon
from fedmoe.data.deepsense.geometry import local_metres
from fedmoe.data.deepsense.table import BASE_STATION_FILE, Columns


@dataclass
class Positions:
    """``position`` (N, 3) east/north/up m (NaN without a fix), ``has_fix`` (N,), ``frame``: the origin's source."""

    position: np.ndarray
    has_fix: np.ndarray
    frame: str


def read_base_station(root: Path) -> tuple[float, float] | None:
    """The base station's (lat, lon) from ``root/unit1/GPS_data/gps_location.txt``; None if the file is absent.

    The file holds latitude and longitude on two lines; CRLF line ends and trailing blank
    lines are fine. A malformed file is a :class:`DeepSenseFormatError` naming it.
    """
    path = root / BASE_STATION_FILE
    if not path.is_file():
        return None
    try:
        return read_latlon(path)
    except FileProblem as err:
        raise DeepSenseFormatError(f"{path}: {err.kind} (the base station's fix): {err}") from None
    except OSError as err:
        raise DeepSenseFormatError(f"{path}: unreadable file (the base station's fix): {err}") from None


def read_positions(reader: CellReader, cols: Columns, root: Path, origin: tuple[float, float] | None) -> Positions:
    """Each row's user position in the frame of the module docstring."""
    n = reader.n
    ue = reader.files(cols["ue_loc"], read_latlon)
    heights = reader.scalars(cols["height"])
    position = np.full((n, 3), np.nan)
    bs: list[tuple[float, float] | None] = [origin] * n
    frame = "origin= argument"
    if origin is None and cols["bs_loc"] is not None:
        bs = reader.files(cols["bs_loc"], read_latlon, cache=True)
        frame = f"column {cols['bs_loc']!r}"
    elif origin is None:
        fix = read_base_station(root)
        frame = str(root / BASE_STATION_FILE)
        if fix is None:
            fix = next((u for u in ue if u is not None), None)
            frame = "the first user fix of this CSV"
            if fix is not None:
                warnings.warn(
                    f"{reader.table.path}: no unit1_loc column and no {BASE_STATION_FILE.as_posix()} under {root}: "
                    "positions are relative to this CSV's first user fix, so each split CSV loaded this way gets "
                    "an origin of its own; pass origin=(lat, lon) of the base station (or restore that file) to put "
                    "every split in one frame", stacklevel=3)
        bs = [fix] * n
    for i in range(n):
        if ue[i] is None or bs[i] is None:
            continue
        lat0, lon0 = bs[i]  # type: ignore[misc]
        east, north = local_metres(ue[i][0], ue[i][1], lat0, lon0)
        position[i] = (east, north, heights[i] if heights[i] is not None else 0.0)
    return Positions(position, np.all(np.isfinite(position), axis=1), frame)


def sequence_links(seq: np.ndarray, has_fix: np.ndarray, position: np.ndarray,
                   next_step: int) -> tuple[np.ndarray, np.ndarray]:
    """``prev_row`` (N,): the previous row of the same sequence when it has a fix (else the row itself);
    ``next_position`` (N, 3): the position ``next_step`` rows later in the same sequence (NaN past its end).

    Rows with ``seq < 0`` belong to no sequence.
    """
    n = len(seq)
    prev_row = np.arange(n)
    next_position = np.full((n, 3), np.nan)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        if seq[i] >= 0:
            groups.setdefault(int(seq[i]), []).append(i)
    for members in groups.values():
        for k, i in enumerate(members):
            if k > 0 and has_fix[members[k - 1]]:
                prev_row[i] = members[k - 1]
            if k + next_step < len(members):
                next_position[i] = position[members[k + next_step]]
    return prev_row, next_position
