"""Selection policies, allocation and the per-round cost model."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import FedMoEConfig
from fedmoe.federated.selection import (
    SELECTION_POLICIES,
    Participation,
    RoundDemand,
    SelectionContext,
    allocate,
    capped_knapsack,
    deadline_rb_needed,
    plan_round,
    round_costs,
    round_profiles,
)
from fedmoe.wireless.devices import sample_device_profiles
from tests.federated.conftest import CROWDED_RB, assert_fits, best_by_brute_force, needs_by_hand


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


# ---------------------------------------------------------------- a round with a choice to make (issue 19, item 6)


def test_crowded_round_leaves_a_choice(crowded):
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    ones = np.ones(len(need))
    assert ctx.wireless.uplink.num_resource_blocks == CROWDED_RB
    assert (need > 0).sum() == 9 and (need == -1).sum() == 1  # nine can make it alone, one cannot
    assert need[need > 0].sum() > CROWDED_RB  # the blocks bind ...
    assert best_by_brute_force(ones, need, 99, CROWDED_RB) == 6 > ctx.per_round  # ... and so does the cap
    assert need.max() == CROWDED_RB  # the far device needs every block
    np.testing.assert_array_equal(deadline_rb_needed(demand, ctx), need)


def test_max_devices_is_the_largest_capped_set(crowded):
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    chosen = SELECTION_POLICIES.get("deadline-max-devices")(demand, ctx)
    assert_fits(chosen, need, ctx)
    assert chosen.size == best_by_brute_force(np.ones(len(need)), need, ctx.per_round, CROWDED_RB) == 4
    plan = plan_round(demand, ctx, "deadline-max-devices", "min-latency")
    assert plan.round_latency_s <= ctx.deadline_s * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_utility_weighted_is_the_best_capped_set(crowded, seed):
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    utility = np.random.default_rng(seed).uniform(0.0, 10.0, len(need))
    demand = RoundDemand(demand.profiles, demand.flops, demand.bits, utility, demand.available)
    chosen = SELECTION_POLICIES.get("utility-weighted")(demand, ctx)
    assert_fits(chosen, need, ctx)
    best = best_by_brute_force(utility, need, ctx.per_round, CROWDED_RB)
    assert utility[chosen].sum() == pytest.approx(best, rel=1e-12)
    # the uncapped optimum holds more devices: the cap changes the answer
    assert best_by_brute_force(utility, need, 99, CROWDED_RB) > best


def test_utility_weighted_cap_can_exclude_the_uncapped_optimum(crowded):
    """Cap 1: the best single device is not one of the best uncapped set's (top of the knapsack is not enough)."""
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    utility = np.where(need == CROWDED_RB, 5.0, 0.0) + np.where((need > 0) & (need < CROWDED_RB), 3.0, 0.0)
    one = SelectionContext(ctx.wireless, 1, ctx.deadline_s, ctx.rng)
    demand = RoundDemand(demand.profiles, demand.flops, demand.bits, utility, demand.available)
    chosen = SELECTION_POLICIES.get("utility-weighted")(demand, one)
    np.testing.assert_array_equal(chosen, np.flatnonzero(need == CROWDED_RB))


@pytest.mark.parametrize("seed", range(40))
def test_capped_knapsack_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 10))
    capacity = int(rng.integers(0, 15))
    cap = int(rng.integers(0, 6))
    sizes = rng.integers(0, 8, k) if seed % 2 else rng.choice([1, 2, 3], k)  # odd seeds: zero and oversized items
    values = np.where(rng.random(k) < 0.15, 0.0, rng.uniform(0.0, 5.0, k))
    chosen = capped_knapsack(values, sizes, capacity, cap)
    assert chosen.size <= cap and sizes[chosen].sum() <= capacity and (sizes[chosen] >= 1).all()
    need = np.where(sizes >= 1, sizes, -1)
    assert values[chosen].sum() == pytest.approx(best_by_brute_force(values, need, cap, capacity), abs=1e-12)


def test_capped_knapsack_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="one entry per item"):
        capped_knapsack(np.ones(3), np.ones(2, dtype=int), 5, 2)


def test_participation_by_hand():
    hist = Participation.from_rounds(4, 5, [(1, [0, 1]), (3, [1]), (4, [3])])
    np.testing.assert_array_equal(hist.last_round, [1, 3, 0, 4])
    np.testing.assert_array_equal(hist.times, [1, 2, 0, 1])
    np.testing.assert_array_equal(hist.age, [4, 2, 5, 1])
    nxt = hist.after([2])
    assert nxt.round == 6
    np.testing.assert_array_equal(nxt.age, [5, 3, 1, 2])
    np.testing.assert_array_equal(nxt.times, [1, 2, 1, 1])
    np.testing.assert_array_equal(Participation.fresh(3).age, [1, 1, 1])


@pytest.mark.parametrize("make, match", [
    (lambda: Participation(0, np.zeros(2, int), np.zeros(2, int)), "integer >= 1"),
    (lambda: Participation(3, np.array([3, 0]), np.array([1, 0])), "last rounds"),
    (lambda: Participation(3, np.array([1, 0]), np.array([0, 0])), "last rounds"),
    (lambda: Participation(3, np.zeros(2, int), np.zeros(3, int)), "one entry per device"),
    (lambda: Participation.from_rounds(2, 3, [(1, [2])]), "there are 2 devices"),
])
def test_participation_rejects_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
