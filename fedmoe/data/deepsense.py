"""Loader for DeepSense 6G scenario folders (real multimodal V2I measurements).

DeepSense 6G (https://www.deepsense6g.net) publishes each scenario as a folder holding
a scenario CSV (``scenarioN.csv``, ``scenarioN_dev.csv``, ...) with one row per sample
and per-modality files referenced by relative paths (``./unit1/mmWave_data/...txt``).
:func:`load_deepsense_scenario` reads such a folder into an :class:`ISACSamples`:

========  =======================  ===================================================
modality  default CSV column       conversion
========  =======================  ===================================================
rf        ``unit1_pwr_60ghz``      the ``num_beams`` received powers (linear or dB)
camera    ``unit1_rgb``            box-filtered to ``3 x S x S`` uint8
lidar     ``unit1_lidar``          point cloud -> horizontal range scan (``rays``)
radar     ``unit1_radar``          FMCW cube -> ``1 x R x A`` range-angle map (dB)
gps       ``unit2_loc[_cal]``      lat/lon -> local east/north/up metres from unit 1
========  =======================  ===================================================

Labels: ``beam`` is the (NaN-aware) argmax of the power vector, 0-based (and
``beam_power_db`` every beam's power relative to it, dB); a beam label
column (``unit1_beam``, 1-based in the published CSVs) is checked against it.
``pathloss_db`` is NaN (the powers are not calibrated); ``next_position`` is the
position ``next_step`` rows later in the same ``seq_index`` sequence (NaN at the end).

Every file problem raises :class:`DeepSenseFormatError` naming the CSV, the 1-based
data row, the row's ``index`` value and the file. The formats, conventions and
sources are documented in ``docs/data-deepsense.md``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from fedmoe.config import MODALITIES, SensorConfig
from fedmoe.data.multipath import relative_power_db
from fedmoe.data.samples import ISACSamples
from fedmoe.errors import UsageError

try:  # Pillow decodes JPEG/PNG; it is installed with matplotlib, but stay usable without it.
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _PILImage = None

__all__ = [
    "COLUMN_CANDIDATES",
    "DeepSenseFormatError",
    "box_resize",
    "lidar_range_scan",
    "load_deepsense_scenario",
    "local_metres",
    "range_angle_map",
    "read_point_cloud",
]

COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "index": ("index",),
    "seq": ("seq_index",),
    "rf": ("unit1_pwr_60ghz",),
    "beam": ("unit1_beam", "unit1_beam_index", "beam_index"),
    "camera": ("unit1_rgb",),
    "lidar": ("unit1_lidar",),
    "radar": ("unit1_radar",),
    "bs_loc": ("unit1_loc",),
    "ue_loc": ("unit2_loc_cal", "unit2_loc"),
    "height": ("unit2_height",),
    "blockage": ("unit1_blockage", "blockage_label"),
}
"""Role -> CSV column names tried in order (case-insensitive); ``columns=`` overrides one."""

WGS84_A = 6_378_137.0
"""WGS84 semi-major axis, m."""
WGS84_F = 1.0 / 298.257223563
"""WGS84 flattening."""
MIN_LIDAR_RANGE_M = 0.1
"""Lidar points closer than this (no-return markers at the origin) are ignored."""
RF_DB_FLOOR = -120.0
"""``rf_scale="db"``: powers <= 0 (and NaN beams) map to this many dB."""
RADAR_DB_FLOOR = -240.0
"""Radar map cells of zero magnitude map to this many dB."""

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_TRUE_WORDS = {"true", "yes", "blocked"}
_FALSE_WORDS = {"false", "no", "not_blocked", "unblocked", "not blocked"}


class DeepSenseFormatError(UsageError):
    """A DeepSense scenario folder, CSV or referenced file is missing or malformed.

    The message names the file and, for a file referenced by the CSV, the CSV, the
    1-based data row number and the row's ``index`` value.
    """


class _FileProblem(Exception):
    """Raised by the readers; the loader adds the CSV row to the message."""

    kind = "malformed file"


class _Unsupported(_FileProblem):
    """A well-formed file whose content fedmoe does not know how to use."""

    kind = "unsupported file"


# --------------------------------------------------------------------------- geometry


def local_metres(lat: np.ndarray, lon: np.ndarray, lat0: np.ndarray, lon0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East/north offsets (m) of ``(lat, lon)`` from ``(lat0, lon0)`` (degrees, WGS84).

    Equirectangular projection about the reference point with the WGS84 radii of
    curvature at ``lat0``::

        north = M(lat0) * (lat - lat0),           M = a (1 - e^2) / (1 - e^2 sin^2 lat0)^(3/2)
        east  = N(lat0) * cos(lat0) * (lon - lon0), N = a / sqrt(1 - e^2 sin^2 lat0)

    (angles in radians, ``lon - lon0`` wrapped to [-pi, pi)). This is the local tangent
    plane to first order; for offsets of d metres the error is of order d^2 / 6.4e6 m
    (under 2 mm at 100 m, the scale of a DeepSense scene).
    """
    lat, lon, lat0, lon0 = (np.asarray(v, dtype=np.float64) for v in (lat, lon, lat0, lon0))
    e2 = WGS84_F * (2.0 - WGS84_F)
    phi0 = np.radians(lat0)
    w = 1.0 - e2 * np.sin(phi0) ** 2
    m_radius = WGS84_A * (1.0 - e2) / w**1.5
    n_radius = WGS84_A / np.sqrt(w)
    dlon = (np.radians(lon - lon0) + np.pi) % (2 * np.pi) - np.pi
    return n_radius * np.cos(phi0) * dlon, m_radius * np.radians(lat - lat0)


