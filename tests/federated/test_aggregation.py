"""Expert-wise aggregation against hand-computed values, and every Flower built-in rule under it."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from fedmoe.federated.parameters import FIXED, LOCAL, SHARED, expert_group, parameter_groups, to_numpy
from fedmoe.federated.protocol import NUM_EXAMPLES_KEY, USAGE_KEY
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from strategies import AGGREGATORS, ExpertWise
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
