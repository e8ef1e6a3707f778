"""Devices that change across rounds: Markov availability against its closed forms, the availability trace's
reading rules and bad files, battery arithmetic by hand, and both wired into ExpertWise (with resume)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import ConfigError, DynamicsConfig
from fedmoe.federated.availability import AvailabilityFormatError, MarkovAvailability, read_availability_csv
from fedmoe.federated.dynamics import Battery, DeviceDynamics, expected_round_energy
from fedmoe.federated.selection import SelectionContext
from fedmoe.federated.world import world_for
from fedmoe.plugins.costs import device_profiles
from fedmoe.strategies.expert_wise import ExpertWise
from tests.federated.conftest import LocalGrid, play_round, saved_and_resumed, tiny_config

HEADER = "device,time_s,available"


# ------------------------------------------------------------------ Markov chain


def test_the_share_on_follows_the_chain_round_by_round_and_settles_at_the_stationary_share():
    """From all on: P(on at round t) = π + (1 - π) λ^(t-1), λ = 1 - p_on - p_off, π = p_on / (p_on + p_off);
    each round's share over K independent devices is within 4 binomial σ of it."""
    k, p_off, p_on = 20_000, 0.2, 0.3
    chains = MarkovAvailability(k, p_off, p_on, start="on", seed=1)
    pi, lam = p_on / (p_on + p_off), 1 - p_on - p_off
    assert chains.stationary_share == pytest.approx(0.6)
    for t in range(1, 13):
        p = pi + (1 - pi) * lam ** (t - 1)
        share = chains.at_round(t).mean()
        assert abs(share - p) <= 4 * np.sqrt(p * (1 - p) / k) + 1e-12, (t, share, p)
    assert chains.at_round(12).mean() == pytest.approx(pi, abs=4 * np.sqrt(pi * (1 - pi) / k))


def test_transition_counts_match_p_off_and_p_on():
    k, p_off, p_on = 5_000, 0.1, 0.4
    chains = MarkovAvailability(k, p_off, p_on, start="stationary", seed=7)
    first = chains.at_round(1)
    pi = p_on / (p_on + p_off)
    assert abs(first.mean() - pi) <= 4 * np.sqrt(pi * (1 - pi) / k)
    went_off = was_on = went_on = was_off = 0
    prev = first
    for t in range(2, 31):
        now = chains.at_round(t)
        was_on += prev.sum()
        went_off += (prev & ~now).sum()
        was_off += (~prev).sum()
        went_on += (~prev & now).sum()
        prev = now
    assert abs(went_off / was_on - p_off) <= 4 * np.sqrt(p_off * (1 - p_off) / was_on)
    assert abs(went_on / was_off - p_on) <= 4 * np.sqrt(p_on * (1 - p_on) / was_off)


def test_chains_are_seeded_and_resume_where_they_stopped():
    a, b = MarkovAvailability(50, 0.3, 0.3, seed=3), MarkovAvailability(50, 0.3, 0.3, seed=3)
    assert all((a.at_round(t) == b.at_round(t)).all() for t in range(1, 8))
    other = MarkovAvailability(50, 0.3, 0.3, seed=4)
    assert any((other.at_round(t) != a.at_round(t)).any() for t in range(8, 12))
    whole = MarkovAvailability(50, 0.3, 0.3, seed=5)
    cut = MarkovAvailability(50, 0.3, 0.3, seed=5)
    runs = [whole.at_round(t) for t in range(1, 11)]
    for t in range(1, 6):
        cut.at_round(t)
    resumed = MarkovAvailability(50, 0.3, 0.3, seed=99)  # its own seed is overwritten by the saved generator
    resumed.load_state_dict(cut.state_dict())
    assert all((resumed.at_round(t) == runs[t - 1]).all() for t in range(6, 11))
    assert (resumed.at_round(3) == runs[9]).all()  # an earlier round gives the last state, never steps back


# ------------------------------------------------------------------ availability trace


