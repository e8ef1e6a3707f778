"""Update validation before aggregation (strategies.validation): every kind of bad update is
rejected with a logged reason and leaves the global parameters exactly as if it never arrived."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord

from fedmoe.federated.world import world_for
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import LATENCY_KEY, NUM_EXAMPLES_KEY, PARTITION_KEY, USAGE_KEY
from fedmoe.flower import to_numpy, to_record
from strategies.expert_wise import ExpertWise
from strategies.validation import check_arrays, check_metrics, check_steps
from tests.federated.conftest import LocalGrid, tiny_config

BAD_NODE = 2


def _edit_arrays(fn):
    def tamper(reply):
        arrays = to_numpy(reply.content["arrays"])
        fn(arrays)
        reply.content["arrays"] = to_record(arrays)
    return tamper


def _edit_metrics(**changes):
    def tamper(reply):
        m = dict(reply.content["metrics"])
        for k, v in changes.items():
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        reply.content["metrics"] = MetricRecord(m)
    return tamper


def _first(arrays):
    return next(iter(sorted(arrays)))


KINDS = {
    "nan": (_edit_arrays(lambda a: a[_first(a)].__setitem__((0,), np.nan)), "NaN or Inf"),
    "inf": (_edit_arrays(lambda a: a[_first(a)].__setitem__((-1,), np.inf)), "NaN or Inf"),
    "unknown key": (_edit_arrays(lambda a: a.__setitem__("backdoor", np.zeros(3, np.float32))), "unexpected arrays"),
    "wrong shape": (_edit_arrays(lambda a: a.__setitem__(_first(a), a[_first(a)][:-1])), "shape"),
    "wrong dtype": (_edit_arrays(lambda a: a.__setitem__(_first(a), a[_first(a)].astype(np.float64))), "dtype"),
    "absurd norm": (_edit_arrays(lambda a: a.__setitem__(_first(a), a[_first(a)] * 1e6)), "moved by"),
    "negative count": (_edit_metrics(**{NUM_EXAMPLES_KEY: -5}), "outside"),
    "absurd count": (_edit_metrics(**{NUM_EXAMPLES_KEY: 10 ** 9}), "outside"),
    "fractional count": (_edit_metrics(**{NUM_EXAMPLES_KEY: 12.5}), "not a finite integer"),
    "missing count": (_edit_metrics(**{NUM_EXAMPLES_KEY: None}), "no 'num-examples'"),
    "bad usage": (_edit_metrics(**{USAGE_KEY: [2.0]}), "expert-usage"),
    "other partition": (_edit_metrics(**{PARTITION_KEY: 0}), "partition-id"),
    "usage not a list": (_edit_metrics(**{USAGE_KEY: 0.5}), "expert-usage is not a list"),
    "NaN latency": (_edit_metrics(**{LATENCY_KEY: float("nan")}), "latency-s=nan is not a finite number"),
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
def without_bad_node(cfg):
    """The same round with the bad node failing outright: what a rejected update must amount to."""
    final, strategy = _one_round(cfg, LocalGrid(3, fail=[BAD_NODE]))
    assert strategy.history[0].completed == 2
    return final


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_update_is_rejected_and_leaves_the_global_model_unchanged(kind, cfg, without_bad_node, caplog):
    tamper, reason = KINDS[kind]
    with caplog.at_level(logging.WARNING, logger="strategies.expert_wise"):
        final, strategy = _one_round(cfg, LocalGrid(3, tamper={BAD_NODE: tamper}))
    rec = strategy.history[0]
    assert rec.completed == 2 and rec.rejected == 1 and rec.failed == 1
    assert any(f"node {BAD_NODE}: rejected" in f and reason in f for f in rec.failures), rec.failures
    assert any("rejected the update of node" in r.message and reason in r.message for r in caplog.records)
    assert set(final) == set(without_bad_node)
    for k in final:
        np.testing.assert_array_equal(final[k], without_bad_node[k], err_msg=k)


def test_honest_updates_all_pass(cfg):
    _, strategy = _one_round(cfg, LocalGrid(3))
    assert strategy.history[0].completed == 3 and strategy.history[0].rejected == 0


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
