"""Small-scale fading power gains: unit mean, Rician variance, Rayleigh = Exp(1)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedmoe.wireless.fading import fading_power, rayleigh_power, rician_power

N = 200_000


def test_rayleigh_mean_and_distribution():
    g = rayleigh_power(np.random.default_rng(0), N)
    assert g.shape == (N,) and np.all(g >= 0)
    assert g.mean() == pytest.approx(1.0, abs=5 / np.sqrt(N))  # std of Exp(1) is 1
    # |h|^2 of h ~ CN(0, 1) is Exp(1): Kolmogorov-Smirnov on a fixed seed
    assert stats.kstest(g, "expon").pvalue > 0.01
    assert np.mean(g > 1.0) == pytest.approx(np.exp(-1.0), abs=0.005)


@pytest.mark.parametrize("k_db", [-10.0, 0.0, 9.0, 20.0])
def test_rician_unit_mean_and_variance(k_db):
    g = rician_power(np.random.default_rng(1), k_db, N)
    k = 10 ** (k_db / 10)
    var = (2 * k + 1) / (k + 1) ** 2
    assert g.mean() == pytest.approx(1.0, abs=5 * np.sqrt(var / N))
    assert g.var() == pytest.approx(var, rel=0.03)


def test_rician_large_k_concentrates_at_one():
    g = rician_power(np.random.default_rng(2), 40.0, N)
    assert g.mean() == pytest.approx(1.0, abs=1e-3)
    assert g.var() < 3e-4  # (2K+1)/(K+1)^2 ~ 2e-4 at K = 1e4
    assert np.all(np.abs(g - 1.0) < 0.1)


def test_rician_k_zero_linear_is_rayleigh():
    g = rician_power(np.random.default_rng(3), -60.0, N)  # K = 1e-6
    assert stats.kstest(g, "expon").pvalue > 0.01


def test_rician_broadcast_k():
    g = rician_power(np.random.default_rng(4), np.array([30.0, -30.0]))
    assert g.shape == (2,)


def test_fading_power_kinds():
    rng = np.random.default_rng(5)
    los = np.arange(N) % 2 == 0
    assert np.all(fading_power(rng, "none", los) == 1.0)
    ray = fading_power(rng, "rayleigh", los)
    assert ray[los].var() == pytest.approx(1.0, rel=0.05)
    ric = fading_power(rng, "rician", los, rician_k_db=30.0)
    assert ric[los].var() < 0.01  # Rician with K = 1000 on LoS links
    assert ric[~los].var() == pytest.approx(1.0, rel=0.05)  # Rayleigh on NLoS links
    assert ric.mean() == pytest.approx(1.0, abs=0.01)


def test_fading_seeded_and_unknown_kind():
    a = fading_power(np.random.default_rng(7), "rician", np.ones(10, bool))
    b = fading_power(np.random.default_rng(7), "rician", np.ones(10, bool))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="fading kind"):
        fading_power(np.random.default_rng(0), "nakagami", np.ones(3, bool))
