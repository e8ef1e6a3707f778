"""Mobility in the federated rounds: off by default with every number unchanged, the rates of the moved devices
in ExpertWise round by round (in process and on Flower's Ray backend), and resume."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.federated.round_channel import round_channel
from fedmoe.federated.selection import SelectionContext, round_profiles
from fedmoe.federated.world import world_for
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.wireless.mobility import Mobility
from fedmoe.wireless.ofdma import noise_psd_w_hz, uplink_rate
from tests.federated.conftest import LocalGrid, play_round, saved_and_resumed, tiny_config

VEHICLES = {"channel": {"fading": "none"},
            "mobility": {"model": "random-direction", "classes": {"car": {"speed_mps": (12.0, 12.0)}}}}
"""Vehicles at 12 m/s and no fading: a device's rate changes only because it moved."""
EQUAL_SHARES = {"selection": "all", "allocation": "equal"}


def _round(strategy: ExpertWise, world, grid: LocalGrid, server_round: int):
    record = play_round(strategy, grid, server_round)
    return strategy._plan, record


def _context(strategy: ExpertWise) -> SelectionContext:
    fed = strategy.fed
    return SelectionContext(strategy.world.cfg.wireless, fed.clients_per_round, fed.deadline_s, strategy._rng,
                            fed.selection_options)


def _numbers(strategy: ExpertWise) -> list:
    return [(r.devices, r.latency_s, r.energy_j, r.clock_s, r.train_loss, r.upload_bits) for r in strategy.history]


def test_mobility_is_off_by_default_and_leaves_every_number_as_it_was():
    """The default (and mobility 'none' whatever its other settings) builds no Mobility, saves nothing for it,
    draws the round channel exactly as before (the fading draw on the drop), and a round gives the same record
    and the next round the same plan, bit for bit."""
    default = tiny_config()
    assert default.wireless.mobility.model == "none"
    other = tiny_config(wireless={"mobility": {"model": "none", "seed": 9,
                                               "classes": {"car": {"speed_mps": (10.0, 15.0)}}}})
    runs = []
    for cfg in (default, other):
        world = world_for(cfg)
        strategy = ExpertWise(world)
        assert strategy.mobility is None and "mobility" not in strategy.state_dict()
        grid = LocalGrid(4)
        _round(strategy, world, grid, 1)
        nxt = strategy._demand(strategy._allowed_modalities(), 2, _context(strategy))
        runs.append((_numbers(strategy), nxt.profiles.gain.tolist(), nxt.available.tolist()))
    assert runs[0] == runs[1]
    world = world_for(default)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    profiles, usable = round_channel(world.profiles, default.wireless, a, clock_s=50.0)
    np.testing.assert_array_equal(profiles.gain, round_profiles(world.profiles, default.wireless, b).gain)
    assert usable.all() and a.random() == b.random()


def test_expert_wise_plans_each_round_on_the_devices_where_they_are(trace_file):
    """With availability composed (device 3 off from the start): the other devices' rates are those where
    they are at each round's start (a twin Mobility moved there by hand)."""
    off = trace_file([(3, 0, 0)], header="device,time_s,available", name="avail.csv")
    cfg = tiny_config(wireless=VEHICLES, federated={**EQUAL_SHARES, "dynamics": {
        "availability": {"model": "trace", "path": str(off)}}})
    world = world_for(cfg)
    strategy = ExpertWise(world)
    twin = Mobility.from_config(cfg.wireless, world.profiles)
    grid = LocalGrid(4)
    n0 = noise_psd_w_hz(cfg.wireless.channel.noise_psd_dbm_hz, cfg.wireless.channel.noise_figure_db)
    rates = []
    for r in (1, 2):
        start = strategy.clock_s
        plan, _ = _round(strategy, world, grid, r)
        assert plan.devices.tolist() == [0, 1, 2]
        prof = twin.at(start).subset(plan.devices)
        np.testing.assert_allclose(plan.rate_bps, uplink_rate(plan.num_rb, cfg.wireless.uplink.resource_block_hz,
                                                              prof.tx_power_w, prof.gain, n0), rtol=1e-12)
        rates.append(plan.rate_bps)
    assert (rates[0] != rates[1]).all()
    assert strategy.mobility.time_s == strategy.history[0].clock_s > 0
    np.testing.assert_allclose(strategy.mobility.travelled_m, 12.0 * strategy.history[0].clock_s, rtol=1e-12)


def test_expert_wise_resume_puts_the_devices_back_where_they_were(tmp_path):
    cfg = tiny_config(wireless=VEHICLES, federated=EQUAL_SHARES)
    world = world_for(cfg)
    strategy = ExpertWise(world)
    _round(strategy, world, LocalGrid(4), 1)
    strategy.mobility.advance_to(strategy.clock_s)
    resumed = saved_and_resumed(strategy, tmp_path)
    np.testing.assert_array_equal(resumed.mobility.pos, strategy.mobility.pos)
    assert resumed.mobility.time_s == strategy.mobility.time_s > 0
    later = strategy.clock_s + 30.0
    np.testing.assert_array_equal(resumed.mobility.at(later).gain, strategy.mobility.at(later).gain)
    assert not np.array_equal(ExpertWise(world).mobility.pos, strategy.mobility.pos)


@pytest.mark.slow
def test_on_ray_the_rates_follow_the_moving_devices(tmp_path, monkeypatch):
    """The real ServerApp and ClientApps on Flower's Ray backend: each round's plan (recorded on the server,
    which runs in this process) gives every device a rate that differs from the round before, and the run's
    clock is what the devices moved by."""
    import fedmoe.strategies.expert_wise as expert_wise
    from fedmoe.simulation import run_federated

    plans = []
    real = expert_wise.plan_round

    def recording(*args, **kwargs):
        plans.append(real(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(expert_wise, "plan_round", recording)
    cfg = tiny_config(partition={"num_devices": 3}, wireless=VEHICLES,
                      federated={**EQUAL_SHARES, "clients_per_round": 3})
    run = run_federated(cfg, tmp_path, progress=False)
    rounds = [r for r in run.metrics["rounds"] if r["round"] > 0]
    assert [r["completed"] for r in rounds] == [3, 3]
    first, second = plans
    assert first.devices.tolist() == second.devices.tolist() == [0, 1, 2]
    assert (first.rate_bps != second.rate_bps).all()
    np.testing.assert_allclose(run.strategy.mobility.travelled_m, 12.0 * rounds[0]["clock_s"], rtol=1e-9)


def test_a_trace_and_mobility_together_are_refused(trace_file):
    from fedmoe.wireless.trace_file import read_trace_csv

    cfg = tiny_config(wireless=VEHICLES)
    world = world_for(cfg)
    trace = read_trace_csv(trace_file([(d, 0, -90, 0) for d in range(4)]), 4)
    with pytest.raises(ValueError, match="a trace gives the measured channel, which mobility would not change"):
        round_channel(world.profiles, cfg.wireless, np.random.default_rng(0), trace, 0.0,
                      Mobility.from_config(cfg.wireless, world.profiles))
