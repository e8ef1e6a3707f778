"""Geometric mmWave channel and constant-modulus analog beamforming of the V2I model ([P002] eq. 1, 2, 8–10).

* Channel (eq. 2): ``h_k = Σ_{l=1}^{L_p} α_{l,k} e^{−j2π f_c τ_{l,k}} a(θ_{l,k})`` with a
  half-wavelength ULA (``a(θ)_m = e^{jπ m sin θ}``, :func:`fedmoe.wireless.antenna.ula_steering`
  scaled to ``||a||² = M``). Path 1 is the line of sight at the vehicle's angle and distance;
  paths 2…L_p leave within a 10° cluster around it, travel 0–30 m further and share
  ``1/(K_R + 1)`` of the power (Rician factor ``K_R``, ``v2i.rician_k_db``). Amplitudes follow
  free space, ``|α| = λ / (4π d)``.
* CSI error (eq. 8): the true channel is ``h = ĥ + Δh`` where ``ĥ`` is the geometric channel
  that sensing tracks and ``Δh ~ CN(0, ρ P_misa ||ĥ||² / M · I)``, so that
  ``E||Δh||² = ρ P_misa ||ĥ||²`` (ρ relative to the channel's energy, ours: [P002] gives ρ no unit).
* Beamformer (eq. 10): ``v_{k,m} = e^{jΦ_{k,m}} / √M`` meets the constant modulus (9b) by
  construction; each vehicle gets ``p_k = P_max / K`` so that ``Σ_k p_k ||v_k||² = P_max`` (9c).
  Eq. 9b and 9c together allow no more: with ``|v_{k,m}| = 1/√M`` every ``||v_k||² = 1``, and
  ``Σ_k ||v_k||² = K`` exceeds ``P_max`` = 1 W for ``K ≥ 2``, so the power is a separate amplitude.
* SINR (eq. 1): ``p_k |h_kᴴ v_k|² / (Σ_{j≠k} p_j |h_kᴴ v_j|² + σ²)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedmoe.config import V2IConfig
from fedmoe.wireless.antenna import ula_steering

SPEED_OF_LIGHT = 299_792_458.0
CLUSTER_SPREAD_RAD = math.radians(10.0)
EXCESS_PATH_M = 30.0


def wavelength_m(cfg: V2IConfig) -> float:
    return SPEED_OF_LIGHT / (cfg.carrier_ghz * 1e9)


def geometric_channel(cfg: V2IConfig, angle: np.ndarray, distance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``h`` of eq. 2 for vehicles at ``angle`` (rad from broadside) and ``distance`` (m); shape
    ``angle.shape + (M,)``."""
    angle, distance = np.asarray(angle, dtype=np.float64), np.asarray(distance, dtype=np.float64)
    lam = wavelength_m(cfg)
    lp = cfg.num_paths
    k_r = 10 ** (cfg.rician_k_db / 10)
    shape = angle.shape + (lp,)
    theta = np.broadcast_to(angle[..., None], shape).copy()
    length = np.broadcast_to(distance[..., None], shape).copy()
    share = np.ones(shape)
    gain = np.ones(shape, dtype=np.complex128)
    if lp > 1:
        theta[..., 1:] += rng.normal(0.0, CLUSTER_SPREAD_RAD, size=angle.shape + (lp - 1,))
        length[..., 1:] += rng.uniform(0.0, EXCESS_PATH_M, size=angle.shape + (lp - 1,))
        share[..., 0] = k_r / (k_r + 1)
        share[..., 1:] = 1 / ((k_r + 1) * (lp - 1))
        gain[..., 1:] = (rng.normal(size=angle.shape + (lp - 1,))
                         + 1j * rng.normal(size=angle.shape + (lp - 1,))) / math.sqrt(2)
    alpha = lam / (4 * math.pi * length) * np.sqrt(share) * gain
    delay_phase = np.exp(-2j * math.pi * (cfg.carrier_ghz * 1e9) * (length / SPEED_OF_LIGHT))
    steering = (ula_steering(cfg.num_antennas, np.sin(np.clip(theta, -math.pi / 2, math.pi / 2)))
                * math.sqrt(cfg.num_antennas))
    return np.einsum("...l,...lm->...m", alpha * delay_phase, steering)


def csi_error(h_hat: np.ndarray, p_misa: np.ndarray, rho: float, normal: np.ndarray) -> np.ndarray:
    """``Δh`` of eq. 8 from standard complex normal draws ``normal`` (same shape as ``h_hat``)."""
    m = h_hat.shape[-1]
    energy = (np.abs(h_hat) ** 2).sum(-1, keepdims=True)
    return np.sqrt(rho * np.asarray(p_misa)[..., None] * energy / m) * normal


def beamformer(phases: torch.Tensor) -> torch.Tensor:
    """``v = e^{jΦ} / √M`` (eq. 10) from real phases ``(..., M)``; every entry has modulus ``1/√M`` (9b)."""
    m = phases.shape[-1]
    return torch.polar(torch.full_like(phases, 1.0 / math.sqrt(m)), phases)


def per_vehicle_power_w(cfg: V2IConfig) -> float:
    """``p_k = P_max / K``: the budget (9c) shared equally."""
    return 10 ** ((cfg.p_max_dbm - 30) / 10) / cfg.num_vehicles


def normalised_gain(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``|hᴴ v|² / ||h||²`` ∈ [0, 1] for unit-norm ``v`` (the beamforming gain relative to perfect CSI)."""
    return (torch.sum(h.conj() * v, dim=-1).abs() ** 2) / (h.abs() ** 2).sum(-1).clamp_min(1e-30)


def sinr_db(cfg: V2IConfig, h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-vehicle SINR of eq. 1 in dB for channels ``h`` and beams ``v`` of shape ``(..., K, M)``."""
    p = per_vehicle_power_w(cfg)
    cross = np.abs(np.einsum("...km,...jm->...kj", h.conj(), v)) ** 2  # |h_kᴴ v_j|²
    signal = np.diagonal(cross, axis1=-2, axis2=-1)
    interference = cross.sum(-1) - signal
    noise = 10 ** ((cfg.noise_dbm - 30) / 10)
    return 10 * np.log10(p * signal / (p * interference + noise))


def steering_phases(cfg: V2IConfig, angle: np.ndarray) -> np.ndarray:
    """Phases of the beam steered to ``angle``: ``Φ_m = π m sin θ`` (the radar-pointed reference beam)."""
    return math.pi * np.sin(np.asarray(angle))[..., None] * np.arange(cfg.num_antennas)
