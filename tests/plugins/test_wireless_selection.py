"""WirelessSelection around Flower's strategies on the plain digits app: who is sent work, with which share
of the uplink, what the virtual clock charges, and why nobody was selected."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg, FedProx

from fedmoe.config import WirelessConfig
from fedmoe.federated.selection import round_costs
from fedmoe.plugins.costs import device_profiles, update_bits
from fedmoe.plugins.selection import WirelessSelection, node_order
from fedmoe.wireless.devices import sample_device_profiles
from fedmoe.wireless.ofdma import noise_psd_w_hz, uplink_rate

FLOPS = 2e7


def _alone_latency(profiles, bits: float, wireless: WirelessConfig) -> np.ndarray:
    """Each device's round latency with every resource block to itself, by hand: F/f + b/R(N)."""
    up, ch = wireless.uplink, wireless.channel
    n0 = 10 ** ((ch.noise_psd_dbm_hz + ch.noise_figure_db - 30) / 10)
    band = up.num_resource_blocks * up.resource_block_hz
    rate = band * np.log2(1 + profiles.tx_power_w * profiles.gain / (n0 * band))
    return FLOPS / profiles.compute_flops + bits / rate


@pytest.fixture
def four_devices():
    """Gains of -95, -105, -118 and -135 dB: with FLOPS and the digits model's update, the deadline
    decides who can take part."""
    return device_profiles(gain_db=[-95.0, -105.0, -118.0, -135.0], tx_power_dbm=20.0, compute_flops=1e9)


def test_only_the_devices_that_meet_the_deadline_are_sent_work_with_their_share_of_the_uplink(
        four_devices, digits_grid, initial_arrays):
    wireless = WirelessConfig()
    alone = _alone_latency(four_devices, update_bits(initial_arrays), wireless)
    deadline = float(np.sort(alone)[2] * 1.05)  # three can make it alone; the fourth cannot
    assert (alone > deadline).sum() == 1
    grid = digits_grid(4)
    strategy = WirelessSelection(FedAvg(), four_devices, wireless=wireless, deadline_s=deadline, flops=FLOPS,
                                 fading=False)
    result = strategy.start(grid, initial_arrays, num_rounds=1)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    plan = strategy.plans[0]
    assert {m.metadata.dst_node_id for m in train} == {101 + int(k) for k in plan.devices}
    assert 101 + int(np.argmax(alone)) not in {m.metadata.dst_node_id for m in train}
    for msg in train:  # each node its own share, not one record shared by all
        j = list(plan.devices).index(msg.metadata.dst_node_id - 101)
        config = msg.content["config"]
        assert (config["num-rb"], config["rate-bps"], config["deadline-s"]) == (int(plan.num_rb[j]),
                                                                                float(plan.rate_bps[j]), deadline)
    assert sum(plan.num_rb) <= wireless.uplink.num_resource_blocks
    assert plan.round_latency_s <= deadline
    # the plan's costs by hand: T = F/f + b/R(n), E = e F + P b / R(n)
    prof = four_devices.subset(plan.devices)
    n0 = noise_psd_w_hz(wireless.channel.noise_psd_dbm_hz, wireless.channel.noise_figure_db)
    rate = uplink_rate(plan.num_rb, wireless.uplink.resource_block_hz, prof.tx_power_w, prof.gain, n0)
    bits = update_bits(initial_arrays)
    np.testing.assert_allclose(plan.latency_s, FLOPS / prof.compute_flops + bits / rate, rtol=1e-12)
    np.testing.assert_allclose(plan.energy_j, prof.energy_per_flop_j * FLOPS + prof.tx_power_w * bits / rate,
                               rtol=1e-12)
    metrics = result.train_metrics_clientapp[1]
    assert metrics["clock-s"] == pytest.approx(plan.latency_s.max())
    assert metrics["round-energy-j"] == pytest.approx(plan.energy_j.sum())