# --------------------------------------------------------------------------- converters


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Box-filter (mean of each block) or, when upsampling, nearest-neighbour along ``axis``."""
    n = x.shape[axis]
    starts = (np.arange(size) * n) // size
    if n < size:
        return np.take(x, starts, axis=axis)
    sums = np.add.reduceat(x, starts, axis=axis)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    shape = [1] * x.ndim
    shape[axis] = size
    return sums / counts.reshape(shape)


def box_resize(image: np.ndarray, size: int) -> np.ndarray:
    """An image (H, W), (H, W, 3|4) or (3, H, W) -> (3, size, size) uint8.

    Each output pixel is the mean of its block of input pixels (area averaging; the
    aspect ratio is not kept). A 3-D array is channels-first only when its first axis
    is 3 and its last is longer than 4. Integer images are taken as 0..255; float images as
    0..255 unless their maximum is <= 1, then as 0..1. An alpha channel is dropped,
    grey is replicated to three channels.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3|4) or (3, H, W), got {np.shape(image)}")
    img = img[..., :3]
    if not np.issubdtype(img.dtype, np.number) or np.issubdtype(img.dtype, np.complexfloating):
        raise ValueError(f"image has non-numeric dtype {img.dtype}")
    data = img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise ValueError("image has non-finite pixel values")
        if data.size and data.max() <= 1.0:
            data = data * 255.0
    out = _resize_axis(_resize_axis(data, size, 0), size, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def lidar_range_scan(points: np.ndarray, rays: int, max_range_m: float, fov_deg: float = 360.0) -> np.ndarray:
    """A point cloud (M, >=3: x, y, z, ...) or range profile (K,) -> (rays,) float32 range scan.

    Point cloud: each point's azimuth ``atan2(y, x)`` (from the sensor's +x axis,
    counter-clockwise) falls in one of ``rays`` equal sectors spanning
    ``[-fov/2, fov/2)``; a ray is the smallest horizontal range ``hypot(x, y)`` of its
    points, ``max_range_m`` when it has none. Points with non-finite coordinates or
    closer than :data:`MIN_LIDAR_RANGE_M` are ignored; z is not used.

    Range profile (a 1-D array of ranges over equally spaced angles): linearly
    resampled to ``rays`` values; NaN reads as ``max_range_m``.

    Ranges are clipped to ``[0, max_range_m]``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1:
        prof = np.where(np.isfinite(pts), pts, max_range_m)
        if len(prof) == 0:
            raise ValueError("empty lidar range profile")
        pos = np.linspace(0.0, len(prof) - 1.0, rays)
        scan = np.interp(pos, np.arange(len(prof)), prof)
        return np.clip(scan, 0.0, max_range_m).astype(np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"expected a point cloud (M, >=3) or a range profile (K,), got shape {pts.shape}")
    x, y = pts[:, 0], pts[:, 1]
    rng = np.hypot(x, y)
    keep = np.isfinite(rng) & (rng >= MIN_LIDAR_RANGE_M)
    az = np.degrees(np.arctan2(y[keep], x[keep]))
    half = fov_deg / 2.0
    sector = np.floor((az + half) / fov_deg * rays).astype(np.int64)
    inside = (sector >= 0) & (sector < rays)
    scan = np.full(rays, np.inf)
    np.minimum.at(scan, sector[inside], rng[keep][inside])
    return np.clip(np.where(np.isfinite(scan), scan, max_range_m), 0.0, max_range_m).astype(np.float32)


def range_angle_map(cube: np.ndarray, range_bins: int, angle_bins: int) -> np.ndarray:
    """An FMCW radar frame (rx antennas, ADC samples per chirp, chirps) -> (1, range_bins, angle_bins) float32 dB.

    As in the DeepSense radar scripts (Demirhan & Alkhateeb, WCNC 2022): a range FFT over
    the ADC samples, static-clutter removal (the mean over chirps is subtracted; skipped
    for a single chirp), a zero-padded ``angle_bins``-point angle FFT over the antennas
    (fft-shifted: from -90 deg to +90 deg in sine space), and the magnitude summed over
    chirps. The range axis (all ADC-sample bins) is then averaged in ``range_bins``
    equal blocks and the map is given as ``20 log10`` of the magnitude.
    """
    x = np.asarray(cube)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"expected a radar cube (rx, samples, chirps), got shape {np.shape(cube)}")
    if x.shape[1] < range_bins:
        raise ValueError(f"radar frame has {x.shape[1]} samples per chirp, fewer than range_bins={range_bins}")
    spec = np.fft.fft(x.astype(np.complex128), axis=1)
    if spec.shape[2] > 1:
        spec = spec - spec.mean(axis=2, keepdims=True)
    spec = np.fft.fftshift(np.fft.fft(spec, n=angle_bins, axis=0), axes=0)
    mag = np.abs(spec).sum(axis=2).T  # (samples, angle_bins)
    pooled = _resize_axis(mag, range_bins, 0)
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(pooled)
    return np.maximum(db, RADAR_DB_FLOOR)[None].astype(np.float32)


# --------------------------------------------------------------------------- file readers


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _FileProblem("not a UTF-8 text file") from None


def _read_numbers(path: Path) -> np.ndarray:
    """All numbers of a small text file (separated by white space, commas or semicolons)."""
    tokens = [t for t in re.split(r"[\s,;]+", _read_text(path)) if t]
    if not tokens:
        raise _FileProblem("empty file, expected numbers")
    values = []
    for t in tokens:
        try:
            values.append(float(t))
        except ValueError:
            raise _FileProblem(f"not a number: {t[:40]!r}") from None
    return np.array(values, dtype=np.float64)


def _read_power(path: Path, num_beams: int) -> np.ndarray:
    p = _read_numbers(path)
    if p.size != num_beams:
        raise _FileProblem(f"expected {num_beams} beam powers, found {p.size} values")
    if np.any(np.isinf(p)):
        raise _FileProblem("infinite beam power")
    if np.all(np.isnan(p)):
        raise _FileProblem("every beam power is NaN")
    return p


def _read_latlon(path: Path) -> tuple[float, float]:
    v = _read_numbers(path)
    if v.size not in (2, 3):
        raise _FileProblem(f"expected latitude and longitude (2 values, or 3 with altitude), found {v.size} values")
    lat, lon = float(v[0]), float(v[1])
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 360.0):
        raise _FileProblem(f"not a latitude/longitude in degrees: {lat!r}, {lon!r}")
    return lat, lon


def _load_array(path: Path) -> np.ndarray:
    """An array from .npy (no pickles) or .mat (variable ``data``, else the only variable)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".mat":
            from scipy.io import loadmat

            content = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
            if "data" in content:
                return np.asarray(content["data"])
            if len(content) == 1:
                return np.asarray(next(iter(content.values())))
            raise _FileProblem(f"no variable 'data' among {sorted(content)}")
    except _FileProblem:
        raise
    except Exception as err:  # numpy / scipy raise many types for a damaged file
        raise _FileProblem(f"cannot read {suffix} file ({type(err).__name__}: {err})") from None
    raise _FileProblem(f"unsupported file type {suffix or '(none)'}")


def _read_ply(data: bytes) -> np.ndarray:
    """x, y, z (M, 3) of the vertex element of a PLY file (ASCII or binary; vertex first)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise _FileProblem("not a PLY file (no 'ply' magic or no 'end_header')")
    body_start = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements = None, []
    for line in header[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _PLY_TYPES:
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and elements:
            elements[-1][2].append((words[-1], None))  # list or unknown type
        else:
            raise _FileProblem(f"malformed PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _FileProblem(f"unsupported PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise _FileProblem("unsupported PLY layout: the first element must be 'vertex'")
    _, count, props = elements[0]
    names = [name for name, _ in props]
    if any(t is None for _, t in props):
        raise _FileProblem("unsupported PLY vertex property (list or unknown type)")
    if not {"x", "y", "z"} <= set(names):
        raise _FileProblem(f"PLY vertex has no x, y, z properties (has {names})")
    if fmt == "ascii":
        try:
            table = np.loadtxt(io.StringIO(data[body_start:].decode("ascii")), max_rows=count, ndmin=2)
        except (ValueError, UnicodeDecodeError) as err:
            raise _FileProblem(f"malformed PLY vertex data ({err})") from None
        if table.shape != (count, len(names)) and not (count == 0 and table.size == 0):
            raise _FileProblem(f"PLY declares {count} vertices of {len(names)} properties, found {table.shape}")
        return table.reshape(count, len(names))[:, [names.index(c) for c in "xyz"]]
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + t) for name, t in props])
    if len(data) - body_start < count * dtype.itemsize:
        raise _FileProblem(f"PLY declares {count} vertices, the file is truncated")
    rec = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
    return np.stack([rec[c].astype(np.float64) for c in "xyz"], axis=1)


def read_point_cloud(path: str | Path) -> np.ndarray:
    """A lidar frame: (M, 3) x, y, z points, or a (K,) range profile.

    ``.ply`` (ASCII or binary, vertex element first), ``.csv``/``.txt`` (rows of at
    least x, y, z; one optional header line; or one value per line for a profile),
    ``.npy``/``.mat`` (``(M, >=3)`` points or ``(K,)``/``(K, 1)`` profile).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return _read_ply(path.read_bytes())
    if suffix in (".csv", ".txt"):
        lines = [ln for ln in _read_text(path).splitlines() if ln.strip()]
        if lines and re.search(r"[A-Za-z_]{2,}", lines[0]) and not re.fullmatch(r"[\s\d.,;eE+\-naNinfINF]*", lines[0]):
            lines = lines[1:]  # a header line
        if not lines:
            raise _FileProblem("no lidar points")
        rows = [[t for t in re.split(r"[\s,;]+", ln.strip()) if t] for ln in lines]
        if len({len(r) for r in rows}) != 1:
            raise _FileProblem("rows of different lengths")
        try:
            arr = np.array(rows, dtype=np.float64)
        except ValueError as err:
            raise _FileProblem(f"not numeric ({err})") from None
    else:
        arr = np.asarray(_load_array(path))
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise _FileProblem(f"lidar array has dtype {arr.dtype}, expected real numbers")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        return arr.astype(np.float64)
    if arr.ndim == 2 and arr.shape[1] >= 3:
        return arr[:, :3].astype(np.float64)
    raise _Unsupported(f"lidar array of shape {arr.shape} is neither a point cloud (M, >=3) nor a range profile (K,); "
                       "leave 'lidar' out of modalities or choose another column with columns={'lidar': ...}")


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return _load_array(path)
    if _PILImage is None:
        raise _FileProblem("decoding this image needs Pillow (pip install pillow); or convert it to .npy")
    try:
        with _PILImage.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, ...
        raise _FileProblem(f"cannot decode image ({type(err).__name__}: {err})") from None


def _read_radar(path: Path) -> np.ndarray:
    arr = _load_array(path)
    if not np.issubdtype(arr.dtype, np.number):
        raise _FileProblem(f"radar array has dtype {arr.dtype}, expected numbers")
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise _FileProblem(f"radar array of shape {arr.shape}, expected (rx, samples, chirps)")
    return arr


# --------------------------------------------------------------------------- CSV


@dataclass
class _Table:
    path: Path
    header: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        j = [h.lower() for h in self.header].index(name.lower())
        return [r[j].strip() if j < len(r) else "" for r in self.rows]


def _find_csv(root: Path, csv_name: str | None) -> Path:
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


def _read_csv(path: Path) -> _Table:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DeepSenseFormatError(f"{path}: not a UTF-8 CSV file") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as err:
        raise DeepSenseFormatError(f"{path}: not a valid CSV file ({err})") from None
    if not rows:
        raise DeepSenseFormatError(f"{path}: empty CSV (no header row)")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    dupes = sorted({h for h in lower if h and lower.count(h) > 1})
    if dupes:
        raise DeepSenseFormatError(f"{path}: duplicate columns {dupes}")
    return _Table(path, header, rows[1:])


def _resolve_columns(table: _Table, overrides: Mapping[str, str] | None) -> dict[str, str | None]:
    have = {h.lower(): h for h in table.header}
    unknown = set(overrides or {}) - set(COLUMN_CANDIDATES)
    if unknown:
        raise ValueError(f"unknown column roles {sorted(unknown)}; known: {sorted(COLUMN_CANDIDATES)}")
    out: dict[str, str | None] = {}
    for role, candidates in COLUMN_CANDIDATES.items():
        if overrides and role in overrides:
            name = overrides[role]
            if name.lower() not in have:
                raise DeepSenseFormatError(f"{table.path}: missing column {name!r} (given for {role!r}); "
                                           f"columns are {table.header}")
            out[role] = have[name.lower()]
        else:
            out[role] = next((have[c] for c in candidates if c in have), None)
    if out["rf"] is None and out["beam"] is None:
        raise DeepSenseFormatError(
            f"{table.path}: missing required column: need the beam powers "
            f"({' or '.join(COLUMN_CANDIDATES['rf'])}) or a beam label ({' or '.join(COLUMN_CANDIDATES['beam'])}); "
            f"columns are {table.header}")
    return out


def _resolve_path(base: Path, cell: str) -> Path:
    rel = cell.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return base / rel.lstrip("/")


def _parse_int(text: str) -> int | None:
    """An integer cell ("5", "5.0"); None for empty/NaN; raises ValueError otherwise."""
    if text == "" or text.lower() == "nan":
        return None
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"not an integer: {text!r}")
    return int(value)


