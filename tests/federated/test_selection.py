"""Selection policies, allocation and the per-round cost model."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import FedMoEConfig
from fedmoe.federated.selection import (
    SELECTION_POLICIES,
    RoundDemand,
    SelectionContext,
    allocate,
    plan_round,
    round_costs,
    round_profiles,
)
from fedmoe.wireless.devices import sample_device_profiles


@pytest.fixture
def setting():
    cfg = FedMoEConfig()
    k = 30
    rng = np.random.default_rng(3)
    prof = sample_device_profiles(cfg.wireless, k, rng)
    demand = RoundDemand(prof, flops=rng.uniform(1e9, 2e10, k), bits=rng.uniform(1e6, 1e7, k),
                         utility=rng.uniform(0, 10, k), available=np.ones(k, dtype=bool))
    ctx = SelectionContext(cfg.wireless, per_round=10, deadline_s=8.0, rng=np.random.default_rng(0))
    return cfg, demand, ctx


def test_round_costs_by_hand(setting):
    _, demand, _ = setting
    prof = demand.profiles.subset([0, 1])
    lat, energy = round_costs(prof, np.array([4e9, 0.0]), np.array([2e6, 1e6]), np.array([1e6, 0.0]))
    assert lat[0] == pytest.approx(4e9 / prof.compute_flops[0] + 2.0)
    assert energy[0] == pytest.approx(prof.energy_per_flop_j[0] * 4e9 + prof.tx_power_w[0] * 2.0)
    assert np.isinf(lat[1]) and np.isinf(energy[1])  # bits to send and no rate


def test_random_picks_distinct_available_devices(setting):
    _, demand, ctx = setting
    demand.available[:5] = False
    chosen = SELECTION_POLICIES.get("random")(demand, ctx)
    assert len(chosen) == 10 and len(set(chosen)) == 10 and demand.available[chosen].all()


def test_deadline_policy_meets_the_deadline_and_caps_the_count(setting):
    _, demand, ctx = setting
    plan = plan_round(demand, ctx, "deadline-max-devices", "min-latency")
    assert 0 < len(plan.devices) <= ctx.per_round
    assert plan.round_latency_s <= ctx.deadline_s * (1 + 1e-9)
    assert plan.num_rb.sum() <= ctx.wireless.uplink.num_resource_blocks
    # with no cap it keeps at least as many: the cap only removes devices
    wide = SelectionContext(ctx.wireless, 10_000, ctx.deadline_s, np.random.default_rng(0))
    assert len(plan_round(demand, wide, "deadline-max-devices", "min-latency").devices) >= len(plan.devices)


def test_utility_policy_prefers_high_utility(setting):
    _, demand, ctx = setting
    chosen = SELECTION_POLICIES.get("utility-weighted")(demand, ctx)
    rest = np.setdiff1d(np.flatnonzero(demand.available), chosen)
    feasible_rest = SELECTION_POLICIES.get("deadline-max-devices")(
        RoundDemand(demand.profiles, demand.flops, demand.bits, demand.utility,
                    np.isin(np.arange(len(demand.bits)), rest)), ctx)
    assert len(chosen) > 0
    # every feasible device left out has a utility no larger than the smallest chosen one, or the knapsack was full
    assert demand.utility[chosen].sum() >= demand.utility[feasible_rest[:len(chosen)]].sum()


def test_equal_split_and_min_latency_allocation(setting):
    _, demand, ctx = setting
    devices = np.arange(8)
    equal = allocate(demand, devices, ctx, "equal")
    best = allocate(demand, devices, ctx, "min-latency")
    assert (equal.num_rb == ctx.wireless.uplink.num_resource_blocks // 8).all()
    assert best.round_latency_s <= equal.round_latency_s + 1e-12
    narrow = ctx.wireless.model_copy(
        update={"uplink": ctx.wireless.uplink.model_copy(update={"total_bandwidth_hz": 2e6})})
    with pytest.raises(ValueError, match="resource blocks"):
        allocate(demand, np.arange(30), SelectionContext(narrow, 10, 1.0, ctx.rng), "equal")


def test_block_fading_changes_gains_but_not_large_scale(setting):
    cfg, demand, _ = setting
    new = round_profiles(demand.profiles, cfg.wireless, np.random.default_rng(1))
    assert not np.allclose(new.gain, demand.profiles.gain, rtol=1e-3, atol=0.0)
    np.testing.assert_allclose(new.gain / new.fading, demand.profiles.gain / demand.profiles.fading, rtol=1e-9)
