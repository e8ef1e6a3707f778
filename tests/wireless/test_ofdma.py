"""OFDMA uplink rate, noise and unit conversions against hand values ([P001] eq. 3-5)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.wireless import ofdma


def test_dbm_watt_conversions():
    assert ofdma.dbm_to_w(30.0) == pytest.approx(1.0)
    assert ofdma.dbm_to_w(0.0) == pytest.approx(1e-3)
    assert ofdma.dbm_to_w(23.0) == pytest.approx(0.19952623, rel=1e-7)
    assert ofdma.w_to_dbm(0.01) == pytest.approx(10.0)
    p = np.array([-40.0, 0.0, 17.5])
    assert np.allclose(ofdma.w_to_dbm(ofdma.dbm_to_w(p)), p)
    assert ofdma.db_to_linear(20.0) == pytest.approx(100.0)
    assert ofdma.linear_to_db(0.0) == -np.inf


def test_noise():
    # -174 dBm/Hz + 9 dB = -165 dBm/Hz = 10^(-16.5) mW/Hz = 3.1622777e-20 W/Hz
    assert ofdma.noise_psd_w_hz(-174.0, 9.0) == pytest.approx(3.1622777e-20, rel=1e-7)
    # N0 B over 1 MHz at -174 dBm/Hz: 10^(-17.4) mW/Hz * 1e6 Hz = 3.9810717e-15 W (-114 dBm)
    n0 = ofdma.noise_psd_w_hz(-174.0, 0.0)
    assert ofdma.noise_power_w(1e6, n0) == pytest.approx(3.9810717e-15, rel=1e-7)


def test_rate_hand_values():
    # P = 0.1 W, h = 1e-10, N0 = 4e-21 W/Hz, B_min = 1 MHz:
    # b = 1: SNR = 1e-11 / (4e-21 * 1e6) = 2500, R = 1e6 log2(2501) = 1e6 * 11.288289342
    # b = 4: SNR = 2500 / 4 = 625 (noise over 4 MHz), R = 4e6 log2(626) = 4e6 * 9.290018847
    r = ofdma.uplink_rate(np.array([1, 4]), 1e6, 0.1, 1e-10, 4e-21)
    assert r[0] == pytest.approx(1e6 * 11.288289342, rel=1e-9)
    assert r[1] == pytest.approx(4e6 * 9.290018847, rel=1e-9)


def test_noise_scales_with_bandwidth():
    # Doubling the RBs halves the SNR: R(2b) = 2 b B log2(1 + s / (2b)), not 2 R(b)
    s = 10.0
    r1, r2 = ofdma.rate_from_snr(np.array([1, 2]), 1.0, s)
    assert r1 == pytest.approx(np.log2(11.0))
    assert r2 == pytest.approx(2 * np.log2(6.0))
    assert r1 < r2 < 2 * r1


def test_rate_monotone_concave_and_bounded():
    b = np.arange(1, 2001)
    for s in (1e-3, 1.0, 1e4):
        r = ofdma.rate_from_snr(b, 2e5, s)
        assert np.all(np.diff(r) > 0)
        assert np.all(np.diff(r, 2) < 0)
        assert r[-1] < 2e5 * s / np.log(2)  # limit P h / (N0 ln 2)


def test_rate_zero_cases():
    assert ofdma.rate_from_snr(0, 1e6, 100.0) == 0.0
    assert ofdma.uplink_rate(3, 1e6, 0.0, 1e-9, 1e-20) == 0.0


def test_upload_time():
    t = ofdma.upload_time(np.array([1e6, 0.0, 5.0, 0.0]), np.array([2e6, 1e6, 0.0, 0.0]))
    assert t[0] == 0.5 and t[1] == 0.0 and t[2] == np.inf and t[3] == 0.0
