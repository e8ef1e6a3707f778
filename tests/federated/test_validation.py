"""Update validation before aggregation (fedmoe.strategies.validation): every kind of bad update is
rejected with a logged reason and leaves the global parameters exactly as if it never arrived."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord

from fedmoe.federated.parameters import SHARED
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
from fedmoe.flower import to_numpy, to_record
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.strategies.validation import check_arrays, check_metrics, check_steps
from tests.federated.conftest import ReplayGrid, edit_metrics, npy_blob, tiny_config

BAD_NODE = 2


def _edit_arrays(fn):
    def tamper(reply):
        arrays = to_numpy(reply.content["arrays"])
        fn(arrays)
        reply.content["arrays"] = to_record(arrays)
    return tamper


def _first(arrays):
    return next(iter(sorted(arrays)))


def _edit_record(fn):
    """Edit the reply's Flower ``Array`` objects themselves (``fn(record)``): what a device that writes its own
    bytes can send, beyond what ``to_record`` would produce."""
    def tamper(reply):
        fn(reply.content["arrays"])
    return tamper


def _shared_as(**fields):
    """Replace the shared group's ``Array`` by one with these fields; ``data`` may be a function of the honest
    values (a numpy array)."""
    def edit(record):
        honest = record[SHARED]
        values = np.frombuffer(honest.data, dtype=np.float32, offset=len(honest.data) - 4 * int(np.prod(honest.shape)))
        meta = {"dtype": honest.dtype, "shape": tuple(honest.shape), "stype": honest.stype, "data": honest.data}
        meta.update({k: v(values) if callable(v) else v for k, v in fields.items()})
        record[SHARED] = Array(**meta)
    return edit


KINDS = {
    "nan": (_edit_arrays(lambda a: a[_first(a)].__setitem__((0,), np.nan)), "NaN or Inf"),
    "inf": (_edit_arrays(lambda a: a[_first(a)].__setitem__((-1,), np.inf)), "NaN or Inf"),
    "unknown key": (_edit_arrays(lambda a: a.__setitem__("backdoor", np.zeros(3, np.float32))), "unexpected arrays"),
    "wrong shape": (_edit_arrays(lambda a: a.__setitem__(_first(a), a[_first(a)][:-1])), "shape"),
    "wrong dtype": (_edit_arrays(lambda a: a.__setitem__(_first(a), a[_first(a)].astype(np.float64))), "dtype"),
    "absurd norm": (_edit_arrays(lambda a: a.__setitem__(_first(a), a[_first(a)] * 1e6)), "moved by"),
    "negative count": (edit_metrics(**{NUM_EXAMPLES_KEY: -5}), "outside"),
    "absurd count": (edit_metrics(**{NUM_EXAMPLES_KEY: 10 ** 9}), "outside"),
    "fractional count": (edit_metrics(**{NUM_EXAMPLES_KEY: 12.5}), "not a finite integer"),
    "missing count": (edit_metrics(**{NUM_EXAMPLES_KEY: None}), "no 'num-examples'"),
    "bad usage": (edit_metrics(**{USAGE_KEY: [2.0]}), "expert-usage"),
    "other partition": (edit_metrics(**{PARTITION_KEY: 0}), "partition-id"),
    "usage not a list": (edit_metrics(**{USAGE_KEY: 0.5}), "expert-usage is not a list"),
    "NaN latency": (edit_metrics(**{LATENCY_KEY: float("nan")}), "latency-s=nan is not a finite number"),
    # issue 18, finding 1: the header says big-endian; the metadata (float32) and the checks read 0.01 where a
    # Flower rule (Array.numpy() follows the header) would aggregate 1e38 or NaN
    "big-endian header": (_edit_record(_shared_as(data=lambda v: npy_blob(v, descr=">f4"))), "header says dtype >f4"),
    "header of another shape": (_edit_record(_shared_as(data=lambda v: npy_blob(v, shape=(1, v.size)))),
                                "header says"),
    # finding 2: malformed arrays and metrics are rejections, never exceptions out of the round
    "15 bytes of garbage": (_edit_record(_shared_as(data=bytes(range(15)))), "not a .npy blob"),
    "stype torch": (_edit_record(_shared_as(stype="torch")), "stype 'torch'"),
    "10^11 floats in 100 bytes": (_edit_record(_shared_as(shape=(10 ** 11,), data=lambda v: npy_blob(v)[:100])),
                                  "has shape (100000000000,)"),
    "unknown array of garbage": (_edit_record(lambda r: r.__setitem__("backdoor", Array(
        dtype="float32", shape=(2 ** 28,), stype="numpy.ndarray", data=b"never decoded"))), "unexpected arrays"),
    "no arrays": (lambda reply: reply.content.pop("arrays"), "lacks 'metrics' or 'arrays'"),
    "scalar usage": (edit_metrics(**{USAGE_KEY: 0.5}), "expert-usage is not a list"),
    "missing latency": (edit_metrics(**{LATENCY_KEY: None}), "no 'latency-s'"),
    "missing usage": (edit_metrics(**{USAGE_KEY: None}), "no 'expert-usage'"),
    "list partition-id": (edit_metrics(**{PARTITION_KEY: [1, 2]}), "partition-id=[1, 2] is not a finite integer"),
    "count -10^12": (edit_metrics(**{NUM_EXAMPLES_KEY: -10 ** 12}), "outside"),
    "other stage": (edit_metrics(**{STAGE_KEY: 2}), "stage 2"),
    # finding 5: costs and loss
    "energy -1e9": (edit_metrics(**{ENERGY_KEY: -1e9}), "energy-j=-1e+09 is negative"),
    "NaN loss": (edit_metrics(**{TRAIN_LOSS_KEY: float("nan")}), "train-loss=nan is not a finite number"),
    "flops beyond every expert on every pass": (edit_metrics(**{FLOPS_KEY: 1e30}), "flops=1e+30 is outside"),
    "flops below the usage reported": (edit_metrics(**{FLOPS_KEY: 0.0}), "flops=0 is outside"),
    # finding 8: a usage of the right length outside [0, 1] would raise the device's weight on an expert
    "usage 1000": (edit_metrics(**{USAGE_KEY: [1000.0, 1.0, 1.0, 1.0, 1.0]}),
                   "expert-usage has entries outside [0, 1]"),
}


def _one_round(cfg, grid):
    world = world_for(cfg)
    strategy = ExpertWise(world)
    initial = state_to_numpy(world.template.state_dict())
    result = strategy.start(grid, to_record(initial), num_rounds=1)
    return {k: v.numpy() for k, v in result.arrays.items()}, strategy


@pytest.fixture(scope="module")
def cfg():
    return tiny_config(partition={"num_devices": 3}, federated={"rounds": 1, "clients_per_round": 3})


@pytest.fixture(scope="module")
def without_bad_node(cfg, replay_cache):
    """The same round with the bad node failing outright: what a rejected update must amount to."""
    final, strategy = _one_round(cfg, ReplayGrid(3, replay_cache, fail=[BAD_NODE]))
    assert strategy.history[0].completed == 2
    return final


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_update_is_rejected_and_leaves_the_global_model_unchanged(kind, cfg, without_bad_node, replay_cache,
                                                                     caplog):
    """The round is replayed (:class:`ReplayGrid`): the devices' real replies, the bad node's tampered with."""
    tamper, reason = KINDS[kind]
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.expert_wise"):
        final, strategy = _one_round(cfg, ReplayGrid(3, replay_cache, tamper={BAD_NODE: tamper}))
    rec = strategy.history[0]
    assert rec.completed == 2 and rec.rejected == 1 and rec.failed == 1
    assert any(f"node {BAD_NODE}: rejected" in f and reason in f for f in rec.failures), rec.failures
    assert any("rejected the update of node" in r.message and reason in r.message for r in caplog.records)
    assert set(final) == set(without_bad_node)
    for k in final:
        np.testing.assert_array_equal(final[k], without_bad_node[k], err_msg=k)


@pytest.fixture(scope="module")
def honest(cfg, replay_cache):
    """``(global arrays, strategy)`` of the round with every device honest."""
    return _one_round(cfg, ReplayGrid(3, replay_cache))


def test_honest_updates_all_pass(honest):
    _, strategy = honest
    assert strategy.history[0].completed == 3 and strategy.history[0].rejected == 0
    assert strategy.history[0].clipped == 0


def _header_2_0(record):
    """The same values under a format-2.0 header (what np.save writes for a huge header): the same array."""
    import io

    honest = record[SHARED]
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": "<f4", "fortran_order": False, "shape": tuple(honest.shape)})
    values = honest.data[len(honest.data) - 4 * int(np.prod(honest.shape)):]
    record[SHARED] = Array(dtype=honest.dtype, shape=tuple(honest.shape), stype=honest.stype,
                           data=buf.getvalue() + values)


def test_a_blob_written_differently_is_the_same_update_and_the_rules_get_canonical_bytes(cfg, honest, replay_cache):
    """Finding 1: what a rule aggregates is rebuilt from the values the checks read (``Update.message``): a
    reply whose header is written in another .npy version is accepted, gives the honest global model bit for
    bit, and the rule never sees the device's own bytes."""
    final, strategy = _one_round(cfg, ReplayGrid(3, replay_cache, tamper={BAD_NODE: _edit_record(_header_2_0)}))
    assert strategy.history[0].completed == 3 and strategy.history[0].rejected == 0
    for k in final:
        np.testing.assert_array_equal(final[k], honest[0][k], err_msg=k)
    grid = ReplayGrid(3, replay_cache, tamper={BAD_NODE: _edit_record(_header_2_0)})
    strategy = ExpertWise(world_for(cfg))
    initial = to_record(state_to_numpy(strategy.world.template.state_dict()))
    replies = grid.send_and_receive(list(strategy.configure_train(1, initial, ConfigRecord(), grid)))
    raw = next(r for r in replies if r.metadata.src_node_id == BAD_NODE).content["arrays"][SHARED].data
    accepted, reasons = strategy.validate(1, replies)
    assert len(accepted) == 3 and not reasons
    handed = [m.content["arrays"][SHARED].data for m in accepted]
    assert raw not in handed and all(d == to_record({SHARED: to_numpy(m.content["arrays"])[SHARED]})[SHARED].data
                                     for d, m in zip(handed, accepted))