def test_the_clock_charges_only_the_devices_that_replied(four_devices, digits_grid, initial_arrays):
    grid = digits_grid(4, fail={101})
    strategy = WirelessSelection(FedAvg(), four_devices, deadline_s=10.0, flops=FLOPS, fading=False)
    result = strategy.start(grid, initial_arrays, num_rounds=1)
    plan = strategy.plans[0]
    assert 0 in plan.devices.tolist()
    keep = plan.devices != 0
    assert result.train_metrics_clientapp[1]["round-latency-s"] == pytest.approx(plan.latency_s[keep].max())
    assert result.train_metrics_clientapp[1]["round-energy-j"] == pytest.approx(plan.energy_j[keep].sum())


def test_a_flower_strategy_with_its_default_minimums_takes_a_lone_selected_device_without_waiting(
        four_devices, digits_grid, initial_arrays):
    """FedProx asks for at least 2 nodes by default; the selection leaves 1: it must train that one, not
    wait for ever (the test's timeout would end it)."""
    alone = _alone_latency(four_devices, update_bits(initial_arrays), WirelessConfig())
    base = FedProx(proximal_mu=0.1)
    strategy = WirelessSelection(base, four_devices, deadline_s=float(np.sort(alone)[0] * 1.01), flops=FLOPS,
                                 fading=False)
    grid = digits_grid(4)
    strategy.start(grid, initial_arrays, num_rounds=2)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert [m.metadata.dst_node_id for m in train] == [101 + int(np.argmin(alone))] * 2
    assert all(m.content["config"]["proximal-mu"] == 0.1 for m in train)
    assert (base.min_train_nodes, base.min_available_nodes, base.fraction_train) == (2, 2, 1.0)  # put back


def test_nobody_selected_in_the_default_cell_is_logged_with_the_reason_every_round(digits_grid, initial_arrays,
                                                                                   caplog):
    """The issue's case: 28 GHz, a 250 m cell, a deadline of 0.05 s, an update of 1 MB (a small CNN): nobody
    can upload it in time."""
    wireless = WirelessConfig()
    profiles = sample_device_profiles(wireless, 10, np.random.default_rng(1))
    bits = 8e6
    alone = _alone_latency(profiles, bits, wireless)
    assert alone.min() > 0.05
    strategy = WirelessSelection(FedAvg(), profiles, wireless=wireless, deadline_s=0.05, fading=False,
                                 cost_fn=lambda server_round, arrays: (FLOPS, bits))
    grid = digits_grid(10)
    with caplog.at_level(logging.WARNING):
        result = strategy.start(grid, initial_arrays, num_rounds=2)
    assert not [m for m in grid.sent if m.metadata.message_type == "train"]
    assert [r for r, _ in strategy.empty_rounds] == [1, 2]
    lines = [r.message for r in caplog.records if "no device selected" in r.message]
    assert len(lines) == 2
    assert "none of the 10 available devices can meet the deadline of 0.05 s even alone with all 100" in lines[0]
    fastest = int(np.argmin(alone))
    assert f"the fastest (device {fastest}) needs {alone[fastest]:.3g} s" in lines[0]
    assert result.train_metrics_clientapp[2]["clock-s"] == 0.0


def test_the_policy_can_choose_nobody_and_says_so(four_devices, digits_grid, initial_arrays, monkeypatch):
    from fedmoe.federated.selection import SELECTION_POLICIES

    monkeypatch.setitem(SELECTION_POLICIES._items, "nobody-for-test", lambda demand, ctx: np.zeros(0, dtype=np.int64))
    strategy = WirelessSelection(FedAvg(), four_devices, policy="nobody-for-test", deadline_s=10.0, flops=FLOPS,
                                 fading=False)
    strategy.start(digits_grid(4), initial_arrays, num_rounds=1)
    assert "policy 'nobody-for-test' chose nobody, although 4 of 4 available devices" in strategy.empty_rounds[0][1]


