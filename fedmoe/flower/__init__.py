"""The only place in ``fedmoe/`` that imports Flower: conversions between numpy and Flower records.

A Flower ``Array`` carries its values in NumPy's ``.npy`` format. ``Array(ndarray)`` and
``Array.numpy()`` go through ``np.save``/``np.load``, which parse the header text every
time (about 0.1 ms an array; a mixture has over a hundred state-dict entries, and every
message carries them). :func:`to_record` and :func:`to_numpy` write and read the same
bytes directly: the header of a (dtype, shape) is built once with NumPy's own writer and
cached, and reading takes the values after the header without parsing it twice. What
they produce is byte-for-byte what ``np.save`` writes, so Flower's own code (its
aggregation rules call ``Array.numpy()``) reads it unchanged.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

_NPY_MAGIC = b"\x93NUMPY"


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


@lru_cache(maxsize=4096)
def _npy_data_offset(header: bytes) -> int | None:
    """Where the values start after ``header`` (the first bytes of a ``.npy`` blob), or ``None``
    when the blob is not a plain C-ordered array this module can read without ``np.load``."""
    if not header.startswith(_NPY_MAGIC):
        return None
    major = header[6]
    size_bytes = 2 if major == 1 else 4
    start = 8 + size_bytes
    length = int.from_bytes(header[8:start], "little")
    text = header[start:start + length]
    if b"'fortran_order': False" not in text:
        return None
    return start + length


def array_of(value: np.ndarray) -> Array:
    """A Flower ``Array`` holding ``value`` (the bytes ``Array(value)`` would hold, without ``np.save``)."""
    value = np.asarray(value)
    if not value.flags.c_contiguous:  # (np.ascontiguousarray would also turn a 0-d array into shape (1,))
        value = np.ascontiguousarray(value)
    if value.dtype.hasobject:
        raise TypeError("object arrays cannot be sent in a Flower message")
    dtype, shape = str(value.dtype), tuple(int(s) for s in value.shape)
    return Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=_npy_header(dtype, shape) + value.tobytes())


def numpy_of(array: Array) -> np.ndarray:
    """The values of a Flower ``Array`` as a writable numpy array (``Array.numpy()``, without ``np.load``)."""
    if array.stype != "numpy.ndarray":
        return array.numpy()  # Flower raises its own error for other serialisations
    data = array.data
    # headers are at most a few hundred bytes; 16-byte aligned in the format, 128 is typical
    offset = _npy_data_offset(bytes(data[:_header_span(data)]))
    if offset is None:
        return array.numpy()
    dtype = np.dtype(array.dtype)
    count = int(np.prod(array.shape, dtype=np.int64)) if array.shape else 1
    if len(data) - offset != count * dtype.itemsize:
        return array.numpy()  # let np.load report the malformed blob
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(array.shape).copy()


def _header_span(data: bytes) -> int:
    """Bytes of ``data`` that hold the ``.npy`` magic, version, length field and header text."""
    if len(data) < 12 or not data.startswith(_NPY_MAGIC):
        return min(len(data), 12)
    size_bytes = 2 if data[6] == 1 else 4
    start = 8 + size_bytes
    return min(len(data), start + int.from_bytes(data[8:start], "little"))


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` of named numpy arrays (order kept)."""
    return ArrayRecord({k: array_of(v) for k, v in arrays.items()})


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays of an ``ArrayRecord``."""
    return {k: numpy_of(v) for k, v in record.items()}
