"""numpy ↔ Flower record conversions (the same bytes as Flower's own, read back exactly) and the
packed wire layout of the parameters (one flat array per group)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array

from fedmoe.federated.parameters import FIXED, SHARED, PackedLayout, expert_group
from fedmoe.flower import ArrayFormatError, array_of, numpy_of, to_numpy, to_record
from tests.federated.conftest import npy_blob

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
    assert ((ours.dtype, ours.shape, ours.stype, ours.data)
            == (flowers.dtype, flowers.shape, flowers.stype, flowers.data))
    assert flowers.numpy().shape == a.shape  # Flower's reader accepts ours, shape kept (0-d stays 0-d)
    back = numpy_of(flowers)
    assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)
    assert back.flags.writeable and back.flags.c_contiguous


def test_fortran_ordered_blob_from_elsewhere_is_read_by_numpys_reader():
    a = np.asfortranarray(_rng.normal(size=(3, 5)))
    blob = Array(dtype=str(a.dtype), shape=a.shape, stype="numpy.ndarray", data=npy_blob(a, fortran=True))
    assert b"'fortran_order': True" in blob.data[:128]
    np.testing.assert_array_equal(numpy_of(blob), a)


def test_truncated_blob_is_an_error_not_garbage():
    good = array_of(np.arange(10, dtype=np.float32))
    bad = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=good.data[:-4])
    with pytest.raises(ValueError):
        numpy_of(bad)


_VALUES = np.array([0.01, -0.02, 0.5, 3.0], dtype=np.float32)


def _blob(data: bytes, dtype: str = "float32", shape: tuple[int, ...] = (4,), stype: str = "numpy.ndarray") -> Array:
    return Array(dtype=dtype, shape=shape, stype=stype, data=data)


LIARS = {
    # the header says another byte order, dtype or shape than the metadata: Array.numpy() would follow the header
    "big-endian header": (_blob(npy_blob(_VALUES, descr=">f4")), "header says dtype >f4"),
    "float64 header": (_blob(npy_blob(_VALUES.view(np.float64), descr="<f8")), "header says dtype <f8"),
    "other shape in header": (_blob(npy_blob(_VALUES, shape=(2, 2))), "shape (2, 2)"),
    "garbage": (_blob(bytes(range(15))), "not a .npy blob"),
    "torch stype": (_blob(array_of(_VALUES).data, stype="torch"), "stype 'torch'"),
    "10^11 floats in 100 bytes": (_blob(array_of(_VALUES).data[:100], shape=(10 ** 11,)), "declare 400000000000"),
    "truncated values": (_blob(array_of(_VALUES).data[:-1]), "holds 15 bytes"),
    "object dtype": (_blob(npy_blob(_VALUES), dtype="object"), "not a numeric dtype"),
    "string dtype": (_blob(npy_blob(_VALUES), dtype="<U4"), "not a numeric dtype"),
    "unknown dtype": (_blob(npy_blob(_VALUES), dtype="float33"), "not a NumPy dtype"),
    "negative shape": (_blob(npy_blob(_VALUES), shape=(-4,)), "non-negative"),
    "header too long": (_blob(b"\x93NUMPY\x02\x00" + (10 ** 6).to_bytes(4, "little") + b" " * 16), "longer than"),
    "unparsable header": (_blob(npy_blob(_VALUES).replace(b"'shape'", b"'shope'")), "does not parse"),
}


@pytest.mark.parametrize("name", list(LIARS))
def test_an_array_whose_bytes_are_not_its_metadata_is_refused(name):
    """Finding 1 and 2 of issue 18: the metadata the checks read and the header Flower's rules read must agree,
    and the lengths are checked before anything is decoded (no MemoryError for 10^11 declared floats)."""
    blob, fragment = LIARS[name]
    with pytest.raises(ArrayFormatError, match=None) as err:
        numpy_of(blob)
    assert isinstance(err.value, ValueError) and fragment in str(err.value), str(err.value)


def test_a_header_written_differently_but_meaning_the_same_is_read():
    """Only the meaning of the header matters: extra padding, or format 2.0, reads the same values."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (4,)})
    for data in (buf.getvalue() + _VALUES.tobytes(), npy_blob(_VALUES)):
        np.testing.assert_array_equal(numpy_of(_blob(data)), _VALUES)
        np.testing.assert_array_equal(_blob(data).numpy(), _VALUES)