def test_nodes_map_to_devices_in_id_order_and_extra_nodes_are_left_out(four_devices, digits_grid, initial_arrays,
                                                                      caplog):
    assert node_order([30, 10, 20], {}, 2) == {10: 0, 20: 1}
    assert node_order([30, 10, 20, 5], {10: 0, 20: 1}, 3) == {10: 0, 20: 1, 5: 2}
    strategy = WirelessSelection(FedAvg(), four_devices.subset([0, 1]), deadline_s=10.0, flops=FLOPS)
    grid = digits_grid(3)
    strategy.start(grid, initial_arrays, num_rounds=1)
    assert {m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == "train"} <= {101, 102}
    assert any("3 nodes are connected but the profiles describe 2 devices" in r.message for r in caplog.records)


def test_a_custom_device_map_is_checked(four_devices, digits_grid, initial_arrays):
    strategy = WirelessSelection(FedAvg(), four_devices, deadline_s=10.0, device_of=lambda ids: {i: 7 for i in ids})
    with pytest.raises(ValueError, match="outside"):
        strategy.start(digits_grid(2), initial_arrays, num_rounds=1)


def test_the_costs_the_plan_uses_are_the_selection_modules_own(four_devices):
    """The plan prices rounds with fedmoe.federated.selection.round_costs (one formula for every strategy)."""
    lat, energy = round_costs(four_devices, np.full(4, FLOPS), np.full(4, 1e5), np.full(4, 1e6))
    np.testing.assert_allclose(lat, FLOPS / 1e9 + 1e5 / 1e6)
    np.testing.assert_allclose(energy, 1e-9 * FLOPS + 0.1 * 1e5 / 1e6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"base": {}}, TypeError, "got dict"),
    ({"profiles": None}, TypeError, "profiles=DeviceProfiles"),
    ({"policy": "oracle"}, Exception, "oracle"),
    ({"allocation": "fair"}, ValueError, "unknown allocation 'fair'"),
    ({"deadline_s": 0.0}, ValueError, "deadline_s must be > 0"),
    ({"per_round": 0}, ValueError, r"per_round must be in \[1, 100\]"),
    ({"clock_source": "wall"}, ValueError, "clock_source"),
])
def test_bad_settings_get_one_line_errors(four_devices, kwargs, error, match):
    args = {"base": FedAvg(), "profiles": four_devices, **kwargs}
    with pytest.raises(error, match=match):
        WirelessSelection(**args)


def test_expert_wise_given_another_model_says_what_to_use_instead(initial_arrays, digits_grid):
    """The issue's case: ExpertWise started on a plain MLP failed with `unknown parameters ['0.weight', …]`."""
    from flwr.app import ConfigRecord

    from fedmoe.federated.world import world_for
    from fedmoe.strategies import ExpertWise
    from tests.federated.conftest import tiny_config

    strategy = ExpertWise(world_for(tiny_config()))
    with pytest.raises(ValueError, match=r"not its parameters \(e.g. \['layers.0.weight'.*fedmoe.plugins"):
        strategy.configure_train(1, initial_arrays, ConfigRecord(), digits_grid(2))


def test_age_weighted_selection_takes_turns_where_max_devices_keeps_the_same_device(four_devices, digits_grid,
                                                                                      initial_arrays):
    """The wrapper hands the policies who replied in which round: with one device a round, age-weighted
    takes each of the four in turn (the oldest update first); deadline-max-devices keeps the one needing
    the fewest resource blocks."""
    chosen = {}
    for policy in ("age-weighted", "deadline-max-devices"):
        strategy = WirelessSelection(FedAvg(), four_devices, policy=policy, per_round=1, deadline_s=10.0,
                                     flops=FLOPS, fading=False)
        strategy.start(digits_grid(4), initial_arrays, num_rounds=4)
        chosen[policy] = [int(p.devices[0]) for p in strategy.plans]
    assert sorted(chosen["age-weighted"]) == [0, 1, 2, 3]
    assert chosen["deadline-max-devices"] == [0, 0, 0, 0]  # the -95 dB device needs the fewest blocks


