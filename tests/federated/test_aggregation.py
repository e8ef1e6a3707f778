"""Expert-wise aggregation against hand-computed values, every Flower built-in rule under it, and what
happens when a rule raises (a refusal keeps the group, a bug ends the run)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg

from fedmoe.federated.parameters import FIXED, LOCAL, SHARED, expert_group, parameter_groups, to_numpy
from fedmoe.federated.protocol import NUM_EXAMPLES_KEY, USAGE_KEY
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from fedmoe.strategies import AGGREGATORS, ExpertWise
from fedmoe.strategies.aggregators import AGGREGATION_ERRORS
from tests.federated.conftest import LocalGrid, assert_close, tiny_config

# experts_per_modality = 1: experts 0..4 are camera, lidar, radar, gps, rf


@pytest.fixture
def strategy(tiny_cfg):
    LocalGrid(1)  # sets Flower's task identity so that Messages can be built outside a run
    s = ExpertWise(world_for(tiny_cfg))
    s._global = to_record(to_numpy(s.world.template.state_dict()))
    return s


def reply(strategy: ExpertWise, value: float, n: int, usage: list[float], experts: list[int]) -> Message:
    """A client reply whose every sent float array is ``value``: shared keys plus the given experts,
    packed per group as the ClientApp sends them."""
    keys = list(strategy.groups[SHARED]) + [k for i in experts for k in strategy.groups[expert_group(i)]]
    named = {k: np.full(strategy._global[k].numpy().shape, value, dtype=np.float32) for k in keys}
    arrays = to_record(strategy.layout.pack(named))
    assert set(arrays.keys()) == {SHARED, *(expert_group(i) for i in experts)}  # one array per group
    metrics = MetricRecord({NUM_EXAMPLES_KEY: n, USAGE_KEY: usage})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), message_type=MessageType.TRAIN,
                   dst_node_id=0)


def value_of(record: ArrayRecord, strategy: ExpertWise, group: str) -> np.ndarray:
    return np.concatenate([record[k].numpy().ravel() for k in strategy.groups[group]])


def test_shared_over_all_experts_over_holders_weighted_by_samples_times_usage(strategy):
    replies = [
        reply(strategy, 1.0, 10, [1.0, 0.0, 0.5, 1.0, 1.0], [0, 2, 3, 4]),
        reply(strategy, 3.0, 30, [0.5, 0.0, 0.0, 1.0, 1.0], [0, 3, 4]),  # no radar: expert 2 not sent
        reply(strategy, 5.0, 20, [0.0, 0.0, 1.0, 1.0, 1.0], [0, 2, 3, 4]),  # sent expert 0 but never used it
    ]
    before = {g: value_of(strategy._global, strategy, g) for g in strategy.groups if g not in (LOCAL, FIXED)}
    out = strategy.aggregate_groups(1, replies)
    assert_close(value_of(out, strategy, SHARED), (10 * 1 + 30 * 3 + 20 * 5) / 60, rtol=1e-6)
    assert_close(value_of(out, strategy, expert_group(0)), (10 * 1.0 * 1 + 30 * 0.5 * 3) / (10 + 15), rtol=1e-6)
    assert_close(value_of(out, strategy, expert_group(2)), (10 * 0.5 * 1 + 20 * 1.0 * 5) / (5 + 20), rtol=1e-6)
    assert_close(value_of(out, strategy, expert_group(3)), (10 * 1 + 30 * 3 + 20 * 5) / 60, rtol=1e-6)
    # nobody used the lidar expert: it keeps the global values exactly
    np.testing.assert_array_equal(value_of(out, strategy, expert_group(1)), before[expert_group(1)])
    assert set(out.keys()) == set(strategy._global.keys())


def test_non_float_buffers_are_never_averaged(strategy):
    fixed = strategy.groups.get(FIXED, [])
    assert fixed, "the tiny mixture has integer/bool buffers (BatchNorm counters, expert masks)"
    out = strategy.aggregate_groups(1, [reply(strategy, 7.0, 5, [1.0] * 5, [0, 1, 2, 3, 4])])
    for k in fixed:
        np.testing.assert_array_equal(out[k].numpy(), strategy._global[k].numpy())


def test_declared_local_parameters_never_leave_the_device():
    cfg = tiny_config(federated={"local_keys": ["heads.*"]})
    world = world_for(cfg)
    groups = parameter_groups(world.template.state_dict(), cfg.federated.local_keys)
    assert groups[LOCAL] and all(k.startswith("heads.") for k in groups[LOCAL])
    assert not any(k.startswith("heads.") for k in groups[SHARED])


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_flower_builtin_runs_one_round_underneath(name, tiny_cfg):
    """One real round (in-process grid running the real ClientApp) with each Flower rule."""
    options = {"proximal_mu": 0.1} if name == "fedprox" else {}
    world = world_for(tiny_cfg)
    strategy = ExpertWise(world, aggregator=name, aggregator_options=options)
    grid = LocalGrid(4)
    initial = to_numpy(world.template.state_dict())
    result = strategy.start(grid, to_record(initial), num_rounds=1)
    final = {k: v.numpy() for k, v in result.arrays.items()}
    assert set(final) == set(initial)
    changed = [k for k in strategy.groups[SHARED] if not np.array_equal(final[k], initial[k])]
    assert changed, f"{name}: the shared parameters did not move"
    assert all(np.isfinite(v).all() for v in final.values() if np.issubdtype(v.dtype, np.floating))
    assert strategy.history[0].completed == 4
    if name == "fedprox":
        assert all(m.content["config"]["proximal-mu"] == pytest.approx(0.1) for m in grid.sent
                   if m.metadata.message_type == MessageType.TRAIN)


# --------------------------------------------------------------------------- errors of the rules

class _RefusesOneGroup(FedAvg):
    """FedAvg, except that it raises ``error`` when given the updates of ``group``."""

    def __init__(self, group: str, error: Exception) -> None:
        super().__init__(fraction_train=1.0, min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)
        self.group, self.error = group, error

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        if self.group in replies[0].content["arrays"].keys():
            raise self.error
        return super().aggregate_train(server_round, replies)


@pytest.fixture
def raising_rule(monkeypatch):
    """``use(group, error)``: registers, for this test only, a rule that raises ``error`` on ``group``'s
    updates; returns its name."""
    def use(group: str, error: Exception) -> str:
        monkeypatch.setitem(AGGREGATORS._items, "test-raises", lambda **_: _RefusesOneGroup(group, error))
        return "test-raises"
    return use


@pytest.mark.parametrize("error", [AggregationError("too few updates for this rule"), ValueError("cannot stack"),
                                   FloatingPointError("overflow"), ZeroDivisionError("weights sum to zero")],
                         ids=lambda e: type(e).__name__)
def test_a_rule_that_refuses_a_group_leaves_it_as_it_was(error, raising_rule, tiny_cfg, caplog):
    assert isinstance(error, AGGREGATION_ERRORS)
    LocalGrid(1)
    strategy = ExpertWise(world_for(tiny_cfg), aggregator=raising_rule(expert_group(2), error))
    strategy._global = to_record(to_numpy(strategy.world.template.state_dict()))
    before = value_of(strategy._global, strategy, expert_group(2))
    replies = [reply(strategy, 1.0, 10, [1.0, 0.0, 0.5, 1.0, 1.0], [0, 2, 3, 4]),
               reply(strategy, 5.0, 30, [0.0, 0.0, 1.0, 1.0, 1.0], [2, 3, 4])]
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.expert_wise"):
        out = strategy.aggregate_groups(1, replies)
    np.testing.assert_array_equal(value_of(out, strategy, expert_group(2)), before)
    assert_close(value_of(out, strategy, SHARED), (10 * 1 + 30 * 5) / 40, rtol=1e-6)  # the other groups go on
    assert_close(value_of(out, strategy, expert_group(3)), (10 * 1 + 30 * 5) / 40, rtol=1e-6)
    assert any(f"could not aggregate {expert_group(2)} (2 updates)" in r.message and "kept as it was" in r.message
               and str(error) in r.message for r in caplog.records)


@pytest.mark.parametrize("error", [TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'"),
                                   AttributeError("'NoneType' object has no attribute 'numpy'"), KeyError("expert/2")],
                         ids=lambda e: type(e).__name__)
def test_a_bug_in_a_rule_is_not_taken_for_a_refusal(error, raising_rule, tiny_cfg):
    assert not isinstance(error, AGGREGATION_ERRORS)
    LocalGrid(1)
    strategy = ExpertWise(world_for(tiny_cfg), aggregator=raising_rule(expert_group(2), error))
    strategy._global = to_record(to_numpy(strategy.world.template.state_dict()))
    with pytest.raises(type(error)):
        strategy.aggregate_groups(1, [reply(strategy, 1.0, 10, [1.0, 0.0, 0.5, 1.0, 1.0], [0, 2, 3, 4])])


def test_a_bug_in_a_rule_fails_the_run_loudly(raising_rule):
    """A whole run: the devices train, the rule breaks on the shared group, and ``start`` raises
    (instead of going on with the shared parameters silently frozen)."""
    cfg = tiny_config(partition={"num_devices": 2}, federated={"rounds": 1, "clients_per_round": 2})
    strategy = ExpertWise(world_for(cfg), aggregator=raising_rule(SHARED, TypeError("a bug in the rule")))
    initial = to_numpy(strategy.world.template.state_dict())
    with pytest.raises(TypeError, match="a bug in the rule"):
        strategy.start(LocalGrid(2), to_record(initial), num_rounds=1)


# --------------------------------------------------------------------------- robust rules and unused experts

# Three replies carry expert 2 (radar) with every value 5, 1 and 3; the first never used it (u = 0). It must not
# take part in expert 2's aggregation at all (group_weights: weight > 0): a robust rule ignores the weights, so
# counting it would move the expert. Hand values: over {1, 3} against over {5, 1, 3}.
ROBUST = {
    "fedmedian": ({}, 2.0, 3.0),  # median of {1, 3} = 2; of {5, 1, 3} = 3
    "fedtrimmedavg": ({}, 2.0, 3.0),  # beta 0.2 trims int(0.2 n) = 0 of each side: the plain means 2 and 3
    # Krum (f = 0): score = squared distance to the nearest other update. {1, 3}: both 4, the first (1) wins;
    # {5, 1, 3}: 5 → 3 is 4, 1 → 3 is 4, 3 → 5 or 1 is 4: all 4, the first (5) wins (exact integer arithmetic)
    "krum": ({}, 1.0, 5.0),
    # MultiKrum selecting 2: {1, 3} both, their weighted mean 2; {5, 1, 3}: the first two, 5 (weight 0) and 1
    "multikrum": ({"num_nodes_to_select": 2}, 2.0, 1.0),
}


@pytest.mark.parametrize("name", list(ROBUST))
def test_a_device_that_did_not_use_an_expert_does_not_enter_a_robust_rule_for_it(name, tiny_cfg):
    options, expected, if_counted = ROBUST[name]
    LocalGrid(1)
    strategy = ExpertWise(world_for(tiny_cfg), aggregator=name, aggregator_options=options)
    strategy._global = to_record(to_numpy(strategy.world.template.state_dict()))
    replies = [reply(strategy, 5.0, 10, [1.0, 0.0, 0.0, 1.0, 1.0], [0, 2, 3, 4]),  # sent expert 2, never used it
               reply(strategy, 1.0, 10, [1.0, 0.0, 1.0, 1.0, 1.0], [0, 2, 3, 4]),
               reply(strategy, 3.0, 10, [1.0, 0.0, 1.0, 1.0, 1.0], [0, 2, 3, 4])]
    out = strategy.aggregate_groups(1, replies)
    got = value_of(out, strategy, expert_group(2))
    assert expected != if_counted
    np.testing.assert_array_equal(got, np.full_like(got, expected))
    assert [w for _, w in strategy.group_members(replies)[expert_group(2)]] == [10.0, 10.0]


def test_bulyan_refuses_two_users_of_an_expert_rather_than_counting_a_third_that_did_not_use_it(tiny_cfg):
    """Bulyan needs 4f + 3 = 3 updates: with the two users of expert 2 it keeps the expert as it was; the
    device that did not use it must not make up the third."""
    LocalGrid(1)
    strategy = ExpertWise(world_for(tiny_cfg), aggregator="bulyan")
    strategy._global = to_record(to_numpy(strategy.world.template.state_dict()))
    before = value_of(strategy._global, strategy, expert_group(2))
    replies = [reply(strategy, 5.0, 10, [1.0, 0.0, 0.0, 1.0, 1.0], [0, 2, 3, 4]),
               reply(strategy, 1.0, 10, [1.0, 0.0, 1.0, 1.0, 1.0], [0, 2, 3, 4]),
               reply(strategy, 3.0, 10, [1.0, 0.0, 1.0, 1.0, 1.0], [0, 2, 3, 4])]
    out = strategy.aggregate_groups(1, replies)
    np.testing.assert_array_equal(value_of(out, strategy, expert_group(2)), before)
    assert not np.array_equal(value_of(out, strategy, expert_group(0)),
                              value_of(strategy._global, strategy, expert_group(0)))  # three users: aggregated
