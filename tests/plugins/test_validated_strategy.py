"""ValidatedStrategy around Flower's own strategies, on the plain digits app (an MLP with BatchNorm):
honest replies pass and are averaged exactly as sent, every kind of malformed reply is rejected with
its reason and never reaches the rule."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg, FedMedian, Krum

from fedmoe.flower import to_numpy, to_record
from fedmoe.plugins.validation import ValidatedStrategy
from tests.federated.conftest import assert_close, edit_metrics, npy_blob

VICTIM = 102


def _weighted_mean(replies: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    return {k: sum(wi * r[k].astype(np.float64) for wi, r in zip(w, replies)) for k in replies[0]}


def _honest(grid) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """The last round's replies of the nodes other than the victim, by hand: arrays and weights."""
    last = [(m, r) for m, r in grid.exchanges if m.metadata.message_type == "train"][-3:]
    keep = [r for m, r in last if m.metadata.dst_node_id != VICTIM and not r.has_error()]
    return ([to_numpy(r.content["arrays"]) for r in keep],
            [float(r.content["metrics"]["num-examples"]) for r in keep])


def _edit_array(name: str, change):
    def tamper(reply):
        arrays = to_numpy(reply.content["arrays"])
        change(arrays, name)
        reply.content["arrays"] = to_record(arrays)
    return tamper


def _set(value):
    def change(arrays, name):
        arrays[name] = value(arrays[name])
    return change


def _lying_blob(reply):
    """The weight's ``Array`` metadata says (32, 64) float32, its ``.npy`` header says float64."""
    record = reply.content["arrays"]
    a = record["layers.0.weight"]
    values = np.frombuffer(a.data[-32 * 64 * 4:], dtype=np.float32)
    new = Array(dtype="float32", shape=(32, 64), stype="numpy.ndarray", data=b"")
    new.data = npy_blob(values.astype(np.float64)[: 32 * 32], descr="<f8", shape=(32, 64))
    record["layers.0.weight"] = new