def test_a_trace_drives_the_channel_round_by_round_on_the_virtual_clock(four_devices, digits_grid, initial_arrays,
                                                                         trace_file):
    """Device 1 is blocked from 1 µs on: selected in round 1 (clock 0), not in round 2 (clock = round 1's
    latency); device 0's gain drops by 20 dB at the same time, and the plans' rates are the trace's."""
    from fedmoe.wireless.trace_file import read_trace_csv

    rows = [(0, 0, -95, 0), (0, 1e-6, -115, 0), (1, 0, -100, 0), (1, 1e-6, -100, 1), (2, 0, -100, 0),
            (3, 0, -100, 0)]
    trace = read_trace_csv(trace_file(rows), 4)
    wireless = WirelessConfig()
    strategy = WirelessSelection(FedAvg(), four_devices, wireless=wireless, deadline_s=1e6, flops=FLOPS,
                                 policy="all", allocation="equal", trace=trace)
    strategy.start(digits_grid(4), initial_arrays, num_rounds=2)
    first, second = strategy.plans
    assert first.devices.tolist() == [0, 1, 2, 3] and second.devices.tolist() == [0, 2, 3]
    n0 = 10 ** ((wireless.channel.noise_psd_dbm_hz + wireless.channel.noise_figure_db - 30) / 10)
    b = wireless.uplink.resource_block_hz
    for plan, gains in ((first, [-95, -100, -100, -100]), (second, [-115, -100, -100])):
        h = 10 ** (np.asarray(gains) / 10)
        n = plan.num_rb
        np.testing.assert_allclose(plan.rate_bps, n * b * np.log2(1 + 0.1 * h / (n0 * n * b)), rtol=1e-12)
    assert strategy.clock.history[0].clock_s > 1e-6


def test_a_trace_must_describe_the_profiles_devices(four_devices, trace_file):
    from fedmoe.wireless.trace_file import read_trace_csv

    trace = read_trace_csv(trace_file([(0, 0, -90, 0), (1, 0, -90, 0)]), 2)
    with pytest.raises(ValueError, match="trace= must be a ChannelTrace of the 4 devices of the profiles, got 2"):
        WirelessSelection(FedAvg(), four_devices, trace=trace)


def test_a_device_whose_battery_runs_low_drops_out_and_returns_after_recharging(four_devices, digits_grid,
                                                                                initial_arrays):
    """Device 1's battery holds 1.5 rounds' worth (its expected energy at an equal share of 25 blocks, by hand) and
    recharges 0.3 of it over round 1's latency: in, out while it recharges, then in again; the others never run
    low. The charge is followed here round by round from the clock's latencies and the plans' energies."""
    from fedmoe.federated.dynamics import Battery, DeviceDynamics

    wireless = WirelessConfig()
    bits = update_bits(initial_arrays)
    n0 = noise_psd_w_hz(wireless.channel.noise_psd_dbm_hz, wireless.channel.noise_figure_db)
    b = wireless.uplink.resource_block_hz
    share = wireless.uplink.num_resource_blocks // 4
    rate = share * b * np.log2(1 + 0.1 * four_devices.gain / (n0 * share * b))
    need = 1e-9 * FLOPS + 0.1 * bits / rate  # E = e F + P b / R(25)
    slowest = FLOPS / 1e9 + bits / rate[3]  # round 1's latency: everyone in, the -135 dB device last
    capacity = np.array([1e9, 1.5 * need[1], 1e9, 1e9])
    recharge = np.array([0.0, 0.3 * need[1] / slowest, 0.0, 0.0])
    dynamics = DeviceDynamics(4, battery=Battery(4, capacity, recharge_w=recharge))
    strategy = WirelessSelection(FedAvg(), four_devices, wireless=wireless, deadline_s=1e6, flops=FLOPS,
                                 policy="all", allocation="equal", fading=False, dynamics=dynamics)
    strategy.start(digits_grid(4), initial_arrays, num_rounds=4)
    charge, took_part = capacity[1], []
    for plan, tick in zip(strategy.plans, strategy.clock.history):
        took_part.append(1 in plan.devices.tolist())
        assert took_part[-1] == (charge >= need[1])
        if took_part[-1]:
            spent = float(plan.energy_j[plan.devices.tolist().index(1)])
            charge -= spent
        charge = min(charge + recharge[1] * tick.latency_s, capacity[1])
        assert {0, 2, 3} <= set(plan.devices.tolist())
    assert took_part == [True, False, True, False]
    assert strategy.plans[0].energy_j[1] == pytest.approx(need[1], rel=1e-12)
    assert strategy.clock.history[0].latency_s == pytest.approx(slowest, rel=1e-12)
    assert dynamics.charge_j[1] == pytest.approx(charge, rel=1e-12)


