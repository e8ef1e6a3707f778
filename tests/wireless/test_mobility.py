"""Mobility (fedmoe.wireless.mobility): positions by hand and against a small-step reference with reflection,
shadowing autocorrelation against exp(-Δd / d_cor) ([TR38901] Table 7.5-6), the LoS marginal against
Pr_LoS(d) (Table 7.4.2-1) and its flip rate against the correlation distance (Table 7.6.3.1-2), the config's
one-line errors, and resume."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import ConfigError, WirelessConfig, parse_config
from fedmoe.plugins.costs import device_profiles
from fedmoe.wireless import pathloss as _pl
from fedmoe.wireless.devices import sample_device_profiles
from fedmoe.wireless.mobility import (
    LOS_CORRELATION_M,
    SHADOWING_CORRELATION_M,
    Mobility,
    class_of_devices,
    move_in_annulus,
)


def moving(num_devices: int, speed: tuple[float, float] = (1.0, 1.0), drop_seed: int = 0, scenario: str = "umi",
           **mobility) -> Mobility:
    """``num_devices`` devices dropped in the default cell (10-250 m), all of one class of ``speed``."""
    w = WirelessConfig(channel={"scenario": scenario},
                       mobility={"model": "random-direction", "classes": {"all": {"speed_mps": speed}}, **mobility})
    return Mobility(sample_device_profiles(w, num_devices, np.random.default_rng(drop_seed)), w)


# ------------------------------------------------------------------ positions


def test_a_device_moves_speed_times_time_along_its_heading():
    m = moving(3, speed=(2.0, 2.0))
    m.pos = np.array([[100.0, 0.0], [0.0, -50.0], [30.0, 40.0]])
    m.heading = np.array([[0.0, 1.0], [-0.6, -0.8], [0.6, 0.8]])
    m.advance_to(10.0)  # 20 m each
    np.testing.assert_allclose(m.pos, [[100.0, 20.0], [-12.0, -66.0], [42.0, 56.0]], atol=1e-12)
    np.testing.assert_allclose(m.distance_m, np.hypot(m.pos[:, 0], m.pos[:, 1]))
    np.testing.assert_allclose(m.travelled_m, 20.0)
    m.advance_to(5.0)  # back in time: nothing moves
    np.testing.assert_allclose(m.pos[0], [100.0, 20.0], atol=1e-12)


def test_reflection_at_the_cell_border_and_at_the_minimum_distance_by_hand():
    pos = np.array([[200.0, 0.0], [50.0, 0.0], [0.0, 240.0]])
    heading = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    new, head = move_in_annulus(pos, heading, np.array([100.0, 60.0, 30.0]), r_min=10.0, r_max=250.0)
    # 1: 50 m to the border at 250, 50 m back; 2: 40 m to the inner circle at 10, 20 m out; 3: 10 up, 20 down
    np.testing.assert_allclose(new, [[200.0, 0.0], [30.0, 0.0], [0.0, 230.0]], atol=1e-9)
    np.testing.assert_allclose(head, [[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0]], atol=1e-12)


def test_an_oblique_reflection_at_the_border_by_hand():
    """From (0, 0.6 R) heading +x, the border is hit at (0.8 R, 0.6 R), normal n = (0.8, 0.6): the heading
    becomes v − 2 (v·n) n = (1 − 1.28, −0.96) = (−0.28, −0.96)."""
    r = 250.0
    new, head = move_in_annulus(np.array([[0.0, 0.6 * r]]), np.array([[1.0, 0.0]]), np.array([0.8 * r + 25.0]),
                                r_min=10.0, r_max=r)
    np.testing.assert_allclose(head, [[-0.28, -0.96]], atol=1e-12)
    np.testing.assert_allclose(new, [[0.8 * r - 25.0 * 0.28, 0.6 * r - 25.0 * 0.96]], atol=1e-9)


def _small_steps(p: np.ndarray, v: np.ndarray, travel: float, r_min: float, r_max: float, h: float = 4e-3):
    """Reference: Euler steps of h metres; a step that would leave the annulus reflects off the normal there."""
    p, v = p.astype(float).copy(), v.astype(float).copy()
    for _ in range(int(round(travel / h))):
        q = p + h * v
        r = np.hypot(*q)
        if r > r_max or r < r_min:
            n = q / r
            v = v - 2.0 * (v @ n) * n
            q = p + h * v
        p = q
    return p


def test_positions_match_a_small_step_reference_over_several_reflections():
    rng = np.random.default_rng(4)
    for _ in range(4):
        radius = rng.uniform(20.0, 60.0)
        ang = rng.uniform(0, 2 * np.pi)
        p0 = radius * np.array([np.cos(ang), np.sin(ang)])
        th = rng.uniform(0, 2 * np.pi)
        v0 = np.array([np.cos(th), np.sin(th)])
        new, _ = move_in_annulus(p0[None], v0[None], np.array([300.0]), r_min=10.0, r_max=60.0)
        np.testing.assert_allclose(new[0], _small_steps(p0, v0, 300.0, 10.0, 60.0), atol=0.05)


def test_devices_stay_in_the_cell_and_uniform_by_area():
    m = moving(20_000, speed=(10.0, 15.0), drop_seed=1)
    for t in (30.0, 200.0, 1000.0):
        d = m.at(t).distance_m
        assert d.min() >= 10.0 - 1e-9 and d.max() <= 250.0 + 1e-9
        # uniform by area: F(d) = (d² − r²) / (R² − r²); 4σ of the empirical CDF at three points
        for x in (60.0, 150.0, 220.0):
            f = (x**2 - 100.0) / (250.0**2 - 100.0)
            assert abs((d <= x).mean() - f) <= 4 * np.sqrt(f * (1 - f) / d.size), (t, x)


def test_classes_take_consecutive_blocks_by_largest_remainder_and_speeds_stay_in_their_ranges():
    assert class_of_devices([0.5, 0.3, 0.2], 10).tolist() == [0] * 5 + [1] * 3 + [2] * 2
    assert class_of_devices([1 / 3, 1 / 3, 1 / 3], 7).tolist() == [0, 0, 0, 1, 1, 2, 2]
    w = WirelessConfig(mobility={"model": "random-direction", "classes": {
        "pedestrian": {"share": 0.25, "speed_mps": (0.5, 1.5)}, "vehicle": {"share": 0.75, "speed_mps": (10, 15)}}})
    m = Mobility(sample_device_profiles(w, 40, np.random.default_rng(0)), w)
    assert m.device_class.tolist() == [0] * 10 + [1] * 30
    assert ((m.speed_mps[:10] >= 0.5) & (m.speed_mps[:10] <= 1.5)).all()
    assert ((m.speed_mps[10:] >= 10) & (m.speed_mps[10:] <= 15)).all()


# ------------------------------------------------------------------ the channel where the devices are


def test_at_the_start_the_channel_is_the_drops_and_then_path_loss_follows_the_distance():
    w = WirelessConfig(channel={"bs_array_gain": "codebook"},
                       mobility={"model": "random-direction", "classes": {"v": {"speed_mps": (12.0, 12.0)}}})
    base = sample_device_profiles(w, 200, np.random.default_rng(3))
    m = Mobility(base, w)
    start = m.profiles()
    np.testing.assert_allclose(start.gain, base.gain, rtol=1e-12)
    np.testing.assert_allclose(start.direction_u, base.direction_u, atol=1e-12)
    assert (start.los == base.los).all()
    moved = m.at(20.0)
    ch = w.channel
    np.testing.assert_allclose(moved.pathloss_db, _pl.pathloss_db(ch.scenario, moved.distance_m, ch.bs_height_m,
                                                                  ch.ut_height_m, ch.carrier_ghz, moved.los))
    # the product of the devices module: the drop's gain with PL + SF and G_BS replaced
    expect = base.gain * 10 ** ((base.pathloss_db + base.shadowing_db - moved.pathloss_db - moved.shadowing_db) / 10)
    np.testing.assert_allclose(moved.gain, expect * moved.array_gain / base.array_gain, rtol=1e-12)
    assert not np.allclose(moved.distance_m, base.distance_m)


def test_mobility_needs_devices_of_the_cell():
    w = WirelessConfig(mobility={"model": "random-direction"})
    plain = device_profiles(gain_db=[-100.0, -110.0], tx_power_dbm=20.0, compute_flops=1e9)  # no geometry
    with pytest.raises(ValueError, match="distances and directions inside the cell"):
        Mobility(plain, w)
    assert Mobility.from_config(WirelessConfig(), plain) is None


# ------------------------------------------------------------------ spatial correlation


@pytest.mark.parametrize("scenario", ["umi", "uma"])
def test_shadowing_autocorrelation_is_exp_minus_distance_over_the_correlation_distance(scenario):
    """K devices at 2 m/s: after 5 s (10 m) and 10 s (20 m) each state's latent has correlation
    exp(−Δd / d_cor) with its start and unit variance (4σ of the sample correlation); LoS devices'
    shadowing keeps the LoS σ_SF of Table 7.4.1-1."""
    k = 40_000
    m = moving(k, speed=(2.0, 2.0), drop_seed=2, scenario=scenario, los_correlation_m=1e4)
    start = {s: m.z_sf[s].copy() for s in (True, False)}
    for t, dd in ((5.0, 10.0), (10.0, 20.0)):
        m.advance_to(t)
        for state in (True, False):
            rho = np.exp(-dd / SHADOWING_CORRELATION_M[(scenario, state)])
            got = np.corrcoef(start[state], m.z_sf[state])[0, 1]
            assert abs(got - rho) <= 4 * (1 - rho**2) / np.sqrt(k), (scenario, state, t, got, rho)
            assert abs(m.z_sf[state].std() - 1.0) <= 4 / np.sqrt(2 * k)
    prof = m.profiles()
    assert abs(prof.shadowing_db[prof.los].std() - _pl.SHADOWING_STD_DB[(scenario, True)]) <= \
        4 * _pl.SHADOWING_STD_DB[(scenario, True)] / np.sqrt(2 * prof.los.sum())


def test_the_correlation_distances_are_tr38901s():
    assert SHADOWING_CORRELATION_M == {("umi", True): 10.0, ("umi", False): 13.0, ("uma", True): 37.0,
                                       ("uma", False): 50.0}
    assert LOS_CORRELATION_M == {"umi": 50.0, "uma": 50.0}
    assert moving(2).shadowing_correlation_m(True) == 10.0 and moving(2).los_correlation_m == 50.0
    own = moving(2, shadowing_correlation_m=7.0, los_correlation_m=80.0)
    assert own.shadowing_correlation_m(False) == 7.0 and own.los_correlation_m == 80.0


def test_the_los_state_has_the_tr38901_probability_at_every_distance():
    """Σ LoS over K devices against Σ Pr_LoS(d_k) within 4 binomial σ, at the start and after moves; and
    per distance band."""
    m = moving(30_000, speed=(10.0, 15.0), drop_seed=5)
    for t in (0.0, 3.0, 40.0, 400.0):
        prof = m.at(t)
        p = _pl.los_probability("umi", prof.distance_m, 1.5)
        for band in (prof.distance_m < 50, (prof.distance_m >= 50) & (prof.distance_m < 120),
                     prof.distance_m >= 120):
            los, pb = prof.los[band], p[band]
            assert abs(los.sum() - pb.sum()) <= 4 * np.sqrt((pb * (1 - pb)).sum()), t


def test_the_los_state_flips_less_often_the_longer_its_correlation_distance():
    """Between two positions 5 m apart: flips fall with d_cor; with d_cor → 0 the state is redrawn, so the
    flip rate tends to E[2 p (1 − p)] (p barely changes over 5 m)."""
    rates = {}
    for d_cor in (0.01, 10.0, 50.0, 400.0):
        m = moving(30_000, speed=(1.0, 1.0), drop_seed=6, los_correlation_m=d_cor)
        before = m.profiles().los
        after = m.at(5.0).los
        rates[d_cor] = float((before != after).mean())
    assert rates[0.01] > rates[10.0] > rates[50.0] > rates[400.0] > 0
    p = _pl.los_probability("umi", moving(30_000, drop_seed=6).profiles().distance_m, 1.5)
    independent = float((2 * p * (1 - p)).mean())
    assert abs(rates[0.01] - independent) <= 4 * np.sqrt(independent / 30_000) + 0.01


# ------------------------------------------------------------------ config and resume


@pytest.mark.parametrize("classes, message", [
    ({"v": {"speed_mps": (-1.0, 2.0)}}, r"wireless\.mobility\.classes\.v\.speed_mps\.0: .*greater than or equal to 0"),
    ({"v": {"speed_mps": (float("nan"), 2.0)}}, r"wireless\.mobility\.classes\.v\.speed_mps\.0: .*finite number"),
    ({"v": {"speed_mps": (1.0, float("inf"))}}, r"wireless\.mobility\.classes\.v\.speed_mps\.1: .*finite number"),
    ({"v": {"speed_mps": (3.0, 2.0)}}, r"wireless\.mobility\.classes\.v: speed_mps: lower bound 3 exceeds upper "),
    ({"a": {"share": 0.5}}, r"wireless\.mobility: mobility classes: the shares add to 0\.5, not 1"),
])
def test_bad_speeds_and_shares_are_one_line_errors_naming_the_field(classes, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_config({"wireless": {"mobility": {"model": "random-direction", "classes": classes}}})
    assert "\n" not in str(err.value)


def test_mobility_with_a_trace_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^config: wireless: mobility: a trace \(wireless\.trace\) gives every "
                                          r"round's measured channel.*'none' with a trace$"):
        parse_config({"wireless": {"mobility": {"model": "random-direction"}, "trace": {"path": "t.csv"}}})


def test_mobility_outside_federated_mode_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^config: \(top level\): wireless\.mobility \(devices moving between "
                                          r"rounds\) is supported in mode federated only, got mode split$"):
        parse_config({"mode": "split", "wireless": {"mobility": {"model": "random-direction"}}})


def test_resume_continues_the_same_paths_and_draws():
    whole, cut = moving(50, speed=(1.0, 15.0), drop_seed=8), moving(50, speed=(1.0, 15.0), drop_seed=8)
    runs = [whole.at(t).gain for t in (3.0, 9.0, 20.0, 31.0)]
    cut.at(3.0)
    cut.at(9.0)
    resumed = moving(50, speed=(1.0, 15.0), drop_seed=8, seed=99)  # its draws are overwritten by the saved state
    resumed.speed_mps = cut.speed_mps  # the speeds come from the config (same seed) in a real resume
    assert not np.array_equal(resumed.pos, cut.pos)
    resumed.load_state_dict(cut.state_dict())
    np.testing.assert_array_equal(resumed.at(20.0).gain, runs[2])
    np.testing.assert_array_equal(resumed.at(31.0).gain, runs[3])
    with pytest.raises(ValueError, match="the saved pos has 50 devices, there are 4"):
        moving(4).load_state_dict(cut.state_dict())


def test_the_docs_table_is_the_generated_one_and_the_speeds_differ_only_in_distance_travelled():
    from pathlib import Path

    from fedmoe.wireless.mobility import format_snr_walk, snr_walk_rows

    rows = snr_walk_rows(WirelessConfig(channel={"fading": "none"}), {"pedestrian": 1.0, "vehicle": 12.0},
                         drop_seed=3)
    docs = Path(__file__).resolve().parents[2] / "docs" / "wireless.md"
    assert format_snr_walk(rows) in docs.read_text(encoding="utf-8"), "regenerate the Mobility table"
    assert rows[0]["pedestrian"] == rows[0]["vehicle"]  # the same drop at t = 0
    # the pedestrian at 60 s has travelled 60 m, as the vehicle at 5 s: same place (no reflection yet), same PL
    assert rows[-1]["pedestrian"][0] == pytest.approx(rows[1]["vehicle"][0], abs=1e-9)
