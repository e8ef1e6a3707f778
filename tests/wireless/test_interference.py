"""Inter-cell interference: geometry, power spectral density by hand, and its wiring into the SINR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmoe.config import CellConfig, ChannelConfig, DeviceProfileConfig, InterferenceConfig, WirelessConfig
from fedmoe.wireless.devices import rb_snr_db, sample_device_profiles
from fedmoe.wireless.interference import inter_site_distance, neighbour_interference_psd, neighbour_sites


def test_sites_form_the_first_hexagonal_tier():
    s = neighbour_sites(6, 100.0)
    np.testing.assert_allclose(np.hypot(s[:, 0], s[:, 1]), 100.0)
    # neighbours of a hexagonal ring are one ISD apart from each other too
    np.testing.assert_allclose(np.hypot(*(s - np.roll(s, 1, axis=0)).T), 100.0)
    assert inter_site_distance(WirelessConfig()) == pytest.approx(math.sqrt(3) * 250.0)


def umi_pl(d: float, los: bool) -> float:
    """TR 38.901 Table 7.4.1-1 UMi at 28 GHz, h_BS 10 m, h_UT 1.5 m, d < d'_BP (by hand)."""
    d3 = math.hypot(d, 8.5)
    pl_los = 32.4 + 21 * math.log10(d3) + 20 * math.log10(28.0)
    return pl_los if los else max(pl_los, 35.3 * math.log10(d3) + 22.4 + 21.3 * math.log10(28.0))


def test_psd_by_hand_for_a_far_small_neighbour():
    # One neighbour 1 km away whose devices sit 9.99-10 m from it: the interferer is 990-1010 m
    # from us, transmits 20 dBm over 5 RBs of 200 kHz; no shadowing, no fading, no array gain.
    cfg = WirelessConfig(
        channel=ChannelConfig(shadowing=False, fading="none", bs_array_gain="none"),
        cell=CellConfig(radius_m=10.0, min_distance_m=9.99),
        devices=DeviceProfileConfig(tx_power_dbm=(20.0, 20.0)),
        interference=InterferenceConfig(model="neighbours", num_cells=1, inter_site_distance_m=1000.0,
                                        rbs_per_interferer=5))
    i0 = neighbour_interference_psd(cfg, np.random.default_rng(0), np.zeros(400, dtype=int))
    psd_tx = 0.1 / (5 * 200e3)
    i_db = 10 * np.log10(i0 / psd_tx)
    lo = {los: -umi_pl(1010.0, los) for los in (True, False)}
    hi = {los: -umi_pl(990.0, los) for los in (True, False)}
    is_los = (i_db >= lo[True] - 1e-9) & (i_db <= hi[True] + 1e-9)
    is_nlos = (i_db >= lo[False] - 1e-9) & (i_db <= hi[False] + 1e-9)
    assert np.all(is_los | is_nlos)
    p_los = 18 / 1000 + math.exp(-1000 / 36) * (1 - 18 / 1000)  # Table 7.4.2-1 at ~1 km: 1.8 %
    assert is_los.mean() == pytest.approx(p_los, abs=0.02)


def test_interference_enters_the_sinr():
    base = WirelessConfig()
    cfg = base.model_copy(update={"interference": InterferenceConfig(model="neighbours")})
    clean = sample_device_profiles(base, 300, np.random.default_rng(5))
    noisy = sample_device_profiles(cfg, 300, np.random.default_rng(5))
    n0 = 10 ** ((-174 + 9 - 30) / 10)
    assert np.all(noisy.interference_w_hz > 0)
    np.testing.assert_allclose(noisy.gain, clean.gain * n0 / (n0 + noisy.interference_w_hz), rtol=1e-12)
    sinr = noisy.tx_power_w * clean.gain / ((n0 + noisy.interference_w_hz) * 200e3)
    np.testing.assert_allclose(rb_snr_db(noisy, cfg), 10 * np.log10(sinr), rtol=1e-12)


def test_beam_rejects_los_interference_on_average():
    # With the codebook the LoS interferers pass through device k's beam pattern (mean ~1 over
    # directions, at most N); without it every interferer gets 1: the mean PSD must not grow.
    kw = dict(channel=ChannelConfig(shadowing=False, fading="none", bs_array_gain="codebook"),
              interference=InterferenceConfig(model="neighbours", inter_site_distance_m=150.0))
    on = WirelessConfig(**kw)
    off = WirelessConfig(**{**kw, "channel": ChannelConfig(shadowing=False, fading="none", bs_array_gain="none")})
    beams = np.random.default_rng(1).integers(0, 64, 4000)
    i_on = neighbour_interference_psd(on, np.random.default_rng(2), beams)
    i_off = neighbour_interference_psd(off, np.random.default_rng(2), beams)
    assert np.mean(i_on) < 1.5 * np.mean(i_off)
    assert np.median(i_on / i_off) < 1.0


def test_nlos_interferers_get_the_mean_pattern_one():
    # 3 km away almost every interferer is NLoS (P_LoS = 0.6 %): rich scattering passes the beam at 1 on average,
    # so with or without the codebook the PSD is the same for those devices.
    kw = dict(interference=InterferenceConfig(model="neighbours", num_cells=1, inter_site_distance_m=3000.0))
    on = WirelessConfig(channel=ChannelConfig(shadowing=False, fading="none", bs_array_gain="codebook"), **kw)
    off = WirelessConfig(channel=ChannelConfig(shadowing=False, fading="none", bs_array_gain="none"), **kw)
    beams = np.random.default_rng(3).integers(0, 64, 1000)
    ratio = neighbour_interference_psd(on, np.random.default_rng(4), beams) / \
        neighbour_interference_psd(off, np.random.default_rng(4), beams)
    assert np.mean(np.abs(ratio - 1.0) < 1e-12) > 0.97