def test_dynamics_must_describe_the_profiles_devices(four_devices):
    from fedmoe.federated.dynamics import Battery, DeviceDynamics

    with pytest.raises(ValueError, match="dynamics= must be a DeviceDynamics of the 4 devices of the profiles, got 2"):
        WirelessSelection(FedAvg(), four_devices, dynamics=DeviceDynamics(2, battery=Battery(2, 1.0)))


def test_moving_devices_get_the_rate_of_where_they_are_at_each_rounds_start(digits_grid, initial_arrays):
    """Vehicles at 12 m/s without fading: every round's rates are those of the devices where they are at the
    round's start on the virtual clock (a second Mobility of the same config, moved to the clock by hand),
    so they change round to round, and the clock sees the moved devices' latencies."""
    from fedmoe.wireless.mobility import Mobility

    wireless = WirelessConfig(channel={"fading": "none"}, cell={"radius_m": 60.0},
                              mobility={"model": "random-direction", "classes": {"car": {"speed_mps": (12.0, 12.0)}}})
    profiles = sample_device_profiles(wireless, 4, np.random.default_rng(1))
    strategy = WirelessSelection(FedAvg(), profiles, wireless=wireless, deadline_s=1e6, flops=FLOPS, policy="all",
                                 allocation="equal", mobility=Mobility.from_config(wireless, profiles))
    strategy.start(digits_grid(4), initial_arrays, num_rounds=2)
    twin = Mobility.from_config(wireless, profiles)
    n0 = noise_psd_w_hz(wireless.channel.noise_psd_dbm_hz, wireless.channel.noise_figure_db)
    starts = [0.0] + [tick.clock_s for tick in strategy.clock.history[:-1]]
    assert starts[1] > 0
    for plan, start in zip(strategy.plans, starts):
        assert plan.devices.tolist() == [0, 1, 2, 3]
        prof = twin.at(start)
        rate = uplink_rate(plan.num_rb, wireless.uplink.resource_block_hz, prof.tx_power_w, prof.gain, n0)
        np.testing.assert_allclose(plan.rate_bps, rate, rtol=1e-12)
    first, second = (p.rate_bps for p in strategy.plans)
    assert (first != second).all()
    np.testing.assert_allclose(strategy.mobility.travelled_m, 12.0 * starts[1], rtol=1e-12)


def test_mobility_must_describe_the_profiles_devices_and_not_come_with_a_trace(four_devices, trace_file):
    from fedmoe.wireless.mobility import Mobility
    from fedmoe.wireless.trace_file import read_trace_csv

    wireless = WirelessConfig(mobility={"model": "random-direction"})
    two = Mobility(sample_device_profiles(wireless, 2, np.random.default_rng(0)), wireless)
    with pytest.raises(ValueError, match="mobility= must be a Mobility of the 4 devices of the profiles, got 2"):
        WirelessSelection(FedAvg(), four_devices, mobility=two)
    four = sample_device_profiles(wireless, 4, np.random.default_rng(0))
    trace = read_trace_csv(trace_file([(d, 0, -90, 0) for d in range(4)]), 4)
    with pytest.raises(ValueError, match="give trace= or mobility=, not both"):
        WirelessSelection(FedAvg(), four, mobility=Mobility(four, wireless), trace=trace)
