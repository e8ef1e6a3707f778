"""Rounds on a measured channel: the trace at the round's start replaces the fading, a blocked device is not
selected, and the rates are those of the trace's gains (computed here by hand); wireless.trace in a scenario."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from fedmoe.config import TraceConfig, WirelessConfig
from fedmoe.data.trace_formats import load_trace
from fedmoe.federated.round_channel import round_channel
from fedmoe.federated.selection import RoundDemand, SelectionContext, plan_round, round_profiles
from fedmoe.federated.world import world_for
from fedmoe.plugins.costs import device_profiles
from fedmoe.registry import UnknownNameError
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.wireless.trace_file import read_trace_csv
from tests.data.deepsense.conftest import write_power_sequences
from tests.federated.conftest import LocalGrid, tiny_config

N0_W_HZ = 10 ** ((-174.0 + 9.0 - 30.0) / 10)  # the default noise PSD and noise figure
RB_HZ = 200e3
# device 0 steady at -90 dB; device 1 blocked from 10 s on; device 2 drops 30 dB at 10 s without a blockage label
ROWS = [(0, 0, -90, 0), (1, 0, -95, 0), (1, 10, -95, 1), (2, 0, -95, 0), (2, 10, -125, 0)]


def _rate(num_rb: int, power_w: float, gain_db: float) -> float:
    """R = n B log2(1 + P h / (N0 n B)) by hand."""
    return num_rb * RB_HZ * np.log2(1 + power_w * 10 ** (gain_db / 10) / (N0_W_HZ * num_rb * RB_HZ))


def _plan(trace, clock_s: float):
    base = device_profiles(gain_db=[-95.0] * 3, tx_power_dbm=20.0, compute_flops=1e9)
    wireless = WirelessConfig()
    profiles, usable = round_channel(base, wireless, np.random.default_rng(0), trace, clock_s)
    demand = RoundDemand(profiles, np.zeros(3), np.full(3, 1e6), np.ones(3), usable)
    return plan_round(demand, SelectionContext(wireless, 100, 1e9, np.random.default_rng(0)), "all", "equal")


def test_without_a_trace_the_round_channel_is_the_fading_draw():
    base = device_profiles(gain_db=[-95.0, -100.0], tx_power_dbm=20.0, compute_flops=1e9)
    prof, usable = round_channel(base, WirelessConfig(), np.random.default_rng(3))
    np.testing.assert_array_equal(prof.gain, round_profiles(base, WirelessConfig(), np.random.default_rng(3)).gain)
    assert usable.all()


def test_a_device_blocked_at_the_rounds_start_is_not_selected_and_rates_follow_the_trace(trace_file):
    trace = read_trace_csv(trace_file(ROWS), 3)
    first = _plan(trace, 0.0)
    assert first.devices.tolist() == [0, 1, 2] and first.num_rb.tolist() == [33, 33, 33]
    np.testing.assert_allclose(first.rate_bps, [_rate(33, 0.1, g) for g in (-90, -95, -95)], rtol=1e-12)
    later = _plan(trace, 12.0)
    assert later.devices.tolist() == [0, 2] and later.num_rb.tolist() == [50, 50]
    np.testing.assert_allclose(later.rate_bps, [_rate(50, 0.1, -90), _rate(50, 0.1, -125)], rtol=1e-12)
    gain_only = _plan(read_trace_csv(trace_file(ROWS), 3, blocked_outage=False), 12.0)
    assert gain_only.devices.tolist() == [0, 1, 2]
    np.testing.assert_allclose(gain_only.rate_bps[1], _rate(33, 0.1, -95), rtol=1e-12)


def test_a_scenario_loads_its_trace_in_either_format(trace_file, tmp_path):
    cfg = WirelessConfig(trace=TraceConfig(path=str(trace_file(ROWS)), between="linear", start_s=5.0))
    trace = load_trace(cfg, 3)
    assert (trace.between, trace.after_end, trace.start_s, trace.blocked_outage) == ("linear", "hold", 5.0, True)
    assert trace.at(0.0)[0].tolist() == [-90.0, -95.0, -110.0]  # 5 s: halfway down device 2's drop
    assert load_trace(WirelessConfig(), 3) is None
    scen = write_power_sequences(tmp_path / "scenario31", [[1.0, 1.0], [1.0, 0.1]])
    ds = WirelessConfig(trace=TraceConfig(path=str(scen.root), format="deepsense", blocked="gain",
                                          deepsense={"median_snr_db": 10.0, "reference_tx_power_dbm": 0.0}))
    trace = load_trace(ds, 2)
    n_rb_dbm = 10 * np.log10(N0_W_HZ * RB_HZ) + 30  # the calibration's noise comes from the wireless settings
    np.testing.assert_allclose(trace.gain_db[0], [10.0 + n_rb_dbm] * 2, atol=1e-5)
    np.testing.assert_allclose(trace.gain_db[1], [10.0 + n_rb_dbm, 10.0 + n_rb_dbm - 10.0], atol=1e-5)
    assert not trace.blocked_outage
    with pytest.raises(UnknownNameError, match="wireless.trace.format: unknown channel trace format 'nope'; "
                                               "known: deepsense, fedmoe"):
        load_trace(WirelessConfig(trace=TraceConfig(path="x", format="nope")), 2)


def test_expert_wise_leaves_out_the_device_the_trace_blocks(trace_file):
    rows = [(k, 0, -90 - k, int(k == 2)) for k in range(4)]
    cfg = tiny_config(wireless={"trace": {"path": str(trace_file(rows))}}, federated={"selection": "all"})
    world = world_for(cfg)
    strategy = ExpertWise(world)
    grid = LocalGrid(4)
    strategy.configure_train(1, ArrayRecord(world.template.state_dict()), ConfigRecord(), grid)
    plan = strategy._plan
    assert plan.devices.tolist() == [0, 1, 3]
    power = world.profiles.tx_power_w[plan.devices]
    np.testing.assert_allclose(plan.rate_bps, [_rate(int(n), p, -90 - k) for n, p, k in
                                               zip(plan.num_rb, power, plan.devices)], rtol=1e-12)
