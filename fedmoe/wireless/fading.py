"""Small-scale fading power gains ``|h|^2`` with unit mean.

* Rayleigh: ``h ~ CN(0, 1)``, so ``|h|^2 ~ Exp(1)`` (NLoS, rich scattering).
* Rician with K-factor ``K`` (linear; given in dB): ``h = sqrt(K/(K+1)) + sqrt(1/(K+1)) g``
  with ``g ~ CN(0, 1)``; ``E|h|^2 = 1`` and ``Var|h|^2 = (2K + 1) / (K + 1)^2``, which tends
  to 0 as ``K`` grows. The phase of the specular term does not change ``|h|^2``.
  TR 38.901 Table 7.5-6 gives a mean K-factor of 9 dB for UMi and UMa LoS links (the
  default of ``ChannelConfig.rician_k_db``).

The gain is the power gain of one flat-fading coefficient per device and round (block
fading); it multiplies the large-scale gain ``10^(-(PL + SF)/10)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

FadingKind = Literal["none", "rayleigh", "rician"]


def rayleigh_power(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """Rayleigh power gains ``|h|^2 ~ Exp(1)`` (mean 1)."""
    return rng.standard_exponential(size)


def rician_power(rng: np.random.Generator, k_db: ArrayLike, size: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Rician power gains with K-factor ``k_db`` (dB, broadcast against ``size``), mean 1.

    ``|h|^2 = (sqrt(K/(K+1)) + sqrt(1/(2(K+1))) x)^2 + (1/(2(K+1))) y^2`` with ``x, y ~ N(0, 1)``.
    """
    k = 10.0 ** (np.asarray(k_db, dtype=np.float64) / 10.0)
    shape = np.shape(k) if size is None else size
    los = np.sqrt(k / (k + 1.0))
    scale = np.sqrt(0.5 / (k + 1.0))
    x = rng.standard_normal(shape)
    y = rng.standard_normal(shape)
    return (los + scale * x) ** 2 + (scale * y) ** 2


def fading_power(
    rng: np.random.Generator, kind: FadingKind, los: ArrayLike, rician_k_db: float = 9.0
) -> np.ndarray:
    """Fading power gain per link: ``"none"`` -> 1; ``"rayleigh"`` -> Exp(1) for every link;
    ``"rician"`` -> Rician(K) for LoS links and Rayleigh for NLoS links (no specular path)."""
    los = np.asarray(los, dtype=bool)
    if kind == "none":
        return np.ones(los.shape)
    if kind == "rayleigh":
        return rayleigh_power(rng, los.shape)
    if kind == "rician":
        return np.where(los, rician_power(rng, rician_k_db, los.shape), rayleigh_power(rng, los.shape))
    raise ValueError(f"unknown fading kind {kind!r} (allowed: none, rayleigh, rician)")
