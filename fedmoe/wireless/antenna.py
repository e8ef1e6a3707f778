"""Uniform linear array (ULA) steering vectors, DFT beam codebooks and beamforming gain.

Conventions (see WIRELESS notes in docs/wireless.md):

* half-wavelength element spacing, elements n = 0..N-1 along the array axis;
* ``u`` is the direction cosine with respect to the array broadside, ``u = sin(theta)``
  for a direction in the array's plane (``u = cos(el) sin(az)`` in 3-D);
* steering vector  a(u)_n = exp(j pi n u) / sqrt(N);
* DFT codebook     w_b = a(u_b),  u_b = -1 + (2b + 1) / B,  b = 0..B-1  (uniform in ``u``);
* beamforming gain G_b(h) = |w_b^H h|^2; the beam label is argmax_b G_b(h).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def ula_steering(num_antennas: int, u: ArrayLike) -> np.ndarray:
    """Steering vectors a(u) of an N-element half-wavelength ULA; shape ``u.shape + (N,)``, unit norm."""
    if num_antennas < 1:
        raise ValueError(f"num_antennas must be >= 1, got {num_antennas}")
    u = np.asarray(u, dtype=np.float64)
    n = np.arange(num_antennas, dtype=np.float64)
    return np.exp(1j * np.pi * u[..., None] * n) / np.sqrt(num_antennas)


def codebook_directions(num_beams: int) -> np.ndarray:
    """Beam pointing directions u_b = -1 + (2b+1)/B of a B-beam DFT codebook."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    return -1.0 + (2.0 * np.arange(num_beams) + 1.0) / num_beams


def dft_codebook(num_antennas: int, num_beams: int) -> np.ndarray:
    """DFT beam codebook W of shape (B, N); row b is w_b = a(u_b)."""
    return ula_steering(num_antennas, codebook_directions(num_beams))


def beam_gains(channel: ArrayLike, codebook: np.ndarray) -> np.ndarray:
    """Beamforming gains |w_b^H h|^2 for channels ``h`` of shape (..., N); returns (..., B)."""
    h = np.asarray(channel)
    if h.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"channel has {h.shape[-1]} antennas but the codebook has {codebook.shape[-1]}")
    return np.abs(h @ codebook.conj().T) ** 2


def direction_to_beam(u: ArrayLike, num_beams: int) -> np.ndarray:
    """Codebook beam whose pointing direction is nearest to ``u`` (the LoS beam of a single path)."""
    u = np.clip(np.asarray(u, dtype=np.float64), -1.0, 1.0 - 1e-12)
    return np.floor((u + 1.0) * num_beams / 2.0).astype(np.int64)
