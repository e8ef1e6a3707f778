"""OFDMA uplink: unit conversions, thermal noise, per-device rate and upload time.

The total uplink bandwidth ``B`` is cut into ``N_rb = floor(B / B_min)`` resource blocks
(RBs) of width ``B_min``; device ``k`` receives an integer number ``b_k`` of them, so
``B_k = b_k B_min`` and ``sum_k b_k B_min <= B`` ([P001] eq. 3-4). Its rate is the
Shannon rate of an AWGN link ([P001] eq. 5)::

    R_k(b_k) = b_k B_min log2(1 + P_k h_k / (N0 b_k B_min))

**Noise scales with the allocated bandwidth.** [P001] writes the noise as a constant
``sigma^2``; we use the thermal noise of the band the device actually occupies,
``sigma_k^2 = N0 b_k B_min``, with ``N0 = -174 dBm/Hz + noise figure``. The device's
power ``P_k`` is spread over its RBs, so its SNR falls as it gets more RBs while its rate
still grows (concavely) towards ``P_k h_k / (N0 ln 2)``. ``h_k`` is the linear power gain
(path loss, shadowing and fading combined), see :mod:`fedmoe.wireless.devices`.

Every rate in the package goes through :func:`rate_from_snr`, so the allocator, the MILP
reference and the device model compute bit-identical values.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

THERMAL_NOISE_DBM_HZ = -174.0
"""Thermal noise PSD at 290 K, ``k_B T = -174 dBm/Hz``."""

_INV_LN2 = 1.0 / math.log(2.0)


def db_to_linear(x_db: ArrayLike) -> np.ndarray:
    """``10^(x/10)``."""
    return 10.0 ** (np.asarray(x_db, dtype=np.float64) / 10.0)


def linear_to_db(x: ArrayLike) -> np.ndarray:
    """``10 log10(x)`` (``-inf`` for 0)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.asarray(x, dtype=np.float64))


def dbm_to_w(p_dbm: ArrayLike) -> np.ndarray:
    """Power in watts from dBm: ``P[W] = 10^((P[dBm] - 30) / 10)``."""
    return db_to_linear(np.asarray(p_dbm, dtype=np.float64) - 30.0)


def w_to_dbm(p_w: ArrayLike) -> np.ndarray:
    """Power in dBm from watts: ``P[dBm] = 10 log10(P[W]) + 30``."""
    return linear_to_db(p_w) + 30.0


def noise_psd_w_hz(noise_psd_dbm_hz: float = THERMAL_NOISE_DBM_HZ, noise_figure_db: float = 0.0) -> float:
    """Receiver noise PSD ``N0`` in W/Hz: ``N0[dBm/Hz] = -174 + NF[dB]``, converted to W/Hz."""
    return float(dbm_to_w(noise_psd_dbm_hz + noise_figure_db))


def noise_power_w(bandwidth_hz: ArrayLike, n0_w_hz: float) -> np.ndarray:
    """Noise power over a band: ``sigma^2 = N0 B``."""
    return n0_w_hz * np.asarray(bandwidth_hz, dtype=np.float64)


def snr_per_rb(power_w: ArrayLike, gain: ArrayLike, n0_w_hz: float, rb_hz: float) -> np.ndarray:
    """``s_k = P_k h_k / (N0 B_min)``: the SNR if the whole power went into one RB.

    With ``b`` RBs the SNR is ``s_k / b`` (noise ``N0 b B_min``).
    """
    return np.asarray(power_w, dtype=np.float64) * np.asarray(gain, dtype=np.float64) / (n0_w_hz * rb_hz)


def rate_from_snr(num_rb: ArrayLike, rb_hz: float, snr_rb: ArrayLike) -> np.ndarray:
    """Uplink rate in bit/s, ``R = b B_min log2(1 + s / b)`` with ``s`` from :func:`snr_per_rb`.

    This is [P001] eq. 5 with bandwidth-scaled noise (module docstring); ``b = 0`` gives 0.
    ``log2(1 + x)`` is evaluated as ``log1p(x) / ln 2`` to stay accurate at low SNR.
    """
    b = np.asarray(num_rb, dtype=np.float64)
    s = np.asarray(snr_rb, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = shannon_rate(b, rb_hz, s)
    return np.where(b > 0, r, 0.0)


def shannon_rate(num_rb: np.ndarray, rb_hz: float, snr_rb: np.ndarray) -> np.ndarray:
    """The formula of :func:`rate_from_snr` without checks, for ``b >= 1`` (the allocator's hot loop).

    Both evaluate the same expression in the same order, so their results are bit-identical.
    """
    return num_rb * rb_hz * np.log1p(snr_rb / num_rb) * _INV_LN2


def uplink_rate(num_rb: ArrayLike, rb_hz: float, power_w: ArrayLike, gain: ArrayLike, n0_w_hz: float) -> np.ndarray:
    """``R_k = b_k B_min log2(1 + P_k h_k / (N0 b_k B_min))`` ([P001] eq. 3-5, noise ``N0 b_k B_min``)."""
    return rate_from_snr(num_rb, rb_hz, snr_per_rb(power_w, gain, n0_w_hz, rb_hz))


def upload_time(bits: ArrayLike, rate_bps: ArrayLike) -> np.ndarray:
    """Time to send ``bits`` at ``rate``: ``bits / R``; 0 when there is nothing to send, ``inf`` at rate 0."""
    bits = np.asarray(bits, dtype=np.float64)
    rate = np.asarray(rate_bps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = bits / rate
    return np.where(bits == 0, 0.0, np.where(rate > 0, t, np.inf))
