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


def _npy_data_offset(data: bytes) -> int | None:
    """Where the values of a ``.npy`` blob start, or ``None`` when it is not a plain C-ordered
    array this module reads without ``np.load`` (then ``Array.numpy()`` reads or rejects it)."""
    if len(data) < 12 or not data.startswith(_NPY_MAGIC):
        return None
    start = 8 + (2 if data[6] == 1 else 4)  # magic, version, then a 2- (v1) or 4-byte header length
    end = start + int.from_bytes(data[8:start], "little")
    if b"'fortran_order': False" not in bytes(data[start:end]):
        return None
    return end


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
    offset = _npy_data_offset(data)
    if offset is None:
        return array.numpy()
    dtype = np.dtype(array.dtype)
    count = int(np.prod(array.shape, dtype=np.int64)) if array.shape else 1
    if len(data) - offset != count * dtype.itemsize:
        return array.numpy()  # let np.load report the malformed blob
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(array.shape).copy()


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` of named numpy arrays (order kept)."""
    return ArrayRecord({k: array_of(v) for k, v in arrays.items()})


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays of an ``ArrayRecord``."""
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