def test_every_mutated_blob_is_refused_or_read_as_flower_reads_it():
    """2,000 random edits of valid blobs (bytes flipped, cut or added in the header or the values; metadata
    changed): ``numpy_of`` either refuses the blob or returns exactly what ``Array.numpy()`` returns, with the
    metadata's dtype and shape. What the server checks is what a Flower rule aggregates."""
    rng = np.random.default_rng(18)
    originals = [array_of(_VALUES), array_of(np.arange(6, dtype=np.int64).reshape(2, 3)),
                 array_of(np.array(2.5, dtype=np.float32)), _blob(npy_blob(_VALUES.reshape(2, 2), fortran=True),
                                                                   shape=(2, 2))]
    refused = read = 0
    for _ in range(2000):
        a = originals[rng.integers(len(originals))]
        data, dtype, shape = bytearray(a.data), a.dtype, tuple(a.shape)
        what = rng.integers(5)
        if what == 0:  # flip bytes anywhere, mostly in the header
            for _ in range(rng.integers(1, 4)):
                i = rng.integers(min(len(data), 140)) if rng.random() < 0.8 else rng.integers(len(data))
                data[i] = rng.integers(256)
        elif what == 1:
            data = data[:rng.integers(len(data))]
        elif what == 2:
            data += bytes(rng.integers(0, 256, size=rng.integers(1, 9), dtype=np.uint8))
        elif what == 3:
            dtype = str(rng.choice(["float32", "float64", "int64", "int32", ">f4", "<f4", "uint8", "bool", "float16"]))
        else:
            shape = tuple(int(s) for s in rng.integers(0, 5, size=rng.integers(0, 3)))
        blob = Array(dtype=dtype, shape=shape, stype=a.stype, data=bytes(data))
        try:
            ours = numpy_of(blob)
        except ArrayFormatError:
            refused += 1
            continue
        read += 1
        theirs = blob.numpy()
        assert ours.dtype == np.dtype(dtype) == theirs.dtype and ours.shape == shape == theirs.shape
        assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes()
    assert refused > 500 and read > 100, (refused, read)


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


def _state() -> dict[str, np.ndarray]:
    r = np.random.default_rng(1)
    return {
        "experts.0.w": r.normal(size=(3, 2)).astype(np.float32),
        "experts.0.b": r.normal(size=2).astype(np.float32),
        "experts.1.w": r.normal(size=(2, 2)).astype(np.float32),
        "gate.w": r.normal(size=(4, 2)).astype(np.float32),
        "gate.tau": np.array(0.5, dtype=np.float32),
        "heads.w": r.normal(size=(2,)).astype(np.float32),
        "mask": np.array([True, False]),
    }


def test_layout_packs_each_group_into_one_array_and_back():
    state = _state()
    layout = PackedLayout(state, local_patterns=["heads.*"])
    wire = layout.pack(state)
    assert set(wire) == {SHARED, expert_group(0), expert_group(1), "local", "mask"}
    assert wire[SHARED].shape == (9,)  # gate.w (8) + gate.tau (1), in state-dict order
    np.testing.assert_array_equal(wire[expert_group(0)], np.concatenate([state["experts.0.w"].ravel(),
                                                                         state["experts.0.b"]]))
    back = layout.unpack(to_numpy(to_record(wire)))
    assert list(back) == [k for g in layout.groups.values() for k in g] and set(back) == set(state)
    for k in state:
        assert back[k].shape == state[k].shape and back[k].dtype == state[k].dtype
        np.testing.assert_array_equal(back[k], state[k])
    assert layout.groups[FIXED] == ["mask"] and layout.wire_keys(FIXED) == ["mask"]


def test_layout_sends_a_subset_of_whole_groups_only():
    state = _state()
    layout = PackedLayout(state)
    subset = {k: v for k, v in state.items() if k.startswith("experts.1.")}
    assert set(layout.pack(subset)) == {expert_group(1)}
    with pytest.raises(ValueError, match="sent in part"):
        layout.pack({"experts.0.w": state["experts.0.w"]})
    with pytest.raises(ValueError, match="unknown parameters"):
        layout.pack({"nope": np.zeros(1)})


def test_layout_refuses_what_another_model_would_send():
    layout = PackedLayout(_state())
    with pytest.raises(ValueError, match="has 5 values, the model expects 4"):
        layout.unpack({expert_group(1): np.zeros(5, dtype=np.float32)})
    with pytest.raises(ValueError, match="unknown array"):
        layout.unpack({"expert/7": np.zeros(1, dtype=np.float32)})


def test_a_group_mixing_float_widths_travels_entry_by_entry():
    state = _state()
    state["gate.tau"] = state["gate.tau"].astype(np.float64)
    layout = PackedLayout(state)
    assert layout.wire_keys(SHARED) == ["gate.w", "gate.tau", "heads.w"]
    back = layout.unpack(layout.pack(state))
    assert back["gate.tau"].dtype == np.float64 and set(back) == set(state)
