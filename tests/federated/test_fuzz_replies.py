"""Seeded random mutations of valid training replies through a real round of ``ExpertWise`` (issue 18).

Each round replays the devices' real replies (:class:`~tests.federated.conftest.ReplayGrid`: the real
ClientApp answered each message once) with every reply mutated at random: its bytes (header flipped,
truncated, extended, replaced, rewritten with another dtype or shape, NaN/Inf written into the values), its
``Array`` metadata (dtype, shape, stype, data), its records (arrays or metrics missing, unknown or renamed
arrays) or its metrics (missing, of another type, out of range, extra). For every mutation:

* the server never raises;
* the global model stays finite;
* the mutated reply is either rejected with a reason, and the global model is bit for bit the one of the
  round where that device failed, or accepted, and the global model is bit for bit the one of the valid
  reply (the mutation changed nothing that matters: an extra metric, a header written differently, ...).

Mutations that change values into other plausible values (other finite numbers in the arrays, a usage or
sample count within range, a missing group) are not malformed and are not generated: what a device may do
with those is bounded by clipping (``test_poisoning.py``). Byte flips anywhere in a blob, values included,
are fuzzed against Flower's own reader in ``test_records.py``.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Message, MetricRecord

from fedmoe.data.partition import local_size
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import (
    ENERGY_KEY,
    FLOPS_KEY,
    LATENCY_KEY,
    NUM_EXAMPLES_KEY,
    PARTITION_KEY,
    STAGE_KEY,
    TRAIN_LOSS_KEY,
    UPLOAD_BITS_KEY,
    USAGE_KEY,
)
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from fedmoe.strategies.expert_wise import ExpertWise
from tests.federated.conftest import ReplayGrid, npy_blob, tiny_config

NODES = (1, 2, 3)
NUM_EXPERTS = 5


@pytest.fixture(scope="module")
def cfg():
    return tiny_config(partition={"num_devices": 3}, federated={"rounds": 1, "clients_per_round": 3})


def _round(cfg, grid):
    world = world_for(cfg)
    strategy = ExpertWise(world)
    result = strategy.start(grid, to_record(state_to_numpy(world.template.state_dict())), num_rounds=1)
    return {k: v.numpy() for k, v in result.arrays.items()}, strategy


@pytest.fixture(scope="module")
def references(cfg, replay_cache):
    """``{frozenset(failed nodes): global arrays}`` of the round with those nodes failing (all valid replies
    otherwise): what any combination of rejections must give."""
    out = {}
    for k in range(len(NODES) + 1):
        for failed in itertools.combinations(NODES, k):
            out[frozenset(failed)], strategy = _round(cfg, ReplayGrid(3, replay_cache, fail=failed))
            assert strategy.history[0].rejected == 0 and strategy.history[0].completed == 3 - k
    return out


# --------------------------------------------------------------------------- mutations

def _values_offset(a: Array) -> int:
    return len(a.data) - int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize


def _pick_array(rng, reply):
    record = reply.content["arrays"]
    key = str(rng.choice(sorted(record.keys())))
    return record, key, record[key]


def _replace(record, key, a, **fields):
    meta = {"dtype": a.dtype, "shape": tuple(a.shape), "stype": a.stype, "data": a.data, **fields}
    new = Array(dtype="float32", shape=(1,), stype="numpy.ndarray", data=b"")  # then set fields without checks,
    for name, value in meta.items():  # as a device that writes its own protobuf can
        setattr(new, name, value)
    record[key] = new


def m_header_flip(rng, reply):
    record, key, a = _pick_array(rng, reply)
    data = bytearray(a.data)
    end = max(_values_offset(a), 10)
    spots = rng.integers(0, end, size=rng.integers(1, 4))
    for i in spots:
        data[i] = int(rng.integers(256))
    _replace(record, key, a, data=bytes(data))
    return f"{key}: header bytes {spots.tolist()} flipped"


def m_truncate(rng, reply):
    record, key, a = _pick_array(rng, reply)
    cut = int(rng.integers(0, len(a.data)))
    _replace(record, key, a, data=a.data[:cut])
    return f"{key}: cut to {cut} bytes"


def m_extend(rng, reply):
    record, key, a = _pick_array(rng, reply)
    extra = rng.integers(0, 256, size=rng.integers(1, 17), dtype=np.uint8).tobytes()
    _replace(record, key, a, data=a.data + extra)
    return f"{key}: {len(extra)} bytes appended"


def m_garbage(rng, reply):
    record, key, a = _pick_array(rng, reply)
    junk = rng.integers(0, 256, size=rng.integers(0, 65), dtype=np.uint8).tobytes()
    if rng.random() < 0.5:
        junk = b"\x93NUMPY\x01\x00" + junk
    _replace(record, key, a, data=junk)
    return f"{key}: data replaced by {len(junk)} bytes of garbage"


def m_non_finite(rng, reply):
    record, key, a = _pick_array(rng, reply)
    if np.dtype(a.dtype).kind != "f":
        return m_truncate(rng, reply)
    values = np.frombuffer(a.data, dtype=a.dtype, offset=_values_offset(a)).copy()
    bad = float(rng.choice([np.nan, np.inf, -np.inf]))
    values[rng.integers(values.size)] = bad
    _replace(record, key, a, data=a.data[:_values_offset(a)] + values.tobytes())
    return f"{key}: a value set to {bad}"


def m_header_lies(rng, reply):
    record, key, a = _pick_array(rng, reply)
    raw = np.frombuffer(a.data, dtype=np.uint8, offset=_values_offset(a))
    if rng.random() < 0.5:
        descr = str(rng.choice([">f4", "<f8", "<i4", "|u1", "<f2", "|b1", ">i8"]))
        data = npy_blob(raw, descr=descr, shape=(raw.size // np.dtype(descr).itemsize,) if raw.size else (0,))
        what = f"descr {descr}"
    else:
        shape = tuple(int(s) for s in rng.integers(0, 40, size=rng.integers(0, 3)))
        data = npy_blob(raw.view(a.dtype) if raw.size % np.dtype(a.dtype).itemsize == 0 else raw, shape=shape)
        what = f"shape {shape}"
    _replace(record, key, a, data=data)
    return f"{key}: header rewritten with {what}"


def m_header_same(rng, reply):
    """A header that says the same thing in other bytes (format 2.0, or padded): must be accepted, unchanged."""
    import io

    record, key, a = _pick_array(rng, reply)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(a.dtype)), "fortran_order": False,
              "shape": tuple(a.shape)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, header)
    _replace(record, key, a, data=buf.getvalue() + a.data[_values_offset(a):])
    return f"{key}: header in format 2.0"


def m_metadata(rng, reply):
    record, key, a = _pick_array(rng, reply)
    field = str(rng.choice(["dtype", "shape", "stype", "data"]))
    pool = {
        "dtype": ["float64", "float16", ">f4", "int32", "object", "<U8", "V4", "float33", "", "bool", 7, None],
        "shape": [(), (0,), (-1,), (10 ** 11,), (3, "4"), "shape", None, (int(rng.integers(9)), int(rng.integers(9)))],
        "stype": ["torch", "", "numpy", "pickle", None, 3],
        "data": [None, "a string", 42, b""],
    }[field]
    value = pool[int(rng.integers(len(pool)))]
    _replace(record, key, a, **{field: value})
    return f"{key}: metadata {field} = {value!r}"


def m_records(rng, reply):
    content = reply.content
    what = int(rng.integers(5))
    if what == 0:
        content.pop("arrays")
        return "no 'arrays' record"
    if what == 1:
        content.pop("metrics")
        return "no 'metrics' record"
    if what == 2:
        name = str(rng.choice(["backdoor", "shared ", "expert/9", "EXPERT/0", ""]))
        content["arrays"][name] = to_record({"x": np.zeros(int(rng.integers(1, 5)), np.float32)})["x"]
        return f"unknown array {name!r}"
    if what == 3:
        record, key, a = _pick_array(rng, reply)
        other = key + "_"
        record[other] = record.pop(key)
        return f"array {key!r} renamed {other!r}"
    content["metrics"] = ConfigRecord({k: v for k, v in content["metrics"].items()})
    return "'metrics' sent as a ConfigRecord"


def _invalid_metric(rng, key, value, device):
    """A value of a MetricRecord type that the reply may not carry under ``key``."""
    n_max = local_size(world_for(tiny_config(partition={"num_devices": 3})).cfg.partition, 0, device)
    pools = {
        NUM_EXAMPLES_KEY: [0, -1, -10 ** 12, n_max + 1, 10 ** 12, 12.5, float("nan"), float("inf"), [value]],
        USAGE_KEY: [[0.5] * (NUM_EXPERTS - 1), [0.5] * (NUM_EXPERTS + 1), [], [1000.0] + [1.0] * (NUM_EXPERTS - 1),
                    [-0.5] + [1.0] * (NUM_EXPERTS - 1), [float("nan")] * NUM_EXPERTS, 0.5, 1],
        PARTITION_KEY: [-1, 3, 10 ** 9, (device + 1) % 3, 0.5, [device], float("nan")],
        STAGE_KEY: [0, 2, 3, -1, 1.5, [1], float("inf")],
        FLOPS_KEY: [-1.0, 0.0, 1e300, float("nan"), float("inf"), [1.0]],
    }
    generic = [float("nan"), float("inf"), -float("inf"), -1e9, [1.0, 2.0], []]
    pool = pools.get(key, generic)
    return pool[int(rng.integers(len(pool)))]


def m_metrics(rng, reply):
    metrics = dict(reply.content["metrics"])
    device = int(metrics[PARTITION_KEY])
    key = str(rng.choice([NUM_EXAMPLES_KEY, USAGE_KEY, TRAIN_LOSS_KEY, FLOPS_KEY, UPLOAD_BITS_KEY, LATENCY_KEY,
                          ENERGY_KEY, PARTITION_KEY, STAGE_KEY]))
    what = int(rng.integers(4))
    if what == 0:
        metrics.pop(key)
        desc = f"metric {key} missing"
    elif what == 1:
        metrics["extra-" + key] = 1.0  # an unknown metric: ignored
        desc = f"extra metric extra-{key}"
    elif what == 2 and key in (NUM_EXAMPLES_KEY, PARTITION_KEY, STAGE_KEY):
        metrics[key] = float(metrics[key])  # the same integer as a float: the same reply
        desc = f"metric {key} as a float"
    else:
        metrics[key] = _invalid_metric(rng, key, metrics[key], device)
        desc = f"metric {key} = {metrics[key]!r}"
    reply.content["metrics"] = MetricRecord(metrics)
    return desc


MUTATIONS = [m_header_flip, m_truncate, m_extend, m_garbage, m_non_finite, m_header_lies, m_header_same,
             m_metadata, m_records, m_metrics]


# --------------------------------------------------------------------------- the round

def _fuzz(cfg, replay_cache, references, rounds: int, seed: int) -> dict[str, int]:
    outcomes = {"rejected": 0, "accepted": 0}
    for r in range(rounds):
        rng = np.random.default_rng([seed, r])
        done: dict[int, str] = {}

        def mutate(node):
            def tamper(reply: Message) -> None:
                done[node] = MUTATIONS[int(rng.integers(len(MUTATIONS)))](rng, reply)
            return tamper

        grid = ReplayGrid(3, replay_cache, tamper={n: mutate(n) for n in NODES})
        try:
            final, strategy = _round(cfg, grid)
        except Exception as err:  # noqa: BLE001 - the assertion names the mutations
            raise AssertionError(f"round {r} of seed {seed} raised {type(err).__name__}: {err}; mutations {done}") \
                from err
        record = strategy.history[0]
        rejected = {n for n in NODES if any(f.startswith(f"node {n}: rejected: ") and len(f) > 20
                                            for f in record.failures)}
        assert record.rejected == len(rejected) and record.completed == 3 - len(rejected), (record.failures, done)
        expected = references[frozenset(rejected)]
        assert set(final) == set(expected)
        for k, v in final.items():
            assert v.dtype.kind != "f" or np.isfinite(v).all(), (k, done)
            assert np.array_equal(v, expected[k]), (f"round {r}: {k} differs from the reference with nodes "
                                                    f"{sorted(rejected)} rejected; mutations {done}")
        outcomes["rejected"] += len(rejected)
        outcomes["accepted"] += 3 - len(rejected)
    return outcomes


def test_fuzzed_replies_are_rejected_or_change_nothing(cfg, replay_cache, references, caplog):
    """300 mutations (100 rounds of three mutated replies)."""
    with caplog.at_level(logging.ERROR):
        outcomes = _fuzz(cfg, replay_cache, references, rounds=100, seed=18)
    assert outcomes["rejected"] > 150 and outcomes["accepted"] > 20, outcomes


@pytest.mark.slow
def test_fuzzed_replies_are_rejected_or_change_nothing_5000(cfg, replay_cache, references, caplog):
    """5,001 mutations (1,667 rounds), other seeds."""
    with caplog.at_level(logging.ERROR):
        outcomes = _fuzz(cfg, replay_cache, references, rounds=1667, seed=1018)
    assert outcomes["rejected"] > 2500, outcomes
