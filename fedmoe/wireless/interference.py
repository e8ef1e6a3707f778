"""Uplink inter-cell interference from co-channel devices of neighbouring cells (optional).

Model (``InterferenceConfig.model = "neighbours"``), ours, in the spirit of a 3GPP system-level
drop with full load and frequency reuse 1:

* ``C`` neighbouring base stations (``num_cells``, at most the 6 of the first hexagonal tier) at
  ``ISD (cos(60° c), sin(60° c))`` from ours, ``ISD = inter_site_distance_m`` (default ``√3 R``,
  hexagonal cells of circumradius ``R = cell.radius_m``).
* Every neighbouring cell is fully loaded: on the RBs of device ``k``, one of its devices transmits.
  For each device ``k`` and cell ``c`` one interferer is dropped like our devices (uniform by area in
  the annulus ``[r_min, R]`` around its base station), with power ``P_j`` from
  ``devices.tx_power_dbm`` (EIRP-capped), spread over ``n = rbs_per_interferer`` RBs, i.e. the power
  spectral density ``P_j / (n B_min)``, and an isotropic (0 dBi) antenna toward our base station
  (its own antenna points at its serving cell).
* Its channel to our base station: TR 38.901 LoS probability, path loss and shadowing for its own
  distance ([TR38901] Tables 7.4.1-1, 7.4.2-1) and the configured fading.
* Our base station receives it through device ``k``'s beam ``w_k``: a LoS interferer with the beam's
  pattern in its direction, ``N |w_kᴴ a(u_j)|²``; an NLoS one (rich scattering) with its mean, 1 (for
  ``h ~ CN(0, I_N)``, ``E|w_kᴴ h|² = ‖w_k‖² = 1``). Without array gain (``bs_array_gain = "none"``)
  every interferer gets 1.

The result is the interference power spectral density ``I0_k`` (W/Hz) at the combiner output of
device ``k``. Like the thermal noise it is the same on every RB, so the SINR on ``b`` RBs is
``P_k h_k / ((N0 + I0_k) b B_min)``; :mod:`fedmoe.wireless.devices` folds it into the effective
gain ``h_k N0 / (N0 + I0_k)`` so that every rate in the package becomes a SINR rate.
"""

from __future__ import annotations

import numpy as np

from fedmoe.config import WirelessConfig
from fedmoe.wireless import fading as _fading
from fedmoe.wireless import pathloss as _pl
from fedmoe.wireless.antenna import dft_codebook, ula_steering
from fedmoe.wireless.link_budget import direction_cosine, eirp_capped_power_dbm
from fedmoe.wireless.ofdma import dbm_to_w


def neighbour_sites(num_cells: int, isd_m: float) -> np.ndarray:
    """Positions ``(C, 2)`` of the neighbouring base stations: ``ISD (cos 60°c, sin 60°c)``, ``c = 0..C-1``."""
    ang = np.deg2rad(60.0 * np.arange(num_cells))
    return isd_m * np.stack([np.cos(ang), np.sin(ang)], axis=-1)


def inter_site_distance(cfg: WirelessConfig) -> float:
    """``interference.inter_site_distance_m``, by default ``√3 R`` (hexagonal cells of circumradius ``R``)."""
    isd = cfg.interference.inter_site_distance_m
    return float(np.sqrt(3.0) * cfg.cell.radius_m if isd is None else isd)


def neighbour_interference_psd(cfg: WirelessConfig, rng: np.random.Generator, beams: np.ndarray) -> np.ndarray:
    """Interference PSD ``I0_k`` in W/Hz for devices received with the codebook beams ``beams`` (module docstring)."""
    ch, icfg = cfg.channel, cfg.interference
    k = len(beams)
    sites = neighbour_sites(icfg.num_cells, inter_site_distance(cfg))
    shape = (k, icfg.num_cells)
    r = np.sqrt(rng.uniform(cfg.cell.min_distance_m**2, cfg.cell.radius_m**2, shape))
    psi = rng.uniform(0.0, 2.0 * np.pi, shape)
    x = sites[:, 0] + r * np.cos(psi)
    y = sites[:, 1] + r * np.sin(psi)
    d2d = np.maximum(np.hypot(x, y), 1.0)
    los = rng.random(shape) < _pl.los_probability(ch.scenario, d2d, ch.ut_height_m)
    pl = _pl.pathloss_db(ch.scenario, d2d, ch.bs_height_m, ch.ut_height_m, ch.carrier_ghz, los)
    sf = _pl.sample_shadowing_db(rng, ch.scenario, los) if ch.shadowing else 0.0
    g = _fading.fading_power(rng, ch.fading, los, ch.rician_k_db)
    p_dbm = eirp_capped_power_dbm(rng.uniform(*cfg.devices.tx_power_dbm, shape),
                                  ch.ut_antenna_gain_dbi, ch.ut_max_eirp_dbm)
    psd = dbm_to_w(p_dbm) / (icfg.rbs_per_interferer * cfg.uplink.resource_block_hz)
    if ch.bs_array_gain == "none":
        pattern = np.ones(shape)
    else:
        u = direction_cosine(np.arctan2(y, x), d2d, ch.bs_height_m, ch.ut_height_m)
        w = dft_codebook(ch.num_antennas, ch.codebook_size)[np.asarray(beams, dtype=np.int64)]  # (K, N)
        a = ula_steering(ch.num_antennas, u)  # (K, C, N)
        on_beam = ch.num_antennas * np.abs(np.einsum("kcn,kn->kc", a, w.conj())) ** 2
        pattern = np.where(los, on_beam, 1.0)
    return np.sum(psd * 10.0 ** (-(pl + sf) / 10.0) * g * pattern, axis=1)
