"""The only place in ``fedmoe/`` that imports Flower: conversions between numpy and Flower records.

A Flower ``Array`` carries its values in NumPy's ``.npy`` format. ``Array(ndarray)`` and
``Array.numpy()`` go through ``np.save``/``np.load``, which parse the header text every
time (about 0.1 ms an array; a mixture has over a hundred state-dict entries, and every
message carries them). :func:`to_record` and :func:`to_numpy` write and read the same
bytes directly: the header of a (dtype, shape) is built once with NumPy's own writer and
cached, and reading takes the values after the header without parsing it twice. What
they produce is byte-for-byte what ``np.save`` writes, so Flower's own code (its
aggregation rules call ``Array.numpy()``) reads it unchanged.

An ``Array`` has two descriptions of its values: its metadata (``dtype``, ``shape``,
``stype``) and the ``.npy`` header inside ``data``. Flower's ``Array.numpy()`` follows the
header; a reader that followed the metadata instead could be shown one array while a rule
aggregates another (a header saying ``>f4`` over little-endian bytes turns 0.01 into 1e38).
So :func:`numpy_of` reads an ``Array`` only when both agree, and :func:`npy_layout` checks
that before anything is decoded (:class:`ArrayFormatError` otherwise):

* ``stype`` is ``"numpy.ndarray"``, ``dtype`` names a numeric NumPy dtype (bool, integer,
  float or complex: never object, string or structured), ``shape`` is a tuple of
  non-negative integers;
* ``data`` is a ``.npy`` blob (magic, version 1, 2 or 3) exactly as long as its header and
  ``prod(shape) × itemsize`` bytes of values — checked from the lengths alone, so that a
  100-byte blob declaring 10¹¹ floats is refused without allocating anything;
* the header's dtype (byte order included) and shape are the metadata's. A header in
  Fortran order is read as ``np.load`` reads it (both readers then give the same values).

Nothing is ever unpickled: object dtypes are refused before any byte of the values is read.
"""

from __future__ import annotations

import io
import math
import warnings
from functools import lru_cache
from typing import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

_NPY_MAGIC = b"\x93NUMPY"
NUMPY_STYPE = "numpy.ndarray"
"""The ``stype`` of an ``Array`` holding ``.npy`` bytes (Flower's ``SType.NUMPY``)."""
MAX_HEADER_BYTES = 10_000
"""The longest ``.npy`` header read (NumPy's own default limit of ``np.load``)."""
_NUMERIC_KINDS = frozenset("biufc")


class ArrayFormatError(ValueError):
    """A Flower ``Array`` whose bytes are not the ``.npy`` blob its metadata describes (module docstring)."""


@lru_cache(maxsize=4096)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered array of ``dtype`` and ``shape``."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # a header over 64 KiB (a huge number of dimensions): format 2.0, as np.save does
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _metadata(array: Array) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an ``Array``'s metadata declares, checked (module docstring)."""
    stype, dtype, shape = getattr(array, "stype", None), getattr(array, "dtype", None), getattr(array, "shape", None)
    if stype != NUMPY_STYPE:
        raise ArrayFormatError(f"stype {stype!r} is not {NUMPY_STYPE!r}")
    if not isinstance(dtype, str):
        raise ArrayFormatError(f"dtype {dtype!r} is not a string")
    try:
        dt = np.dtype(dtype)
    except Exception:  # noqa: BLE001 - np.dtype raises TypeError, ValueError, SyntaxError (…) on odd strings
        raise ArrayFormatError(f"dtype {dtype[:40]!r} is not a NumPy dtype") from None
    if dt.kind not in _NUMERIC_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise ArrayFormatError(f"dtype {dtype[:40]!r} is not a numeric dtype")
    if not isinstance(shape, (tuple, list)) or len(shape) > 64 \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ArrayFormatError(f"shape {str(shape)[:60]} is not a tuple of at most 64 non-negative integers")
    return dt, tuple(int(s) for s in shape)