def test_a_trace_state_holds_until_the_devices_next_row_and_devices_start_available(trace_file):
    rows = [(0, 0, 1), (1, 5, 0), (0, 10, 0), (0, 20, "true")]  # device 2 has no rows: always available
    trace = read_availability_csv(trace_file(rows, header=HEADER), 3)
    expected = {0.0: [1, 1, 1], 4.999: [1, 1, 1], 5.0: [1, 0, 1], 9.999: [1, 0, 1], 10.0: [0, 0, 1],
                19.0: [0, 0, 1], 20.0: [1, 0, 1], 1e6: [1, 0, 1]}
    for clock_s, on in expected.items():
        assert trace.at(clock_s).tolist() == [bool(v) for v in on], clock_s


@pytest.mark.parametrize("rows, header, message", [
    ([(0, 0, 1)], "device,time_s", "missing column 'available'; the header must be device,time_s,available, got"),
    ([(0, 0, 1, 2)], "device,time_s,available,speed", "unknown column 'speed'"),
    ([(0, 0, 1), (7, 0, 1)], HEADER, "row 2 (line 3), field 'device': unknown device id 7 (the scenario has 3"),
    ([(0, 0, "maybe")], HEADER, "row 1 (line 2), field 'available': 'maybe' is not 0, 1, true or false"),
    ([(0, 5, 1), (0, 5, 0)], HEADER, "row 2 (line 3), field 'time_s': 5 is not after device 0's previous time 5"),
    ([(0, -1, 1)], HEADER, "row 1 (line 2), field 'time_s': -1 is negative"),
    ([(0, "nan", 1)], HEADER, "row 1 (line 2), field 'time_s': 'nan' is not finite"),
    (["0,1"], HEADER, "row 1 (line 2): 2 fields, the header has 3"),
    ([], HEADER, "no data rows"),
])
def test_bad_availability_files_name_the_file_row_and_field(trace_file, rows, header, message):
    path = trace_file(rows, header=header, name="avail.csv")
    with pytest.raises(AvailabilityFormatError, match="avail.csv: .*" + _escape(message)) as err:
        read_availability_csv(path, 3)
    assert "\n" not in str(err.value)


def test_a_missing_availability_file_is_one_line(tmp_path):
    with pytest.raises(AvailabilityFormatError, match=r"gone\.csv: no such availability file$"):
        read_availability_csv(tmp_path / "gone.csv", 2)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# ------------------------------------------------------------------ battery


def test_battery_arithmetic_over_three_rounds_by_hand():
    battery = Battery(3, capacity_j=(10.0, 10.0, 5.0), initial_j=(10.0, 4.0, 5.0), recharge_w=(0.5, 1.0, 1.0))
    need = np.array([3.0, 3.0, 3.0])
    dyn = DeviceDynamics(3, battery=battery)
    assert dyn.available(1, 0.0, need).tolist() == [True, True, True]
    dyn.after_round([0, 1], [3.0, 3.5], latency_s=2.0)
    # 0: 10 - 3 + 0.5*2 = 8; 1: 4 - 3.5 + 1*2 = 2.5; 2: min(5, 5 + 2) = 5 (full)
    np.testing.assert_allclose(dyn.charge_j, [8.0, 2.5, 5.0])
    assert dyn.available(2, 2.0, need).tolist() == [True, False, True]  # 2.5 J < 3 J
    dyn.after_round([0, 2], [6.0, 2.0], latency_s=4.0)
    # 0: 8 - 6 + 2 = 4; 1: 2.5 + 4 = 6.5; 2: min(5, 5 - 2 + 4) = 5
    np.testing.assert_allclose(dyn.charge_j, [4.0, 6.5, 5.0])
    assert dyn.available(3, 6.0, need).tolist() == [True, True, True]  # device 1 is back
    dyn.after_round([1], [10.0], latency_s=1.0)
    # 1 spends more than it holds: stops at 0, then + 1; 0: 4 + 0.5; 2: full
    np.testing.assert_allclose(dyn.charge_j, [4.5, 1.0, 5.0])
    assert dyn.available(4, 7.0, need).tolist() == [True, False, True]


