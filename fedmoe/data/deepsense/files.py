"""Readers of the per-sample files a DeepSense CSV references: each returns an array or raises
:class:`~fedmoe.data.deepsense.errors.FileProblem` saying what is wrong with the file."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np

from fedmoe.data.deepsense.errors import FileProblem, Unsupported

try:  # Pillow decodes JPEG/PNG; it is installed with matplotlib, but stay usable without it.
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _PILImage = None

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileProblem("not a UTF-8 text file") from None


def read_numbers(path: Path) -> np.ndarray:
    """All numbers of a small text file (separated by white space, commas or semicolons)."""
    tokens = [t for t in re.split(r"[\s,;]+", read_text(path)) if t]
    if not tokens:
        raise FileProblem("empty file, expected numbers")
    values = []
    for t in tokens:
        try:
            values.append(float(t))
        except ValueError:
            raise FileProblem(f"not a number: {t[:40]!r}") from None
    return np.array(values, dtype=np.float64)


def read_power(path: Path, num_beams: int) -> np.ndarray:
    p = read_numbers(path)
    if p.size != num_beams:
        raise FileProblem(f"expected {num_beams} beam powers, found {p.size} values")
    if np.any(np.isinf(p)):
        raise FileProblem("infinite beam power")
    if np.all(np.isnan(p)):
        raise FileProblem("every beam power is NaN")
    return p


def read_latlon(path: Path) -> tuple[float, float]:
    v = read_numbers(path)
    if v.size not in (2, 3):
        raise FileProblem(f"expected latitude and longitude (2 values, or 3 with altitude), found {v.size} values")
    lat, lon = float(v[0]), float(v[1])
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 360.0):
        raise FileProblem(f"not a latitude/longitude in degrees: {lat!r}, {lon!r}")
    return lat, lon


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _load_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    content = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    if "data" in content:
        return np.asarray(content["data"])
    if len(content) == 1:
        return np.asarray(next(iter(content.values())))
    raise FileProblem(f"no variable 'data' among {sorted(content)}")


ARRAY_FORMATS: dict[str, Callable[[Path], np.ndarray]] = {".npy": _load_npy, ".mat": _load_mat}
"""File suffix -> array reader: ``.npy`` (never pickles), ``.mat`` (MATLAB up to v7.2, through
:func:`scipy.io.loadmat`: variable ``data``, else the only variable). A new array file type is one entry."""


def load_array(path: Path) -> np.ndarray:
    """An array from one of the :data:`ARRAY_FORMATS` (chosen by the file's suffix)."""
    suffix = path.suffix.lower()
    read = ARRAY_FORMATS.get(suffix)
    if read is None:
        raise FileProblem(f"unsupported file type {suffix or '(none)'} (arrays: {', '.join(ARRAY_FORMATS)})")
    try:
        return read(path)
    except FileProblem:
        raise
    except Exception as err:  # numpy / scipy raise many types for a damaged file
        raise FileProblem(f"cannot read {suffix} file ({type(err).__name__}: {err})") from None


def _read_ply(data: bytes) -> np.ndarray:
    """x, y, z (M, 3) of the vertex element of a PLY file (ASCII or binary; vertex first)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise FileProblem("not a PLY file (no 'ply' magic or no 'end_header')")
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
            raise FileProblem(f"malformed PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise FileProblem(f"unsupported PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise FileProblem("unsupported PLY layout: the first element must be 'vertex'")
    _, count, props = elements[0]
    names = [name for name, _ in props]
    if any(t is None for _, t in props):
        raise FileProblem("unsupported PLY vertex property (list or unknown type)")
    if not {"x", "y", "z"} <= set(names):
        raise FileProblem(f"PLY vertex has no x, y, z properties (has {names})")
    if fmt == "ascii":
        try:
            table = np.loadtxt(io.StringIO(data[body_start:].decode("ascii")), max_rows=count, ndmin=2)
        except (ValueError, UnicodeDecodeError) as err:
            raise FileProblem(f"malformed PLY vertex data ({err})") from None
        if table.shape != (count, len(names)) and not (count == 0 and table.size == 0):
            raise FileProblem(f"PLY declares {count} vertices of {len(names)} properties, found {table.shape}")
        return table.reshape(count, len(names))[:, [names.index(c) for c in "xyz"]]
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + t) for name, t in props])
    if len(data) - body_start < count * dtype.itemsize:
        raise FileProblem(f"PLY declares {count} vertices, the file is truncated")
    rec = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
    return np.stack([rec[c].astype(np.float64) for c in "xyz"], axis=1)


def read_point_cloud(path: str | Path) -> np.ndarray:
    """A lidar frame: (M, 3) x, y, z points, or a (K,) range profile.

    ``.ply`` (ASCII or binary, vertex element first), ``.csv``/``.txt`` (rows of at
    least x, y, z; one optional header line; or one value per line for a profile),
    ``.npy``/``.mat`` (``(M, >=3)`` points or ``(K,)``/``(K, 1)`` profile). A ``.mat`` array
    of shape ``(K, 2)`` (the 2-D lidar of scenarios 8-9) is a range profile: its first
    column, as the DeepSense scenario 9 example script reads it; the second is not used.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return _read_ply(path.read_bytes())
    if suffix in (".csv", ".txt"):
        lines = [ln for ln in read_text(path).splitlines() if ln.strip()]
        if lines and re.search(r"[A-Za-z_]{2,}", lines[0]) and not re.fullmatch(r"[\s\d.,;eE+\-naNinfINF]*", lines[0]):
            lines = lines[1:]  # a header line
        if not lines:
            raise FileProblem("no lidar points")
        rows = [[t for t in re.split(r"[\s,;]+", ln.strip()) if t] for ln in lines]
        if len({len(r) for r in rows}) != 1:
            raise FileProblem("rows of different lengths")
        try:
            arr = np.array(rows, dtype=np.float64)
        except ValueError as err:
            raise FileProblem(f"not numeric ({err})") from None
    else:
        arr = np.asarray(load_array(path))
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise FileProblem(f"lidar array has dtype {arr.dtype}, expected real numbers")
    if arr.ndim == 2 and (arr.shape[1] == 1 or (arr.shape[1] == 2 and suffix == ".mat")):
        arr = arr[:, 0]
    if arr.ndim == 1:
        return arr.astype(np.float64)
    if arr.ndim == 2 and arr.shape[1] >= 3:
        return arr[:, :3].astype(np.float64)
    raise Unsupported(f"lidar array of shape {arr.shape} is neither a point cloud (M, >=3) nor a range profile (K,); "
                       "leave 'lidar' out of modalities or choose another column with columns={'lidar': ...}")


def read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return load_array(path)
    if _PILImage is None:
        raise FileProblem("decoding this image needs Pillow (pip install pillow); or convert it to .npy")
    try:
        with _PILImage.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, ...
        raise FileProblem(f"cannot decode image ({type(err).__name__}: {err})") from None


def read_radar(path: Path) -> np.ndarray:
    arr = load_array(path)
    if not np.issubdtype(arr.dtype, np.number):
        raise FileProblem(f"radar array has dtype {arr.dtype}, expected numbers")
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise FileProblem(f"radar array of shape {arr.shape}, expected (rx, samples, chirps)")
    return arr