def test_the_round_record_holds_the_servers_costs_not_the_devices(cfg, honest, replay_cache):
    """Finding 5: latency, energy and upload bits a device reports (finite, non-negative, so accepted) do not
    reach the round record: the server computes them from the FLOPs, the bits received, the rate it
    allocated and the device's profile, and gets the honest round's values."""
    lying = edit_metrics(**{LATENCY_KEY: 1e6, ENERGY_KEY: 1e6, UPLOAD_BITS_KEY: 1.0})
    _, strategy = _one_round(cfg, ReplayGrid(3, replay_cache, tamper={BAD_NODE: lying}))
    rec, ref = strategy.history[0], honest[1].history[0]
    assert rec.completed == 3 and rec.rejected == 0
    assert (rec.latency_s, rec.energy_j, rec.upload_bits, rec.clock_s) == (ref.latency_s, ref.energy_j,
                                                                         ref.upload_bits, ref.clock_s)
    assert rec.latency_s < 1e6 and rec.upload_bits > 1e4


def test_checks_by_hand():
    sent = {"w": np.ones(4, np.float32)}
    assert check_arrays({"w": np.zeros(4, np.float32)}, sent) is None
    assert check_arrays({}, sent) is None  # a reply may leave a group out
    assert "dtype" in check_arrays({"w": np.zeros(4, np.float16)}, sent)
    assert check_steps({"w": np.full(4, 10.0)}, {"w": np.ones(4)}, 10.0) is None  # moved 18 ≤ 10 · ‖θ‖ = 20
    assert "moved by" in check_steps({"w": np.full(4, 30.0)}, {"w": np.ones(4)}, 10.0)
    assert check_steps({"b": np.full(4, 3.0)}, {"b": np.zeros(4)}, 10.0) is None  # floor max(‖θ‖, 1)
    assert check_metrics({NUM_EXAMPLES_KEY: 7, USAGE_KEY: [0.0, 1.0]}, 7, 2) is None
    assert "outside" in check_metrics({NUM_EXAMPLES_KEY: 8}, 7, 2)
    assert "not a finite integer" in check_metrics({NUM_EXAMPLES_KEY: float("nan")}, 7, 2)
    assert "not a finite integer" in check_metrics({NUM_EXAMPLES_KEY: True}, 7, 2)
    assert "2 experts" in check_metrics({NUM_EXAMPLES_KEY: 3, USAGE_KEY: [0.5]}, 7, 2)


