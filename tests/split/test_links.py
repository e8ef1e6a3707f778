"""Feature link models: the empirical distortion matches the stated variance."""

from __future__ import annotations

import math

import pytest
import torch

from fedmoe.split.links import LINKS, AnalogLink, DigitalLink, make_link, qam_bit_error_rate
from fedmoe.wireless.ofdma import db_to_linear


def test_analog_noise_variance_is_sigma2_over_p_h2():
    # σ² = 1e-3 W, p = 0.5 W, |h|² = 0.02: σ²/(p|h|²) = 0.1, i.e. SNR = 10 on unit-power features
    sigma2, p, h2 = 1e-3, 0.5, 0.02
    snr = torch.tensor(p * h2 / sigma2)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 64, generator=g) * 3.0  # entry power 9
    err = AnalogLink().corrupt(z, snr, generator=g) - z
    power = z.pow(2).mean(dim=1, keepdim=True)
    empirical = (err.pow(2) / power).mean()
    assert float(empirical) == pytest.approx(sigma2 / (p * h2), rel=0.02)
    assert float(AnalogLink().distortion(snr)) == pytest.approx(0.1)
    assert abs(float(err.mean())) < 0.01  # zero-mean noise


def test_analog_snr_per_vector_broadcasts():
    z = torch.ones(3, 2, 1000)
    snr = torch.tensor([[1.0, 100.0]] * 3)
    err = AnalogLink().corrupt(z, snr, torch.Generator().manual_seed(1)) - z
    var = err.pow(2).mean(dim=-1)
    assert torch.allclose(var, 1 / snr, rtol=0.15)


def test_digital_distortion_matches_quantisation_and_bit_flips():
    # uniform entries exactly filling the quantiser range: codes uniform, the formula is exact
    # (every row: the same evenly spaced values in (−1, 1), shuffled, and a range of exactly [−1, 1])
    g = torch.Generator().manual_seed(2)
    n = 2048  # 32 values per quantiser cell: the mean square error is Δ²/12 within 0.1%
    row = torch.linspace(-1 + 1 / n, 1 - 1 / n, n)
    z = torch.stack([row[torch.randperm(n, generator=g)] for _ in range(300)])
    link = DigitalLink(bits=6, clip=float(1 / row.pow(2).mean().sqrt()), bits_per_symbol=4)
    for snr_db in (8.0, 12.0, 40.0):
        snr = db_to_linear(snr_db)
        err = link.corrupt(z, snr, generator=g) - z
        empirical = float((err.pow(2).mean(dim=1) / z.pow(2).mean(dim=1)).mean())
        assert empirical == pytest.approx(float(link.distortion(snr)), rel=0.05), snr_db
    # at high SNR only the quantiser is left: Δ²/12 with Δ = 2c/2^b
    assert float(link.distortion(db_to_linear(40.0))) == pytest.approx((2 * link.clip / 64) ** 2 / 12, rel=1e-6)


def test_qam_ber_values():
    # BPSK at Eb/N0 = SNR = 4 (6 dB): Q(√8) = 2.339e-3; 16-QAM at 20 dB: 0.75·Q(√(300/15))
    assert float(qam_bit_error_rate(torch.tensor(4.0), 1)) == pytest.approx(2.339e-3, rel=1e-3)
    q = 0.5 * math.erfc(math.sqrt(20.0) / math.sqrt(2))
    assert float(qam_bit_error_rate(torch.tensor(100.0), 4)) == pytest.approx(0.75 * q, rel=1e-6)
    assert float(qam_bit_error_rate(torch.tensor(0.0), 4)) <= 0.5


def test_airtime_and_registry():
    assert AnalogLink().airtime_s(64, 1e6) == pytest.approx(32e-6)
    assert DigitalLink(bits=8, bits_per_symbol=4).airtime_s(64, 1e6) == pytest.approx((64 * 8 + 32) / 4e6)
    assert set(LINKS.names()) >= {"analog", "digital"}
    assert make_link("digital", bits=4).bits == 4


@pytest.mark.parametrize("kwargs,match", [({"bits": 0}, "bits"), ({"clip": 0.0}, "clip"),
                                          ({"bits_per_symbol": 3}, "bits_per_symbol")])
def test_bad_digital_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitalLink(**kwargs)


def test_negative_or_db_snr_is_refused():
    with pytest.raises(ValueError, match="linear"):
        AnalogLink().corrupt(torch.ones(2, 4), torch.tensor(-3.0))