# --------------------------------------------------------------------------- loader


def load_deepsense_scenario(
    root: str | Path,
    csv_name: str | None = None,
    modalities: Sequence[str] = MODALITIES,
    num_beams: int = 64,
    *,
    sensors: SensorConfig | None = None,
    columns: Mapping[str, str] | None = None,
    beam_label_base: int | None = None,
    label_mismatch: Literal["warn", "raise", "ignore"] = "warn",
    rf_scale: Literal["linear", "db"] = "linear",
    lidar_fov_deg: float = 360.0,
    origin: tuple[float, float] | None = None,
    is_uav: bool | None = None,
    next_step: int = 1,
    missing_files: Literal["raise", "absent"] = "raise",
) -> ISACSamples:
    """Load a DeepSense 6G scenario folder as :class:`ISACSamples`.

    Parameters
    ----------
    root
        The scenario folder (holding the CSV and the ``unit1``/``unit2`` folders), or the
        CSV file itself. Paths in the CSV are relative to the CSV's folder.
    csv_name
        The CSV inside ``root``; default: the only ``scenarioN.csv``/``scenarioN_dev.csv``,
        else the only ``*.csv``.
    modalities
        Modalities to load as inputs (subset of :data:`~fedmoe.config.MODALITIES`). The
        power files and GPS files are read for the labels whatever this says.
    num_beams
        Codebook size: the number of values in each power file.
    sensors
        Output sizes (``camera_size``, ``lidar_rays``, ``lidar_max_range_m``,
        ``radar_range_bins``, ``radar_angle_bins``); default :class:`SensorConfig`.
    columns
        Role -> column name overrides (roles: the keys of :data:`COLUMN_CANDIDATES`),
        e.g. ``{"camera": "unit1_rgb_1", "beam": "beam_index_1"}`` for a task CSV.
    beam_label_base
        0 or 1: the base of the beam label column; None detects it (the base under which
        the labels agree best with the power argmax; 1, DeepSense's convention, on a tie).
    label_mismatch
        What to do when the label column disagrees with the power argmax (the argmax is
        used either way): warn once with a count, raise, or ignore.
    rf_scale
        ``"linear"``: the powers as published (NaN beams -> 0); ``"db"``: ``10 log10``
        (powers <= 0 and NaN beams -> :data:`RF_DB_FLOOR`).
    lidar_fov_deg
        Azimuth span of the lidar range scan, centred on the sensor's +x axis.
    origin
        (lat, lon) reference of the local frame when the CSV has no ``unit1_loc``;
        default then: the first user fix.
    is_uav
        Value of ``conditions["is_uav"]``; None: True iff the CSV has a ``unit2_height``
        column (the drone scenario).
    next_step
        ``next_position`` is the position this many rows later in the same sequence.
    missing_files
        ``"raise"``: a referenced file that does not exist is a DeepSenseFormatError.
        ``"absent"``: the sample lacks that modality instead; rows left with no beam
        label are dropped (with a warning). Malformed files always raise.

    Returns
    -------
    ISACSamples
        ``inputs`` for the requested modalities the CSV has a column for; ``labels``
        ``beam`` (int64, 0-based), ``pathloss_db`` (NaN), ``next_position`` (N, 3);
        ``conditions`` ``position`` (N, 3; east, north, up in m from unit 1; NaN
        without a fix), ``blocked`` and ``blocked_known``, ``is_uav``, ``index`` and
        ``seq_index`` (int64, -1 when absent).

    Raises
    ------
    FileNotFoundError
        ``root`` or the CSV does not exist.
    DeepSenseFormatError
        A missing required column, or a missing or malformed file referenced by the CSV
        (the message names the file, the CSV data row and its ``index``).
    """
    sensors = sensors or SensorConfig()
    mods = tuple(modalities)
    bad = [m for m in mods if m not in MODALITIES]
    if bad:
        raise ValueError(f"unknown modalities {bad}; known: {list(MODALITIES)}")
    if num_beams < 1 or next_step < 1:
        raise ValueError(f"num_beams and next_step must be >= 1, got {num_beams} and {next_step}")
    if not 0.0 < lidar_fov_deg <= 360.0:
        raise ValueError(f"lidar_fov_deg must be in (0, 360], got {lidar_fov_deg}")
    if beam_label_base not in (None, 0, 1):
        raise ValueError(f"beam_label_base must be 0, 1 or None, got {beam_label_base!r}")
    for name, value, allowed in (("label_mismatch", label_mismatch, ("warn", "raise", "ignore")),
                                 ("rf_scale", rf_scale, ("linear", "db")),
                                 ("missing_files", missing_files, ("raise", "absent"))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    csv_path = _find_csv(Path(root), csv_name)
    table = _read_csv(csv_path)
    cols = _resolve_columns(table, columns)
    base = csv_path.parent
    n = len(table.rows)
    index_cells = table.column(cols["index"]) if cols["index"] else [""] * n

    def where(i: int) -> str:
        idx = index_cells[i]
        return f"{csv_path}: data row {i + 1} (index {idx if idx else 'n/a'})"

    def cell_error(i: int, column: str, msg: str) -> DeepSenseFormatError:
        return DeepSenseFormatError(f"{where(i)}: column {column!r}: {msg}")

    def read_files(role: str, reader: Callable[[Path], Any], rows: Sequence[int] | None = None,
                   cache: bool = False) -> list[Any]:
        """``reader(path)`` for the rows (default all) of the role's column; None for empty
        cells (and missing files under ``missing_files="absent"``). ``cache`` reads each
        distinct file once (for small files shared by rows, like unit 1's position)."""
        column = cols[role]
        out: list[Any] = [None] * n
        if column is None:
            return out
        cells = table.column(column)
        seen: dict[Path, Any] = {}
        for i in range(n) if rows is None else rows:
            cell = cells[i]
            if cell == "" or cell.lower() == "nan":
                continue
            path = _resolve_path(base, cell)
            if cache and path in seen:
                out[i] = seen[path]
                continue
            if not path.is_file():
                if missing_files == "absent":
                    continue
                raise DeepSenseFormatError(f"{where(i)}: {path}: missing file (column {column!r})")
            try:
                out[i] = seen[path] = reader(path)
            except _FileProblem as err:
                raise DeepSenseFormatError(f"{where(i)}: {path}: {err.kind} (column {column!r}): {err}") from None
            except OSError as err:
                raise DeepSenseFormatError(f"{where(i)}: {path}: unreadable file (column {column!r}): {err}") from None
        return out

    def read_scalars(role: str) -> list[float | None]:
        """A number per row: the cell itself (``true``/``blocked`` -> 1, ``false``/``not_blocked``
        -> 0), or the single number in the file it names."""
        column = cols[role]
        out: list[float | None] = [None] * n
        if column is None:
            return out
        cells = table.column(column)
        file_rows = []
        for i, cell in enumerate(cells):
            word = cell.lower()
            if word in _TRUE_WORDS or word in _FALSE_WORDS:
                out[i] = float(word in _TRUE_WORDS)
                continue
            try:
                out[i] = float(cell) if cell else None
            except ValueError:
                file_rows.append(i)
        if file_rows:
            values = read_files(role, _read_numbers, rows=file_rows)
            for i in file_rows:
                v = values[i]
                if v is not None and v.size != 1:
                    raise DeepSenseFormatError(f"{where(i)}: {_resolve_path(base, cells[i])}: malformed file "
                                               f"(column {column!r}): expected 1 value, found {v.size}")
                out[i] = None if v is None else float(v[0])
        return [None if v is None or math.isnan(v) else v for v in out]

    # -- labels: power argmax, checked against the label column -----------------------
    powers = read_files("rf", lambda p: _read_power(p, num_beams))
    from_power = np.array([-1 if p is None else int(np.nanargmax(p)) for p in powers], dtype=np.int64)
    raw_labels: list[int | None] = [None] * n
    if cols["beam"] is not None:
        for i, cell in enumerate(table.column(cols["beam"])):
            try:
                raw_labels[i] = _parse_int(cell)
            except ValueError as err:
                raise cell_error(i, cols["beam"], str(err)) from None
    known = [i for i in range(n) if raw_labels[i] is not None]
    label_base = beam_label_base
    if label_base is None and known:
        paired = [i for i in known if from_power[i] >= 0]
        if paired:
            agree = {b: sum(raw_labels[i] - b == from_power[i] for i in paired) for b in (1, 0)}
            label_base = 1 if agree[1] >= agree[0] else 0
        else:
            label_base = 1 if min(raw_labels[i] for i in known) >= 1 else 0  # type: ignore[type-var]
    from_column = np.full(n, -1, dtype=np.int64)
    for i in known:
        b = raw_labels[i] - label_base  # type: ignore[operator]
        if not 0 <= b < num_beams:
            span = f"{label_base}..{num_beams - 1 + label_base}"
            raise cell_error(i, cols["beam"], f"beam label {raw_labels[i]} outside {span}")
        from_column[i] = b
    both = (from_power >= 0) & (from_column >= 0)
    mismatch = np.flatnonzero(both & (from_power != from_column))
    if len(mismatch) and label_mismatch != "ignore":
        first = int(mismatch[0])
        msg = (f"{csv_path}: {len(mismatch)} of {int(both.sum())} rows have a beam label (column {cols['beam']!r}, "
               f"{label_base}-based) that is not the argmax of the power vector; first: data row {first + 1} "
               f"(index {index_cells[first] or 'n/a'}): label {raw_labels[first]} "
               f"vs argmax {from_power[first] + label_base}. "
               "The power argmax is used.")
        if label_mismatch == "raise":
            raise DeepSenseFormatError(msg)
        warnings.warn(msg, stacklevel=2)
    beam = np.where(from_power >= 0, from_power, from_column)
    keep = beam >= 0
    if not keep.all():
        first = int(np.flatnonzero(~keep)[0])
        if missing_files != "absent":
            raise DeepSenseFormatError(f"{where(first)}: no beam label (no power file and no label)")
        warnings.warn(f"{csv_path}: dropped {int((~keep).sum())} rows with no beam label "
                      f"(first: data row {first + 1})", stacklevel=2)

    # -- GPS: local metres from unit 1 -----------------------------------------------
    ue = read_files("ue_loc", _read_latlon)
    bs = read_files("bs_loc", _read_latlon, cache=True)
    heights = read_scalars("height")
    position = np.full((n, 3), np.nan)
    ref = origin if origin is not None else next((u for u in ue if u is not None), None)
    for i in range(n):
        if ue[i] is None:
            continue
        if origin is None and cols["bs_loc"] is not None:
            if bs[i] is None:
                continue  # this row has no reference fix
            lat0, lon0 = bs[i]
        else:
            lat0, lon0 = ref  # type: ignore[misc]
        east, north = local_metres(ue[i][0], ue[i][1], lat0, lon0)
        position[i] = (east, north, heights[i] if heights[i] is not None else 0.0)
    has_fix = np.all(np.isfinite(position), axis=1)

    seq = np.full(n, -1, dtype=np.int64)
    if cols["seq"] is not None:
        for i, cell in enumerate(table.column(cols["seq"])):
            try:
                v = _parse_int(cell)
            except ValueError as err:
                raise cell_error(i, cols["seq"], str(err)) from None
            seq[i] = -1 if v is None else v
    index = np.full(n, -1, dtype=np.int64)
    if cols["index"] is not None:
        for i, cell in enumerate(index_cells):
            try:
                v = _parse_int(cell)
            except ValueError as err:
                raise cell_error(i, cols["index"], str(err)) from None
            index[i] = -1 if v is None else v
    prev_row = np.arange(n)
    next_position = np.full((n, 3), np.nan)
    if cols["seq"] is not None:
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

    # -- inputs -----------------------------------------------------------------------
    present = np.zeros((n, len(MODALITIES)), dtype=bool)
    inputs: dict[str, np.ndarray] = {}
    bits: dict[str, int] = {}
    s = sensors
    if "rf" in mods and cols["rf"] is not None:
        rf = np.zeros((n, num_beams), dtype=np.float32)
        for i, p in enumerate(powers):
            if p is None:
                continue
            if rf_scale == "db":
                with np.errstate(divide="ignore", invalid="ignore"):
                    db = 10.0 * np.log10(np.where(p > 0, p, np.nan))
                rf[i] = np.where(np.isfinite(db), np.maximum(db, RF_DB_FLOOR), RF_DB_FLOOR)
            else:
                rf[i] = np.nan_to_num(p, nan=0.0)
        inputs["rf"], bits["rf"] = rf, num_beams * 16
        present[:, MODALITIES.index("rf")] = [p is not None for p in powers]
    if "gps" in mods and cols["ue_loc"] is not None:
        gps = np.zeros((n, 6), dtype=np.float32)
        gps[has_fix] = np.concatenate([position, position[prev_row]], axis=1)[has_fix]
        inputs["gps"], bits["gps"] = gps, 6 * 32
        present[:, MODALITIES.index("gps")] = has_fix
    if "camera" in mods and cols["camera"] is not None:
        size = s.camera_size
        images = read_files("camera", lambda p: _convert(p, _read_image, lambda a: box_resize(a, size)))
        inputs["camera"] = _stack(images, (3, size, size), np.uint8)
        bits["camera"] = 3 * size * size * 8
        present[:, MODALITIES.index("camera")] = [a is not None for a in images]
    if "lidar" in mods and cols["lidar"] is not None:
        scans = read_files("lidar", lambda p: _convert(
            p, read_point_cloud, lambda a: lidar_range_scan(a, s.lidar_rays, s.lidar_max_range_m, lidar_fov_deg)))
        inputs["lidar"], bits["lidar"] = _stack(scans, (s.lidar_rays,), np.float32), s.lidar_rays * 16
        present[:, MODALITIES.index("lidar")] = [a is not None for a in scans]
    if "radar" in mods and cols["radar"] is not None:
        maps = read_files("radar", lambda p: _convert(
            p, _read_radar, lambda a: range_angle_map(a, s.radar_range_bins, s.radar_angle_bins)))
        inputs["radar"] = _stack(maps, (1, s.radar_range_bins, s.radar_angle_bins), np.float32)
        bits["radar"] = s.radar_range_bins * s.radar_angle_bins * 16
        present[:, MODALITIES.index("radar")] = [a is not None for a in maps]

    blockage = read_scalars("blockage")
    uav = (cols["height"] is not None) if is_uav is None else bool(is_uav)
    labels = {
        "beam": beam.astype(np.int64),
        "pathloss_db": np.full(n, np.nan, dtype=np.float32),
        "next_position": next_position.astype(np.float32),
    }
    if cols["rf"] is not None:
        # Each beam's power relative to the row's best (dB); NaN where the row has no power vector.
        rel = np.full((n, num_beams), np.nan, dtype=np.float32)
        rows = [i for i, p in enumerate(powers) if p is not None]
        if rows:
            rel[rows] = relative_power_db(np.nan_to_num(np.stack([powers[i] for i in rows]), nan=0.0))
        labels["beam_power_db"] = rel
    conditions = {
        "blocked": np.array([b is not None and b != 0 for b in blockage], dtype=bool),
        "blocked_known": np.array([b is not None for b in blockage], dtype=bool),
        "is_uav": np.full(n, uav, dtype=bool),
        "position": position.astype(np.float32),
        "index": index,
        "seq_index": seq,
    }
    samples = ISACSamples(inputs, present, labels, conditions, bits)
    return samples if keep.all() else samples.subset(np.flatnonzero(keep))


def _convert(path: Path, read: Callable[[Path], np.ndarray], convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``convert(read(path))``; a ValueError of the conversion is a problem of the file."""
    data = read(path)
    try:
        return convert(data)
    except ValueError as err:
        raise _FileProblem(str(err)) from None


def _stack(items: list[np.ndarray | None], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    out = np.zeros((len(items), *shape), dtype=dtype)
    for i, a in enumerate(items):
        if a is not None:
            out[i] = a
    return out
