"""The scenario CSV: finding it, reading it, and which column plays which role.

A role (``rf``, ``camera``, ``beam``, ...) is found under the first of its
:data:`COLUMN_CANDIDATES` the CSV has (case-insensitive). Task CSVs number their frames
(``unit1_pwr_60ghz_1`` ... ``_8``, ``unit2_loc_1``, ``beam_index_1``): when a role's plain name
is absent, its numbered *series* ``<candidate>_<k>`` stands in, ordered by ``k``; the last
frame is the row's own (the most recent observation), the whole series is kept for the
power vectors. ``columns=`` overrides a role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from fedmoe.data.deepsense.errors import DeepSenseFormatError
from fedmoe.files import read_csv_rows

COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "index": ("index",),
    "seq": ("seq_index",),
    "rf": ("unit1_pwr_60ghz", "unit1_pwr"),
    "beam": ("unit1_beam", "unit1_beam_index", "beam_index"),
    "camera": ("unit1_rgb",),
    "lidar": ("unit1_lidar_scr", "unit1_lidar"),
    "radar": ("unit1_radar",),
    "bs_loc": ("unit1_loc",),
    "ue_loc": ("unit2_loc_cal", "unit2_loc"),
    "height": ("unit2_height",),
    "blockage": ("unit1_blockage", "blockage_label"),
    "future_blockage": ("blockage_final", "future_blockage"),
}
"""Role -> CSV column names tried in order (case-insensitive); ``columns=`` overrides one."""

SERIES_ROLES = frozenset({"rf", "beam", "camera", "lidar", "radar", "bs_loc", "ue_loc"})
"""Roles whose numbered series (``<candidate>_<k>``) stand in for a missing plain column."""

HINTS: dict[str, tuple[str, ...]] = {
    "rf": ("pwr", "power"), "beam": ("beam",), "camera": ("rgb", "image", "camera"), "lidar": ("lidar",),
    "radar": ("radar",), "ue_loc": ("unit2_loc", "gps", "position"), "bs_loc": ("unit1_loc",),
    "future_blockage": ("blockage",), "blockage": ("blockage",), "seq": ("seq",),
}
"""Role -> words a column name holding that role probably contains (for the suggestions in errors)."""

BASE_STATION_FILE = Path("unit1") / "GPS_data" / "gps_location.txt"
"""Where a scenario folder keeps the base station's fix (relative to the scenario root)."""


@dataclass
class Table:
    """The header and the data rows of a CSV (rows with only empty cells are left out)."""

    path: Path
    header: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        j = [h.lower() for h in self.header].index(name.lower())
        return [r[j].strip() if j < len(r) else "" for r in self.rows]


@dataclass
class Columns:
    """The column of each role (None: the CSV has none) and, for a numbered series, all its columns."""

    role: dict[str, str | None]
    series: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, role: str) -> str | None:
        return self.role[role]


def find_csv(root: Path, csv_name: str | None) -> Path:
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such DeepSense scenario folder")
    if root.is_file():
        if csv_name is not None:
            raise ValueError(f"{root} is a file; pass the scenario folder as root and {csv_name!r} as csv_name")
        return root
    if csv_name is not None:
        path = root / csv_name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such scenario CSV")
        return path
    csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not csvs:
        raise FileNotFoundError(f"{root}: no scenario CSV (*.csv) in this folder")
    named = [p for p in csvs if re.fullmatch(r"scenario\d+(_dev)?\.csv", p.name, flags=re.IGNORECASE)]
    if len(named) == 1:
        return named[0]
    if len(csvs) == 1:
        return csvs[0]
    raise DeepSenseFormatError(f"{root}: several CSV files ({', '.join(p.name for p in csvs)}); pass csv_name")


def scenario_root(root: Path, csv_path: Path) -> Path:
    """The folder the CSV's paths are relative to.

    ``root`` when it is a folder (the CSV may sit in a subfolder of it, like ``future-1/``);
    for a CSV given directly, the nearest of its folder, that folder's parent and
    grandparent that holds a ``unit1`` or ``unit2`` folder, else the CSV's folder.
    """
    if root.is_dir():
        return root
    for folder in (csv_path.parent, *list(csv_path.parent.parents)[:2]):
        if (folder / "unit1").is_dir() or (folder / "unit2").is_dir():
            return folder
    return csv_path.parent


def read_csv(path: Path) -> Table:
    rows = read_csv_rows(path, DeepSenseFormatError, "empty CSV (no header row)")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    dupes = sorted({h for h in lower if h and lower.count(h) > 1})
    if dupes:
        raise DeepSenseFormatError(f"{path}: duplicate columns {dupes}")
    return Table(path, header, rows[1:])


def _series(have: Mapping[str, str], candidates: tuple[str, ...]) -> list[str]:
    """The numbered columns ``<candidate>_<k>`` of the first candidate that has any, ordered by ``k``."""
    for c in candidates:
        pattern = re.compile(re.escape(c) + r"_(\d+)")
        found = sorted((int(m.group(1)), name) for low, name in have.items() if (m := pattern.fullmatch(low)))
        if found:
            return [name for _, name in found]
    return []


def suggest(table: Table, role: str, taken: set[str]) -> str:
    """`` (if column X holds ..., pass columns={'role': 'X'})`` for a column whose name looks like the role, else ''."""
    words = HINTS.get(role, ())
    names = [h for h in table.header if h not in taken and any(w in h.lower() for w in words)]
    if not names:
        return ""
    options = " or ".join(f"columns={{{role!r}: {n!r}}}" for n in names[:3])
    return f"; the CSV has {', '.join(repr(n) for n in names[:3])}: if that is it, pass {options}"


def resolve_columns(table: Table, overrides: Mapping[str, str] | None) -> Columns:
    """Each role's column (module docstring); a numbered label series of several columns must be chosen."""
    have = {h.lower(): h for h in table.header}
    unknown = set(overrides or {}) - set(COLUMN_CANDIDATES)
    if unknown:
        raise ValueError(f"unknown column roles {sorted(unknown)}; known: {sorted(COLUMN_CANDIDATES)}")
    out = Columns({})
    for role, candidates in COLUMN_CANDIDATES.items():
        if overrides and role in overrides:
            name = overrides[role]
            if name.lower() not in have:
                raise DeepSenseFormatError(f"{table.path}: missing column {name!r} (given for {role!r}); "
                                           f"columns are {table.header}")
            out.role[role] = have[name.lower()]
            continue
        out.role[role] = next((have[c] for c in candidates if c in have), None)
        if out.role[role] is None and role in SERIES_ROLES:
            series = _series(have, candidates)
            if role == "beam" and len(series) > 1:
                raise DeepSenseFormatError(
                    f"{table.path}: several beam label columns ({', '.join(series)}); which one labels the row "
                    f"is the task's choice: pass columns={{'beam': {series[0]!r}}} (or another of them)")
            if series:
                out.role[role] = series[-1]
                out.series[role] = series
    return out


def resolve_path(base: Path, cell: str) -> Path:
    rel = cell.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return base / rel.lstrip("/")


def parse_int(text: str) -> int | None:
    """An integer cell ("5", "5.0"); None for empty/NaN; raises ValueError otherwise."""
    if text == "" or text.lower() == "nan":
        return None
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"not an integer: {text!r}")
    return int(value)