def test_expected_round_energy_is_the_equal_share_energy_by_hand():
    prof = device_profiles(gain_db=[-95.0, -110.0], tx_power_dbm=20.0, compute_flops=1e9, energy_per_flop_j=2e-9)
    ctx = SelectionContext(tiny_config().wireless, 4, 10.0, np.random.default_rng(0))
    flops, bits = np.array([1e8, 3e8]), np.array([1e6, 2e6])
    share = ctx.wireless.uplink.num_resource_blocks // 2  # min(per_round, K) = 2 devices
    b = ctx.wireless.uplink.resource_block_hz
    n0 = 10 ** ((-174.0 + 9.0 - 30.0) / 10)
    h = 10 ** (np.array([-95.0, -110.0]) / 10)
    rate = share * b * np.log2(1 + 0.1 * h / (n0 * share * b))
    np.testing.assert_allclose(expected_round_energy(prof, flops, bits, ctx), 2e-9 * flops + 0.1 * bits / rate,
                               rtol=1e-12)


def test_dynamics_are_off_by_default_and_bad_battery_sizes_are_one_line():
    assert DeviceDynamics.from_config(DynamicsConfig(), 4) is None
    assert tiny_config().federated.dynamics == DynamicsConfig()
    with pytest.raises(ConfigError, match=r"^federated.dynamics.battery: Battery: capacity_j has 2 values, there "
                                          r"are 4 devices \(give one, or one each\)$"):
        DeviceDynamics.from_config(DynamicsConfig(battery={"capacity_j": (1.0, 2.0)}), 4)
    with pytest.raises(ValueError, match="battery recharge_w: -1.0 must be finite and >= 0"):
        DynamicsConfig(battery={"capacity_j": 1.0, "recharge_w": -1.0})
    with pytest.raises(ValueError, match="availability model 'trace' needs path"):
        DynamicsConfig(availability={"model": "trace"})


# ------------------------------------------------------------------ in ExpertWise


def _round(strategy: ExpertWise, world, grid: LocalGrid, server_round: int):
    return play_round(strategy, grid, server_round)


def test_expert_wise_selects_only_devices_that_are_on_and_charged_and_charges_the_round(trace_file):
    """Device 1 is off from the start (trace), device 2 has a flat battery that does not recharge: round 1 takes
    devices 0 and 3, whose batteries lose exactly the round's energy account; device 1 comes on at 1 µs."""
    avail = trace_file([(1, 0, 0), (1, 1e-6, 1)], header=HEADER, name="avail.csv")
    big = 100.0  # J: a few J a round, so the charge keeps the energy to ~1e-14 J
    cfg = tiny_config(federated={"selection": "all", "dynamics": {
        "availability": {"model": "trace", "path": str(avail)},
        "battery": {"capacity_j": big, "initial_j": (big, big, 0.0, big), "recharge_w": 0.0}}})
    world = world_for(cfg)
    strategy = ExpertWise(world)
    grid = LocalGrid(4)
    first = _round(strategy, world, grid, 1)
    assert strategy._plan.devices.tolist() == [0, 3] and first.devices == [0, 3]
    spent = np.array([big, big, 0.0, big]) - strategy.dynamics.charge_j
    assert spent[[1, 2]].tolist() == [0.0, 0.0] and (spent[[0, 3]] > 0).all()
    assert spent.sum() == pytest.approx(first.energy_j, rel=1e-12)
    second = _round(strategy, world, grid, 2)
    assert second.devices == [0, 1, 3]  # on again at the clock of round 2's start; 2 is still flat


def test_expert_wise_resume_keeps_the_batteries_and_chains(tmp_path):
    cfg = tiny_config(federated={"selection": "all", "dynamics": {
        "availability": {"p_off": 0.5, "p_on": 0.5, "seed": 2},
        "battery": {"capacity_j": 1e6, "recharge_w": 0.0}}})
    world = world_for(cfg)
    strategy = ExpertWise(world)
    _round(strategy, world, LocalGrid(4), 1)
    strategy.dynamics.available(3, 0.0, np.zeros(4))  # the chains step on to round 3
    resumed = saved_and_resumed(strategy, tmp_path)
    np.testing.assert_array_equal(resumed.dynamics.charge_j, strategy.dynamics.charge_j)
    assert (resumed.dynamics.charge_j < 1e6).any()
    assert resumed.dynamics.availability.round == 3
    for t in range(2, 6):
        assert (resumed.dynamics.available(t, 0.0, np.zeros(4)) ==
                strategy.dynamics.available(t, 0.0, np.zeros(4))).all()
    assert ExpertWise(world).dynamics.availability.round == 1
