"""Uplink link budget: receive beamforming gain at the base station, device antenna gain and EIRP cap.

Received SNR of device ``k`` over a band ``B`` (all terms in dB)::

    SNR_k = P_k + G_UT − PL_k − SF_k + 10 log10 |g_k|² + G_BS,k − (N0 + NF + 10 log10 B)

* ``P_k``: conducted transmit power, capped so that the EIRP stays within the limit,
  ``P_k + G_UT ≤ EIRP_max`` (:func:`eirp_capped_power_dbm`; [TS38101-2] Table 6.2.1.3-1 gives
  43 dBm maximum EIRP for an FR2 power-class-3 handset).
* ``G_UT``: device antenna gain toward the base station (``ChannelConfig.ut_antenna_gain_dbi``).
* ``PL``, ``SF``: TR 38.901 path loss and shadowing (:mod:`fedmoe.wireless.pathloss`, [TR38901]
  Table 7.4.1-1); ``|g|²`` the small-scale fading (:mod:`fedmoe.wireless.fading`).
* ``G_BS``: receive beamforming gain of the base station's ``N``-element ULA combining with the best
  beam of its DFT codebook (:mod:`fedmoe.wireless.antenna`),
  ``G_BS = N max_b |w_bᴴ h|² / ‖h‖²`` (the beam the base station would pick for this device;
  ``N`` when a beam points exactly at a single path, about 3.9 dB less between two beams of an
  ``N = B`` codebook):

  - **LoS**: one path from the device's direction, ``h = a(u_k)`` with
    ``u_k = cos(el_k) sin(az_k)`` (azimuth from broadside, elevation from the heights and the
    2-D distance; isotropic elements, so the array does not tell front from back).
  - **NLoS** (our model): rich scattering, ``h ~ CN(0, I_N)`` drawn once per device. The best beam
    captures the largest of the ``B`` fractions ``|w_bᴴ h|²/‖h‖²``; for ``B = N`` these fractions are
    a uniform point of the simplex, so ``E[G_BS] = H_N = Σ_{n≤N} 1/n`` (:func:`mean_scattered_gain`),
    4.74 (6.8 dB) for ``N = 64`` instead of 18.1 dB. This is pessimistic for mmWave NLoS links,
    which often keep a few strong clusters.

The gain is large-scale: drawn with the drop and kept for the run (the beam follows the device's
mean channel), while the fading power ``|g|²`` is redrawn per round on top of it.

:func:`link_budget_rows` evaluates the budget on a grid of distances (median path loss, no
shadowing or fading, mean ``G_BS`` over directions) for the table of ``docs/wireless.md``; the
[Akdeniz14] column is the 28 GHz New York measurement fit that the TR 38.901 numbers are
compared with in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fedmoe.config import WirelessConfig
from fedmoe.wireless import pathloss as _pl
from fedmoe.wireless.antenna import beam_gains, dft_codebook, ula_steering
from fedmoe.wireless.ofdma import linear_to_db

AKDENIZ14_28GHZ = {True: (61.4, 2.0, 5.8), False: (72.0, 2.92, 8.7)}
"""[Akdeniz14] Table I, 28 GHz: ``PL(d) = α + 10 β log10 d`` with (α dB, β, σ dB) by LoS state."""

TABLE_DISTANCES_M = (10.0, 25.0, 50.0, 100.0, 150.0, 200.0, 250.0)
"""Distances (2-D, m) of the link-budget table of ``docs/wireless.md``."""


def direction_cosine(azimuth_rad: ArrayLike, d2d: ArrayLike, h_bs: float, h_ut: float) -> np.ndarray:
    """``u = cos(el) sin(az)`` with elevation ``el = arctan((h_BS − h_UT) / d_2D)`` (ULA axis horizontal)."""
    el = np.arctan2(h_bs - h_ut, np.asarray(d2d, dtype=np.float64))
    return np.cos(el) * np.sin(np.asarray(azimuth_rad, dtype=np.float64))


def best_beam_gain(channel: ArrayLike, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N max_b |w_bᴴ h|² / ‖h‖², argmax_b)`` for channels of shape (..., N): the array gain of the best beam."""
    h = np.asarray(channel)
    n = h.shape[-1]
    g = beam_gains(h, codebook)
    beam = np.argmax(g, axis=-1)
    best = np.take_along_axis(g, beam[..., None], axis=-1)[..., 0]
    return n * best / np.sum(np.abs(h) ** 2, axis=-1), beam


