"""Geometric multipath channel of the synthetic scene and the labels derived from it.

Paths (per sample): the direct path BS <- user (index 0) and one single-bounce path
BS <- scatterer s <- user per reflector (indices 1..S). Each path's power gain is

    g_p [dB] = -PL_LoS(d_p) - L_refl,p - sum over its blocked legs of L_block - SF,

where ``PL_LoS`` is the 3GPP TR 38.901 LoS path loss (Table 7.4.1-1) evaluated at the
unfolded path length d_p (the image-method approximation for a specular reflection),
``L_refl,p`` the reflector's loss (0 for the direct path), ``L_block`` a penetration /
diffraction loss drawn from ``SceneConfig.blockage_loss_db`` for every leg that crosses a
large vehicle, and ``SF`` the large-scale shadowing of TR 38.901 (LoS or NLoS sigma by
whether the direct path is blocked), common to all paths of the sample.

The BS channel is the narrowband geometric sum (as in [P002] eq. 2, with one ray per
path)

    h = sum_p sqrt(g_p) exp(j phi_p) a(u_p),   phi_p ~ U[0, 2 pi),

with ``a`` the ULA steering vector and ``u_p`` the arrival direction cosine along the
array axis. Labels: best beam ``argmax_b |w_b^H h|^2`` over the DFT codebook, and the
omnidirectional path loss ``-10 log10(sum_p g_p)`` in dB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmoe.config import ChannelConfig, SceneConfig
from fedmoe.data.scene import Scene, segments_blocked
from fedmoe.wireless.antenna import beam_gains, dft_codebook, ula_steering
from fedmoe.wireless.pathloss import pathloss_los_db, sample_shadowing_db


@dataclass
class Multipath:
    """Per-sample multipath description; P = 1 + S paths, path 0 is the direct one.

    gain_db : (N, P) path power gains (dB, negative); u : (N, P) arrival direction cosines;
    phase : (N, P); leg_blocked : (N, P) bool, any leg of the path blocked;
    h : (N, M) complex64 BS array channel; direct_blocked : (N,) bool.
    """

    gain_db: np.ndarray
    u: np.ndarray
    phase: np.ndarray
    leg_blocked: np.ndarray
    h: np.ndarray

    @property
    def direct_blocked(self) -> np.ndarray:
        return self.leg_blocked[:, 0]

    @property
    def pathloss_db(self) -> np.ndarray:
        """Omnidirectional multipath path loss -10 log10(sum_p g_p), dB."""
        return -10.0 * np.log10(np.sum(10.0 ** (self.gain_db / 10.0), axis=1))


def direction_cosine(points: np.ndarray, bs: np.ndarray) -> np.ndarray:
    """Direction cosine along the array (x) axis of ``points`` (..., 3) seen from ``bs``."""
    d = points - bs
    return d[..., 0] / np.linalg.norm(d, axis=-1)


def compute_multipath(scene: Scene, scene_cfg: SceneConfig, channel: ChannelConfig,
                      rng: np.random.Generator) -> Multipath:
    """Paths, array channel and blockage of every sample of ``scene``."""
    n, s = len(scene), scene.sc_pos.shape[1]
    user = scene.user_pos
    bs = scene.bs

    # Direct path and both legs of each reflected path; (N, P, 3) arrival points.
    arrival = np.concatenate([user[:, None, :], scene.sc_pos], axis=1)
    leg1_blocked = segments_blocked(np.broadcast_to(bs, arrival.shape), arrival, scene.blk_lo, scene.blk_hi)
    leg2_blocked = np.zeros_like(leg1_blocked)
    if s:
        leg2_blocked[:, 1:] = segments_blocked(scene.sc_pos, np.broadcast_to(user[:, None, :], scene.sc_pos.shape),
                                               scene.blk_lo, scene.blk_hi)
    length = np.linalg.norm(arrival - bs, axis=-1)
    length[:, 1:] += np.linalg.norm(user[:, None, :] - scene.sc_pos, axis=-1)

    h_ut = np.broadcast_to(user[:, 2:3], length.shape)
    d2d = np.sqrt(np.maximum(length**2 - (bs[2] - h_ut) ** 2, 1.0))
    pl = pathloss_los_db(channel.scenario, d2d, bs[2], h_ut, channel.carrier_ghz)

    refl = np.concatenate([np.zeros((n, 1)), scene.sc_loss_db], axis=1)
    block = (leg1_blocked * rng.uniform(*scene_cfg.blockage_loss_db, leg1_blocked.shape)
             + leg2_blocked * rng.uniform(*scene_cfg.blockage_loss_db, leg2_blocked.shape))
    gain_db = -(pl + refl + block)
    direct_blocked = leg1_blocked[:, 0]
    if channel.shadowing:
        gain_db -= sample_shadowing_db(rng, channel.scenario, ~direct_blocked)[:, None]

    u = direction_cosine(arrival, bs)
    phase = rng.uniform(0.0, 2.0 * np.pi, u.shape)
    amp = np.sqrt(10.0 ** (gain_db / 10.0)) * np.exp(1j * phase)
    h = np.einsum("np,npm->nm", amp, ula_steering(channel.num_antennas, u)).astype(np.complex64)
    return Multipath(gain_db, u, phase, leg1_blocked | leg2_blocked, h)


BEAM_POWER_FLOOR_DB = -60.0
"""Lowest relative beam power kept in the ``beam_power_db`` label (deeper nulls are clipped)."""


def beam_power_db(mp: Multipath, channel: ChannelConfig) -> np.ndarray:
    """Received power of every codebook beam relative to the best one, dB (N, B) float32, ``<= 0``.

    ``P_b = 10 log10(|w_b^H h|^2 / max_b' |w_b'^H h|^2)``, clipped below at
    :data:`BEAM_POWER_FLOOR_DB`. It scores a beam prediction by the power it loses (the
    *power ratio*, :mod:`fedmoe.models.scores`) and gives the soft training targets of
    the ``soft_power`` beam objective (:func:`fedmoe.models.heads.beam_loss`).
    """
    return relative_power_db(_codebook_gains(mp, channel))


def relative_power_db(gains: np.ndarray) -> np.ndarray:
    """``10 log10(g_b / max_b g_b)`` per row of linear powers ``gains`` (N, B), clipped at the floor; float32."""
    g = np.asarray(gains, dtype=np.float64)
    top = np.max(g, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 10.0 * np.log10(np.where(top > 0, g / np.where(top > 0, top, 1.0), 1.0))
    return np.maximum(np.nan_to_num(rel, nan=BEAM_POWER_FLOOR_DB, neginf=BEAM_POWER_FLOOR_DB),
                      BEAM_POWER_FLOOR_DB).astype(np.float32)


def _codebook_gains(mp: Multipath, channel: ChannelConfig) -> np.ndarray:
    return beam_gains(mp.h, dft_codebook(channel.num_antennas, channel.codebook_size).astype(np.complex64))