ATTACKS = {
    "nan": (_edit_array("layers.0.weight", _set(lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a)
                                                 .astype(a.dtype))), "NaN or Inf"),
    "extra array": (_edit_array("backdoor", lambda arrays, n: arrays.__setitem__(n, np.ones(3, np.float32))),
                    "unexpected arrays"),
    "missing array": (_edit_array("layers.3.bias", lambda arrays, n: arrays.pop(n)), "missing arrays"),
    "reshaped": (_edit_array("layers.3.bias", _set(lambda a: np.zeros(11, a.dtype))), "shape"),
    "other dtype": (_edit_array("layers.3.bias", _set(lambda a: a.astype(np.float64))), "dtype"),
    "huge step": (_edit_array("layers.3.weight", _set(lambda a: a + 1e3)), "moved by"),
    "inflated weight": (edit_metrics(**{"num-examples": 10**6}), "outside"),
    "zero weight": (edit_metrics(**{"num-examples": 0}), "outside"),
    "fractional weight": (edit_metrics(**{"num-examples": 2.5}), "not a finite integer"),
    "nan metric": (edit_metrics(train_loss=float("nan")), "not finite"),
    "no metrics": (edit_metrics(metrics=None), "metric records"),
    "lying blob": (_lying_blob, "'layers.0.weight'"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_malformed_reply_is_rejected_and_the_rest_averaged_exactly(attack, digits_grid, initial_arrays, caplog):
    tamper, reason = ATTACKS[attack]
    grid = digits_grid(3, tamper={VICTIM: tamper})
    strategy = ValidatedStrategy(FedAvg(min_available_nodes=3), max_examples=500)
    result = strategy.start(grid, initial_arrays, num_rounds=1)
    assert [(n, r) for _, n, r in strategy.rejected if reason in r] and {n for _, n, _ in strategy.rejected} == {VICTIM}
    assert any(f"rejected the update of node {VICTIM}" in r.message for r in caplog.records)
    replies, weights = _honest(grid)
    expected = _weighted_mean(replies, weights)
    got = to_numpy(result.arrays)
    for name, value in expected.items():  # what FedAvg made of the two honest replies alone
        if got[name].dtype.kind == "f":
            assert_close(got[name], value, rtol=1e-5, atol=1e-7)


def test_honest_batchnorm_updates_pass_and_keep_their_dtypes(digits_grid, initial_arrays):
    """FedAvg averages BatchNorm's int64 counter into float64; the devices send it back as int64. The
    wrapper rounds the aggregate back to the sent dtype, so round 2's honest replies pass too."""
    grid = digits_grid(3)
    strategy = ValidatedStrategy(FedAvg(min_available_nodes=3))
    result = strategy.start(grid, initial_arrays, num_rounds=2)
    assert strategy.rejected == []
    final = to_numpy(result.arrays)
    assert final["layers.1.num_batches_tracked"].dtype == np.int64
    replies, weights = _honest(grid)  # (the victim is honest here: average all three of the last round)
    last = [r for m, r in grid.exchanges if m.metadata.message_type == "train"][-3:]
    replies = [to_numpy(r.content["arrays"]) for r in last]
    weights = [float(r.content["metrics"]["num-examples"]) for r in last]
    expected = _weighted_mean(replies, weights)
    assert_close(final["layers.0.weight"], expected["layers.0.weight"], rtol=1e-5, atol=1e-7)
    assert final["layers.1.num_batches_tracked"] == np.rint(expected["layers.1.num_batches_tracked"])


def test_the_buffers_are_left_out_of_the_step_check_unless_named_otherwise(digits_grid, initial_arrays):
    """One round moves the weights by at most about half their norm, BatchNorm's running mean by about
    its own norm and its step counter from 0 to the number of batches (15): at a ratio of 0.8 the honest
    replies pass because the buffers are left out; a wrapper told that no array is a buffer
    (``buffers=()``) rejects all three, naming a buffer, and so it does at the default ratio of 10 (the
    counter moved by 15: the issue's ``num_batches_tracked moved by 11``)."""
    loose = ValidatedStrategy(FedAvg(min_available_nodes=3), max_update_ratio=0.8)
    loose.start(digits_grid(3), initial_arrays, num_rounds=1)
    assert loose.rejected == []
    for ratio, buffer in ((0.8, "layers.1.running_mean"), (10.0, "layers.1.num_batches_tracked")):
        strict = ValidatedStrategy(FedAvg(min_available_nodes=3), max_update_ratio=ratio, buffers=())
        strict.start(digits_grid(3), initial_arrays, num_rounds=1)
        assert len(strict.rejected) == 3 and all(repr(buffer) in r for _, _, r in strict.rejected), strict.rejected


@pytest.mark.parametrize("rule", [FedMedian, lambda **kw: Krum(num_malicious_nodes=0, **kw)])
def test_robust_rules_get_only_the_checked_replies(rule, digits_grid, initial_arrays):
    grid = digits_grid(3, tamper={VICTIM: ATTACKS["huge step"][0]})
    strategy = ValidatedStrategy(rule(min_available_nodes=3))
    result = strategy.start(grid, initial_arrays, num_rounds=1)
    assert {n for _, n, _ in strategy.rejected} == {VICTIM}
    replies, _ = _honest(grid)
    got = to_numpy(result.arrays)["layers.3.weight"]
    assert any(np.allclose(got, r["layers.3.weight"], atol=1e-6) for r in replies) or \
        np.allclose(got, np.median([r["layers.3.weight"] for r in replies], axis=0), atol=1e-6)


def test_settings_of_the_wrapped_strategy_are_read_through():
    inner = FedAvg(fraction_evaluate=0.25)
    assert ValidatedStrategy(inner).fraction_evaluate == 0.25


def test_only_a_strategy_can_be_wrapped():
    with pytest.raises(TypeError, match="needs a flwr.serverapp.strategy.Strategy to wrap, got dict"):
        ValidatedStrategy({})


def test_nothing_accepted_keeps_the_global_arrays(digits_grid, initial_arrays):
    strategy = ValidatedStrategy(FedAvg(min_available_nodes=3))
    assert strategy.aggregate_train(1, []) == (None, None)
    assert isinstance(initial_arrays, ArrayRecord) and MetricRecord  # (imports used)