def los_gain(u: ArrayLike, num_antennas: int, num_beams: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-beam gain and beam for a single path from direction ``u``: ``N max_b |w_bᴴ a(u)|²``."""
    return best_beam_gain(ula_steering(num_antennas, u), dft_codebook(num_antennas, num_beams))


def scattered_gain(rng: np.random.Generator, num_links: int, num_antennas: int,
                   num_beams: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-beam gain and beam of rich-scattering channels ``h ~ CN(0, I_N)``, one per link (NLoS model)."""
    h = (rng.standard_normal((num_links, num_antennas)) + 1j * rng.standard_normal((num_links, num_antennas)))
    return best_beam_gain(h / np.sqrt(2.0), dft_codebook(num_antennas, num_beams))


def bs_array_gain(rng: np.random.Generator, u: ArrayLike, los: ArrayLike, num_antennas: int,
                  num_beams: int) -> tuple[np.ndarray, np.ndarray]:
    """``G_BS`` and the chosen beam per device: :func:`los_gain` for LoS links, :func:`scattered_gain` for NLoS."""
    los = np.asarray(los, dtype=bool)
    g_los, b_los = los_gain(u, num_antennas, num_beams)
    g_nlos, b_nlos = scattered_gain(rng, los.size, num_antennas, num_beams)
    return np.where(los, g_los, g_nlos), np.where(los, b_los, b_nlos)


def mean_scattered_gain(num_antennas: int, num_beams: int, samples: int = 20_000) -> float:
    """``E[G_BS]`` under rich scattering: the harmonic number ``H_N`` when ``B = N`` (orthogonal DFT
    beams, module docstring); otherwise a Monte Carlo mean (seed 0, ``samples`` channels)."""
    if num_beams == num_antennas:
        return float(np.sum(1.0 / np.arange(1, num_antennas + 1)))
    return float(scattered_gain(np.random.default_rng(0), samples, num_antennas, num_beams)[0].mean())


def mean_los_gain(d2d: float, h_bs: float, h_ut: float, num_antennas: int, num_beams: int,
                  num_azimuths: int = 3600) -> float:
    """Mean of :func:`los_gain` over azimuths uniform in ``[0, 2π)`` (midpoint grid) at distance ``d2d``."""
    az = 2.0 * np.pi * (np.arange(num_azimuths) + 0.5) / num_azimuths
    return float(los_gain(direction_cosine(az, d2d, h_bs, h_ut), num_antennas, num_beams)[0].mean())


def eirp_capped_power_dbm(power_dbm: ArrayLike, antenna_gain_dbi: float, max_eirp_dbm: float) -> np.ndarray:
    """Conducted power with the EIRP cap: ``min(P, EIRP_max − G_UT)`` in dBm."""
    return np.minimum(np.asarray(power_dbm, dtype=np.float64), max_eirp_dbm - antenna_gain_dbi)


def akdeniz_pathloss_db(d: ArrayLike, los: bool) -> np.ndarray:
    """[Akdeniz14] Table I, 28 GHz: ``α + 10 β log10 d`` (``d`` in m)."""
    alpha, beta, _ = AKDENIZ14_28GHZ[bool(los)]
    return alpha + 10.0 * beta * np.log10(np.asarray(d, dtype=np.float64))


@dataclass(frozen=True)
class LinkBudgetRow:
    """One row of the link-budget table (dB, dBm, bit/s)."""

    distance_m: float
    los: bool
    pathloss_db: float
    reference_pathloss_db: float
    bs_gain_db: float
    snr_db: float
    rate_bps: float


def link_budget_rows(cfg: WirelessConfig, distances: ArrayLike = TABLE_DISTANCES_M) -> list[LinkBudgetRow]:
    """The link budget (module docstring) on ``distances`` for LoS and NLoS.

    Median channel (no shadowing, no fading); the device's highest power
    (``devices.tx_power_dbm[1]``, EIRP-capped) over the whole uplink band ``N_rb B_min``;
    ``G_BS`` is :func:`mean_los_gain` (LoS) or :func:`mean_scattered_gain` (NLoS), 0 dB when
    ``channel.bs_array_gain = "none"``; no interference. Rate ``B log2(1 + SNR)``.
    """
    ch, up = cfg.channel, cfg.uplink
    band = up.num_resource_blocks * up.resource_block_hz
    p_dbm = float(eirp_capped_power_dbm(cfg.devices.tx_power_dbm[1], ch.ut_antenna_gain_dbi, ch.ut_max_eirp_dbm))
    noise_dbm = ch.noise_psd_dbm_hz + ch.noise_figure_db + 10.0 * np.log10(band)
    nlos_gain = mean_scattered_gain(ch.num_antennas, ch.codebook_size)
    rows = []
    for d in np.asarray(distances, dtype=np.float64):
        for los in (True, False):
            pl = float(_pl.pathloss_db(ch.scenario, d, ch.bs_height_m, ch.ut_height_m, ch.carrier_ghz, los))
            if ch.bs_array_gain == "none":
                g = 1.0
            elif los:
                g = mean_los_gain(d, ch.bs_height_m, ch.ut_height_m, ch.num_antennas, ch.codebook_size)
            else:
                g = nlos_gain
            g_db = float(linear_to_db(g))
            snr_db = p_dbm + ch.ut_antenna_gain_dbi - pl + g_db - noise_dbm
            rate = band * np.log2(1.0 + 10.0 ** (snr_db / 10.0))
            rows.append(LinkBudgetRow(float(d), los, pl, float(akdeniz_pathloss_db(d, los)), g_db,
                                      float(snr_db), float(rate)))
    return rows


def format_link_budget(rows: list[LinkBudgetRow]) -> str:
    """The rows as a markdown table (the one in ``docs/wireless.md``)."""
    lines = ["| d (m) | link | PL TR 38.901 (dB) | PL [Akdeniz14] (dB) | G_BS (dB) | SNR (dB) | rate (Mbit/s) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.distance_m:g} | {'LoS' if r.los else 'NLoS'} | {r.pathloss_db:.1f} | "
                     f"{r.reference_pathloss_db:.1f} | {r.bs_gain_db:.1f} | {r.snr_db:.1f} | {r.rate_bps / 1e6:.2f} |")
    return "\n".join(lines)
