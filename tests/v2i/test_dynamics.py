"""V2I model ([P002]): AoI, misalignment, energy and reward against hand-computed slots; the exact reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmoe.config import ConfigError, V2IConfig, parse_config
from fedmoe.v2i.dynamics import csi_error_variance, misalignment, next_aoi, rollout, slot_cost
from fedmoe.v2i.oracle import best_periods, cycle_costs, reference_schedule
from fedmoe.v2i.schedules import SCHEDULES

CFG = V2IConfig(num_vehicles=2, beta=(0.1, 0.2), speeds_mps=(20.0, 40.0), t_proc=1, a_max=6, gamma=0.5, penalty=10.0,
                rho=2.0)


def test_aoi_resets_on_a_frame_and_grows_otherwise():
    assert next_aoi(np.array([3, 5]), np.array([True, False]), t_proc=2).tolist() == [2, 6]


def test_one_slot_by_hand():
    aoi, pi = np.array([2, 4]), np.array([1, 0])
    p1, p2 = 1 - math.exp(-0.1 * 2), 1 - math.exp(-0.2 * 4)
    c = slot_cost(aoi, pi, CFG)
    assert c.compute_j == pytest.approx(10.0)
    assert c.sweep_j == pytest.approx(25.0 * (p1 + p2))
    assert c.l_bmp == pytest.approx((p1 + p2) / 2)
    excess = max(0.0, (p1 + p2) / 2 - 0.5)
    assert c.reward == pytest.approx(-(10.0 + 25.0 * (p1 + p2)) - 10.0 * excess)
    assert bool(c.bmp_violation) == (excess > 0)
    assert csi_error_variance(misalignment(aoi, np.array([0.1, 0.2])), 2.0) == pytest.approx([2 * p1, 2 * p2])


def test_rollout_by_hand_and_vectorised():
    sched = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], dtype=bool)
    run = rollout(sched, CFG)
    assert run.aoi.tolist() == [[1, 1], [2, 2], [1, 3], [2, 4]]
    expected = [25 * (misalignment(a, np.array([0.1, 0.2])).sum()) + 10 * s.sum() for a, s in zip(run.aoi, sched)]
    np.testing.assert_allclose(run.cost.energy_j, expected)
    batch = rollout(np.stack([sched, ~sched]), CFG)  # two episodes at once
    np.testing.assert_allclose(batch.cost.energy_j[0], run.cost.energy_j)
    assert batch.aoi.shape == (2, 4, 2)


def test_aoi_beyond_a_max_is_a_violation():
    run = rollout(SCHEDULES.get("radar_only")(CFG, 10), CFG)
    assert run.cost.aoi_violation[:6].sum() == 0 and run.cost.aoi_violation[6:].all()


def test_cycle_cost_formula_matches_a_dynamic_programme():
    """min_T c(T) for one vehicle equals the long-horizon optimum of the AoI state graph."""
    cfg = V2IConfig(num_vehicles=1, beta=(0.15,), speeds_mps=(30.0,), t_proc=1, a_max=8)
    states = np.arange(cfg.t_proc, cfg.a_max + 1)
    p = misalignment(states, np.array([0.15]))
    value = np.zeros(len(states))  # cost-to-go over the remaining slots
    horizon = 2000
    for _ in range(horizon):
        frame = cfg.e_vis_j + cfg.e_rec_j * p + value[0]
        wait = np.where(states < cfg.a_max, cfg.e_rec_j * p + np.append(value[1:], np.inf), np.inf)
        value = np.minimum(frame, wait)
    _, best = best_periods(cfg)
    assert value[0] / horizon == pytest.approx(best[0], rel=2e-3)
    assert cycle_costs(cfg).shape == (1, cfg.a_max - cfg.t_proc + 1)


def test_reference_beats_or_ties_every_feasible_baseline():
    cfg = V2IConfig()
    ref = reference_schedule(cfg)
    assert ref.exact and ref.energy_j == pytest.approx(ref.lower_bound_j)
    n = 600
    ref_run = rollout(ref.schedule(cfg, n), cfg)
    assert not ref_run.cost.bmp_violation[20:].any()
    candidates = [SCHEDULES.get(name)(cfg, n) for name in ("vision_only", "radar_only", "aoi_threshold")]
    candidates += [SCHEDULES.get("periodic")(cfg, n, t) for t in range(1, 8)]
    candidates += [SCHEDULES.get("aoi_threshold")(cfg, n, t) for t in range(2, 10)]
    for sched in candidates:
        run = rollout(sched, cfg)
        feasible = not (run.cost.bmp_violation[20:].any() or run.cost.aoi_violation[20:].any())
        if feasible:
            assert run.cost.energy_j[20:].mean() >= ref.lower_bound_j - 1e-9
    # the bound holds for random schedules too, feasible or not, when (9e) is dropped
    rng = np.random.default_rng(0)
    rand = rollout(rng.random((50, n, cfg.num_vehicles)) < 0.3, cfg)
    ok = ~rand.cost.aoi_violation[:, 20:].any(-1)
    assert (rand.cost.energy_j[ok, 20:].mean(-1) >= ref.lower_bound_j - 1e-9).all()


def test_bad_v2i_config_is_one_line():
    with pytest.raises(ConfigError, match="beta has 2 values"):
        parse_config({"num_vehicles": 4, "beta": [0.1, 0.2]}, V2IConfig, "v2i")