def test_clipping_by_hand():
    """``bound_updates`` on a packed group of two entries, three replies, ``c = 4``: entry ``a`` moved by 1, 2
    and 10 (lower median 2: the third is scaled down to 8, its direction kept); entry ``b`` moved by the third
    reply alone (undone); the replies left alone are the same objects."""
    from fedmoe.federated.protocol import TrainReply
    from fedmoe.strategies.validation import Update, bound_updates

    sent = {"g": np.zeros(4, np.float32)}
    entries = {"g": [("a", "g", slice(0, 2)), ("b", "g", slice(2, 4))]}
    reply = TrainReply(1, (1.0,), 0.0, 0.0, 0.0, 0.0, 0.0, 0, 1)
    updates = [Update(1, 0, reply, {"g": np.array([1, 0, 0, 0], np.float32)}),
               Update(2, 1, reply, {"g": np.array([0, 2, 0, 0], np.float32)}),
               Update(3, 2, reply, {"g": np.array([6, 8, 3, 4], np.float32)})]
    out, notes = bound_updates(updates, sent, entries, {"g": [0, 1, 2]}, ratio=4.0)
    assert out[0] is updates[0] and out[1] is updates[1]
    np.testing.assert_allclose(out[2].arrays["g"], [4.8, 6.4, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(updates[2].arrays["g"], [6, 8, 3, 4])  # the accepted reply itself is kept
    assert notes == ["device 2: clipped 2 entries of g (largest ‖Δ‖ 10 → 8)"]
    assert bound_updates(updates, sent, entries, {"g": [2]}, ratio=4.0)[0][2] is updates[2]  # nothing to compare with
