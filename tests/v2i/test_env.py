"""V2I environment ([P002]): β from speed and SNR, radar noise, channel (eq. 2), CSI error (eq. 8), beams (eq. 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmoe.config import V2IConfig
from fedmoe.v2i.channel import (
    beamformer,
    csi_error,
    geometric_channel,
    normalised_gain,
    per_vehicle_power_w,
    steering_phases,
    wavelength_m,
)
from fedmoe.v2i.env import V2IEnv, radar_std, snr_factor
from fedmoe.v2i.training import evaluate, fixed_policies


def test_beta_scales_with_speed_and_snr():
    cfg = V2IConfig(speed_jitter=0.0)
    env = V2IEnv(cfg, 3, seed=0, speed_scale=1.5, snr_db=20.0)
    f = (cfg.radar_floor + 0.01) / (cfg.radar_floor + 0.1)
    np.testing.assert_allclose(env.beta, np.broadcast_to(np.asarray(cfg.beta) * 1.5 * f, (3, 4)))
    assert snr_factor(cfg, cfg.snr_ref_db) == pytest.approx(1.0)
    assert radar_std(cfg, cfg.snr_ref_db + 20) == pytest.approx((math.radians(0.5) / 10, 0.05))


def test_radar_noise_has_the_configured_spread():
    cfg = V2IConfig()
    env = V2IEnv(cfg, 4000, seed=1)
    obs = env.observe()
    err = obs[..., 0] - env.angle
    assert err.std() == pytest.approx(math.radians(cfg.radar_angle_std_deg), rel=0.05)
    assert abs(err.mean()) < 3 * math.radians(cfg.radar_angle_std_deg) / math.sqrt(err.size)


def test_single_path_channel_is_free_space_times_the_steering_vector():
    cfg = V2IConfig(num_paths=1)
    theta, d = np.array([0.3, -0.7]), np.array([20.0, 55.0])
    h = geometric_channel(cfg, theta, d, np.random.default_rng(0))
    lam = wavelength_m(cfg)
    m = np.arange(cfg.num_antennas)
    for i in range(2):
        expected = (lam / (4 * math.pi * d[i]) * np.exp(-2j * math.pi * d[i] / lam)
                    * np.exp(1j * math.pi * m * np.sin(theta[i])))
        np.testing.assert_allclose(h[i], expected, rtol=1e-6)
    # the beam steered to the true angle collects the whole array gain
    v = beamformer(torch.from_numpy(steering_phases(cfg, theta)))
    np.testing.assert_allclose(normalised_gain(torch.from_numpy(h), v).numpy(), 1.0, rtol=1e-9)


def test_multipath_channel_keeps_the_rician_power_split():
    cfg = V2IConfig(num_paths=3, rician_k_db=10.0)
    h = geometric_channel(cfg, np.zeros(20000), np.full(20000, 30.0), np.random.default_rng(2))
    free = (wavelength_m(cfg) / (4 * math.pi * 30.0)) ** 2 * cfg.num_antennas
    # E||h||² = M Σ_l E|α_l|²: the line of sight keeps K/(K+1); the scattered paths share 1/(K+1) but travel
    # d + U(0, 30 m), which keeps E[(d/(d+e))²] = d/(d+30) = 1/2 of their power at d = 30 m
    expected = 10 / 11 + 0.5 / 11
    assert (np.abs(h) ** 2).sum(-1).mean() / free == pytest.approx(expected, rel=0.01)


def test_csi_error_variance_is_rho_times_p_misa_times_channel_energy():
    rng = np.random.default_rng(3)
    h_hat = rng.normal(size=(50000, 16)) + 1j * rng.normal(size=(50000, 16))
    normal = (rng.normal(size=h_hat.shape) + 1j * rng.normal(size=h_hat.shape)) / math.sqrt(2)
    dh = csi_error(h_hat, np.full(50000, 0.3), 2.0, normal)
    ratio = (np.abs(dh) ** 2).sum(-1) / (np.abs(h_hat) ** 2).sum(-1)
    assert ratio.mean() == pytest.approx(2.0 * 0.3, rel=0.02)


def test_beams_meet_constant_modulus_and_power():
    cfg = V2IConfig()
    v = beamformer(torch.randn(10, cfg.num_vehicles, cfg.num_antennas, dtype=torch.float64) * 50)
    np.testing.assert_allclose(v.abs().numpy(), 1 / math.sqrt(cfg.num_antennas), rtol=1e-12)  # (9b)
    total = per_vehicle_power_w(cfg) * (v.abs() ** 2).sum(-1).sum(-1)
    np.testing.assert_allclose(total.numpy(), 10 ** ((cfg.p_max_dbm - 30) / 10), rtol=1e-12)  # (9c)


def test_episodes_meet_the_same_world_whatever_the_policy():
    cfg = V2IConfig()
    a, b = V2IEnv(cfg, 5, seed=9), V2IEnv(cfg, 5, seed=9)
    for n in range(20):
        np.testing.assert_array_equal(a.observe()[..., :2], b.observe()[..., :2])
        sa, sb = a.step(np.ones((5, 4), bool)), b.step(np.zeros((5, 4), bool))
        np.testing.assert_array_equal(sa.h_hat, sb.h_hat)
    assert not np.allclose(sa.h, sb.h)  # the CSI error grows with the AoI of the radar-only episodes


def test_fixed_policies_against_the_paper_anchors_and_the_bound(v2i_cfg):
    res = {name: evaluate(v2i_cfg, make, seed=4) for name, make in fixed_policies(v2i_cfg).items()}
    assert res["vision_only"]["energy_j"] == pytest.approx(40.0)  # [P002]: exactly 40 J (t_proc = 0)
    assert res["radar_only"]["energy_j"] > 60.0  # [P002]: above 60 J
    bound = res["oracle"]["lower_bound_j"]
    assert res["oracle"]["energy_j"] == pytest.approx(bound, rel=0.01)
    for name, r in res.items():
        assert r["energy_j"] >= bound * (1 - 1e-9), name
        assert r["lower_bound_j"] == bound  # the same episodes for every policy
