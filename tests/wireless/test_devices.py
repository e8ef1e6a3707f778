"""Device drops, channel gains and per-round latency / energy."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import CellConfig, ChannelConfig, DeviceProfileConfig, SensingCostConfig, WirelessConfig
from fedmoe.wireless import pathloss as pl
from fedmoe.wireless.devices import (
    DeviceProfiles,
    allocation_inputs,
    device_energy,
    device_latency,
    fixed_latency,
    rb_snr_db,
    sample_device_profiles,
)


def test_drop_shapes_ranges_and_seed():
    cfg = WirelessConfig()
    a = sample_device_profiles(cfg, 500, np.random.default_rng(0))
    b = sample_device_profiles(cfg, 500, np.random.default_rng(0))
    assert len(a) == 500 and a.sensing_time_s.shape == (500, len(a.modalities))
    assert np.array_equal(a.gain, b.gain)
    assert np.all((a.distance_m >= cfg.cell.min_distance_m) & (a.distance_m <= cfg.cell.radius_m))
    lo, hi = cfg.devices.tx_power_dbm
    assert np.all((a.tx_power_w >= 10 ** ((lo - 30) / 10)) & (a.tx_power_w <= 10 ** ((hi - 30) / 10)))
    assert np.all((a.compute_flops >= cfg.devices.compute_flops[0]) & (a.compute_flops <= cfg.devices.compute_flops[1]))
    assert np.all(a.gain > 0) and np.all(a.gain < 1)


def test_uniform_by_area():
    cfg = WirelessConfig(cell=CellConfig(radius_m=200.0, min_distance_m=20.0))
    d = sample_device_profiles(cfg, 50_000, np.random.default_rng(1)).distance_m
    # half the annulus area lies inside r = sqrt((20^2 + 200^2) / 2) = 142.1267
    assert np.mean(d < 142.1267) == pytest.approx(0.5, abs=0.01)


def test_los_fraction_follows_probability():
    cfg = WirelessConfig()
    prof = sample_device_profiles(cfg, 50_000, np.random.default_rng(2))
    p = pl.los_probability(cfg.channel.scenario, prof.distance_m, cfg.channel.ut_height_m)
    assert prof.los.mean() == pytest.approx(p.mean(), abs=0.01)


def test_gain_composition():
    cfg = WirelessConfig()
    prof = sample_device_profiles(cfg, 300, np.random.default_rng(3))
    ch = cfg.channel
    pl_db = pl.pathloss_db(ch.scenario, prof.distance_m, ch.bs_height_m, ch.ut_height_m, ch.carrier_ghz, prof.los)
    assert np.allclose(prof.pathloss_db, pl_db)
    assert np.allclose(prof.gain, 10 ** (-(pl_db + prof.shadowing_db) / 10) * prof.fading * prof.array_gain,
                       rtol=1e-12)
    assert prof.shadowing_db.std() > 2.0
    assert np.all(prof.array_gain >= 1.0) and np.all(prof.array_gain <= ch.num_antennas * (1 + 1e-12))


def test_array_gain_off_is_the_old_gain_and_leaves_the_other_draws_alone():
    on = sample_device_profiles(WirelessConfig(), 300, np.random.default_rng(3))
    cfg = WirelessConfig(channel=ChannelConfig(bs_array_gain="none"))
    off = sample_device_profiles(cfg, 300, np.random.default_rng(3))
    assert np.all(off.array_gain == 1.0) and np.all(off.interference_w_hz == 0.0)
    assert np.allclose(off.gain, 10 ** (-(off.pathloss_db + off.shadowing_db) / 10) * off.fading, rtol=1e-12)
    for name in ("tx_power_w", "distance_m", "los", "shadowing_db", "fading", "compute_flops", "direction_u"):
        assert np.array_equal(getattr(on, name), getattr(off, name)), name
    np.testing.assert_allclose(on.gain / off.gain, on.array_gain, rtol=1e-12)


def test_no_shadowing_no_fading():
    cfg = WirelessConfig(channel=ChannelConfig(shadowing=False, fading="none", bs_array_gain="none"))
    prof = sample_device_profiles(cfg, 100, np.random.default_rng(4))
    assert np.all(prof.shadowing_db == 0.0) and np.all(prof.fading == 1.0)
    assert np.allclose(prof.gain, 10 ** (-prof.pathloss_db / 10))


def test_zero_and_negative_devices():
    assert len(sample_device_profiles(WirelessConfig(), 0, np.random.default_rng(0))) == 0
    with pytest.raises(ValueError, match="num_devices"):
        sample_device_profiles(WirelessConfig(), -1, np.random.default_rng(0))


def _two_devices() -> DeviceProfiles:
    cfg = WirelessConfig(devices=DeviceProfileConfig(sensing={
        "camera": SensingCostConfig(time_s=0.03, power_w=2.0),
        "gps": SensingCostConfig(time_s=0.001, power_w=0.05),
    }))
    prof = sample_device_profiles(cfg, 2, np.random.default_rng(5))
    return DeviceProfiles(
        tx_power_w=np.array([0.1, 0.2]), compute_flops=np.array([1e9, 4e9]), energy_per_flop_j=np.array([1e-9, 5e-10]),
        sensing_time_s=prof.sensing_time_s, sensing_energy_j=prof.sensing_energy_j, gain=prof.gain,
        distance_m=prof.distance_m, los=prof.los, pathloss_db=prof.pathloss_db, shadowing_db=prof.shadowing_db,
        fading=prof.fading, modalities=prof.modalities,
    )


def test_latency_and_energy_hand_values():
    prof = _two_devices()
    assert prof.modalities == ("camera", "gps")
    # camera 0.03 s at 2 W (0.06 J); gps 0.001 s at 0.05 W (5e-5 J)
    flops, bits, rate = np.array([2e9, 2e9]), np.array([1e6, 4e6]), np.array([2e6, 1e6])
    # device 0: 0.031 + 2e9/1e9 + 1e6/2e6 = 2.531 s; device 1: 0.031 + 0.5 + 4 = 4.531 s
    assert np.allclose(device_latency(prof, flops, bits, rate), [2.531, 4.531])
    # device 0: 1e-9*2e9 + 0.1*0.5 + 0.06005 = 2.11005 J; device 1: 5e-10*2e9 + 0.2*4 + 0.06005 = 1.86005 J
    assert np.allclose(device_energy(prof, flops, bits, rate), [2.11005, 1.86005])
    used = np.array([[True, False], [False, True]])
    # device 0 senses only the camera, device 1 only GPS
    assert np.allclose(fixed_latency(prof, flops, used), [0.03 + 2.0, 0.001 + 0.5])
    assert np.allclose(device_energy(prof, flops, bits, rate, used), [2.0 + 0.05 + 0.06, 1.0 + 0.8 + 5e-5])


def test_latency_energy_zero_rate():
    prof = _two_devices()
    lat = device_latency(prof, np.zeros(2), np.array([1e6, 0.0]), np.array([0.0, 0.0]))
    en = device_energy(prof, np.zeros(2), np.array([1e6, 0.0]), np.array([0.0, 0.0]))
    assert lat[0] == np.inf and np.isfinite(lat[1])
    assert en[0] == np.inf and en[1] == pytest.approx(0.06005)


def test_profile_validation():
    prof = _two_devices()
    with pytest.raises(ValueError, match="modality mask"):
        prof.sensing(np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="gain"):
        DeviceProfiles(**{**prof.__dict__, "gain": np.ones(3)})


def test_admission_and_allocation_inputs():
    cfg = WirelessConfig()
    prof = sample_device_profiles(cfg, 300, np.random.default_rng(6), min_snr_db=5.0)
    assert len(prof) == 300 and np.all(rb_snr_db(prof, cfg) >= 5.0)
    # per-RB SNR by hand: P h / (N0 B_min), N0 = -174 + 9 dBm/Hz = 10^(-19.5) W/Hz, B_min = 200 kHz
    assert np.allclose(rb_snr_db(prof, cfg), 10 * np.log10(prof.tx_power_w * prof.gain / (10 ** -19.5 * 2e5)))
    kw = allocation_inputs(prof, cfg, np.full(300, 1e6), np.full(300, 1e9))
    assert kw["rb_hz"] == 2e5 and kw["noise_psd_w_hz"] == pytest.approx(10 ** -19.5)
    assert np.allclose(kw["fixed_latency"], prof.sensing_time_s.sum(axis=1) + 1e9 / prof.compute_flops)
    assert len(sample_device_profiles(cfg, 0, np.random.default_rng(0), min_snr_db=5.0)) == 0
    with pytest.raises(ValueError, match="admits almost no device"):
        sample_device_profiles(cfg, 10, np.random.default_rng(0), min_snr_db=200.0)
    sub = prof.subset(np.arange(10))
    assert len(sub) == 10 and np.array_equal(sub.gain, prof.gain[:10])
