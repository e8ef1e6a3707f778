"""numpy ↔ Flower record conversions: the same bytes as Flower's own, read back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array

from fedmoe.flower import array_of, numpy_of, to_numpy, to_record

_rng = np.random.default_rng(0)
CASES = {
    "float32 matrix": _rng.normal(size=(3, 4)).astype(np.float32),
    "0-d float": np.array(2.5),
    "int64 vector": np.arange(5),
    "empty": np.zeros((0, 3)),
    "bool": np.array([True, False, True]),
    "float16 3-d": _rng.normal(size=(2, 3, 4)).astype(np.float16),
    "fortran-ordered": np.asfortranarray(_rng.normal(size=(3, 5))),
    "non-contiguous view": _rng.normal(size=(6, 6))[::2, 1::2],
}


@pytest.mark.parametrize("name", list(CASES))
def test_written_bytes_are_what_flower_writes_and_read_back_exactly(name):
    a = CASES[name]
    ours = array_of(a)
    flowers = Array(np.ascontiguousarray(a) if a.ndim else a)
    assert (ours.dtype, ours.shape, ours.stype, ours.data) == (flowers.dtype, flowers.shape, flowers.stype, flowers.data)
    assert flowers.numpy().shape == a.shape  # Flower's reader accepts ours, shape kept (0-d stays 0-d)
    back = numpy_of(flowers)
    assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)
    assert back.flags.writeable and back.flags.c_contiguous


def test_fortran_ordered_blob_from_elsewhere_is_read_by_numpys_reader():
    a = np.asfortranarray(_rng.normal(size=(3, 5)))
    blob = Array(dtype=str(a.dtype), shape=a.shape, stype="numpy.ndarray", data=_npy_bytes(a))
    assert b"'fortran_order': True" in blob.data[:128]
    np.testing.assert_array_equal(numpy_of(blob), a)


def test_truncated_blob_is_an_error_not_garbage():
    good = array_of(np.arange(10, dtype=np.float32))
    bad = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=good.data[:-4])
    with pytest.raises(ValueError):
        numpy_of(bad)


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="object"):
        array_of(np.array([{"a": 1}], dtype=object))


def test_record_round_trip_keeps_names_and_order():
    arrays = {"b": np.ones((2, 2), dtype=np.float32), "a": np.array(3, dtype=np.int64)}
    back = to_numpy(to_record(arrays))
    assert list(back) == ["b", "a"]
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].shape == arrays[k].shape


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)  # keeps Fortran order
    return buf.getvalue()