def npy_layout(array: Array) -> tuple[np.dtype, tuple[int, ...], int, bool]:
    """``(dtype, shape, offset, fortran_order)`` of an ``Array`` whose header agrees with its
    metadata and whose length is that of its values; else :class:`ArrayFormatError`.

    Nothing of the values is read: the lengths are compared first, then the header (at most
    :data:`MAX_HEADER_BYTES`) is matched with the one ``np.save`` writes for the metadata,
    or parsed with NumPy's own (literal, never pickling) header reader and compared.
    """
    dtype, shape = _metadata(array)
    data = array.data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArrayFormatError(f"data is a {type(data).__name__}, not bytes")
    data = memoryview(data)
    if len(data) < 10 or bytes(data[:6]) != _NPY_MAGIC:
        raise ArrayFormatError(f"data ({len(data)} bytes) is not a .npy blob")
    version = (data[6], data[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ArrayFormatError(f".npy version {version} is not 1, 2 or 3")
    width = 2 if version == (1, 0) else 4
    if len(data) < 8 + width:
        raise ArrayFormatError(f"data ({len(data)} bytes) is not a .npy blob")
    offset = 8 + width + int.from_bytes(data[8:8 + width], "little")
    if offset - 8 - width > MAX_HEADER_BYTES:
        raise ArrayFormatError(f".npy header of {offset - 8 - width} bytes is longer than {MAX_HEADER_BYTES}")
    values = math.prod(shape) * dtype.itemsize
    if len(data) != offset + values:
        raise ArrayFormatError(f"data holds {len(data) - offset} bytes of values; dtype {dtype} and shape {shape} "
                               f"declare {values}")
    if bytes(data[:offset]) == _npy_header(dtype.str, shape):
        return dtype, shape, offset, False
    fp = io.BytesIO(bytes(data[:offset]))
    try:
        np.lib.format.read_magic(fp)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        with warnings.catch_warnings():  # a crafted header's escape sequences would warn (ast) on the server's log
            warnings.simplefilter("ignore")
            h_shape, fortran, h_dtype = reader(fp, max_header_size=MAX_HEADER_BYTES)
    except Exception as err:  # noqa: BLE001 - NumPy's reader raises ValueError, or others on odd headers
        raise ArrayFormatError(f".npy header does not parse: {str(err)[:80]}") from None
    if h_dtype != dtype or tuple(h_shape) != shape:
        raise ArrayFormatError(f".npy header says dtype {h_dtype.str} and shape {tuple(h_shape)}, "
                               f"the metadata dtype {dtype.str} and shape {shape}")
    return dtype, shape, offset, bool(fortran)


def array_of(value: np.ndarray) -> Array:
    """A Flower ``Array`` holding ``value`` (the bytes ``Array(value)`` would hold, without ``np.save``)."""
    value = np.asarray(value)
    if not value.flags.c_contiguous:  # (np.ascontiguousarray would also turn a 0-d array into shape (1,))
        value = np.ascontiguousarray(value)
    if value.dtype.hasobject:
        raise TypeError("object arrays cannot be sent in a Flower message")
    dtype, shape = str(value.dtype), tuple(int(s) for s in value.shape)
    return Array(dtype=dtype, shape=shape, stype=NUMPY_STYPE, data=_npy_header(dtype, shape) + value.tobytes())


def numpy_of(array: Array) -> np.ndarray:
    """The values of a Flower ``Array`` as a writable, C-ordered numpy array: what ``Array.numpy()``
    gives, without ``np.load``, for an ``Array`` that :func:`npy_layout` accepts; else
    :class:`ArrayFormatError` (a ``ValueError``)."""
    dtype, shape, offset, fortran = npy_layout(array)
    flat = np.frombuffer(array.data, dtype=dtype, count=math.prod(shape), offset=offset)
    return np.array(flat.reshape(shape, order="F" if fortran else "C"), order="C")


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` of named numpy arrays (order kept)."""
    return ArrayRecord({k: array_of(v) for k, v in arrays.items()})


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays of an ``ArrayRecord`` (:class:`ArrayFormatError` on a malformed one)."""
    return {k: numpy_of(v) for k, v in record.items()}


def record_bits(record: ArrayRecord, bool_bits: int = 8, exclude: tuple[str, ...] = ()) -> int:
    """Bits of the values of ``record`` from the arrays' dtype and shape alone (nothing is decoded):
    every entry at its dtype's width, booleans at ``bool_bits``; keys in ``exclude`` left out."""
    total = 0
    for key, arr in record.items():
        if key in exclude:
            continue
        dtype = np.dtype(arr.dtype)
        width = bool_bits if dtype == np.bool_ else dtype.itemsize * 8
        total += int(np.prod(arr.shape, dtype=np.int64)) * width
    return total
