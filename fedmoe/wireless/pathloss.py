"""Large-scale channel of 3GPP TR 38.901 (V17): path loss, LoS probability, shadowing.

Scenarios ``"umi"`` (UMi-Street Canyon) and ``"uma"``; distances in metres, carrier
``fc_ghz`` in GHz, heights in metres. All functions broadcast over numpy arrays.

* LoS probability: TR 38.901 Table 7.4.2-1.
* Path loss and shadowing std: TR 38.901 Table 7.4.1-1, with the breakpoint distance
  ``d'_BP = 4 h'_BS h'_UT f_c / c`` of note 1 (effective heights ``h' = h - h_E``).
  For UMa, ``h_E`` is random in the standard (1 m with probability ``1 / (1 + C(d, h_UT))``);
  we use its most likely value ``h_E = 1 m`` for both scenarios, as most simulators do
  for ``h_UT`` below 13 m, where ``C = 0`` and the choice is exact.

The NLoS formulas take ``max(PL_LoS, PL'_NLoS)`` as the standard prescribes.
"""

from __future__ import annotations

import numpy as np

SPEED_OF_LIGHT = 299_792_458.0
SCENARIOS = ("umi", "uma")

SHADOWING_STD_DB = {("umi", True): 4.0, ("umi", False): 7.82, ("uma", True): 4.0, ("uma", False): 6.0}
"""σ_SF in dB by (scenario, LoS), TR 38.901 Table 7.4.1-1."""


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (allowed: {', '.join(SCENARIOS)})")


def distance_3d(d2d, h_bs, h_ut) -> np.ndarray:
    """``d_3D = sqrt(d_2D² + (h_BS − h_UT)²)``."""
    return np.sqrt(np.asarray(d2d, float) ** 2 + (np.asarray(h_bs, float) - np.asarray(h_ut, float)) ** 2)


def breakpoint_distance(h_bs, h_ut, fc_ghz, h_e: float = 1.0) -> np.ndarray:
    """``d'_BP = 4 (h_BS − h_E)(h_UT − h_E) f_c / c`` (TR 38.901 Table 7.4.1-1, note 1)."""
    return 4.0 * (np.asarray(h_bs, float) - h_e) * (np.asarray(h_ut, float) - h_e) * fc_ghz * 1e9 / SPEED_OF_LIGHT


def los_probability(scenario: str, d2d, h_ut=1.5) -> np.ndarray:
    """LoS probability, TR 38.901 Table 7.4.2-1 (outdoor users).

    UMi: 1 for ``d ≤ 18``, else ``18/d + exp(−d/36)(1 − 18/d)``.
    UMa: 1 for ``d ≤ 18``, else ``[18/d + exp(−d/63)(1 − 18/d)] [1 + C'(h_UT) 5/4 (d/100)³ exp(−d/150)]``
    with ``C' = 0`` for ``h_UT ≤ 13`` and ``((h_UT − 13)/10)^1.5`` above.
    """
    _check_scenario(scenario)
    d = np.maximum(np.asarray(d2d, float), 1e-9)
    h_ut = np.asarray(h_ut, float)
    far = d > 18.0
    if scenario == "umi":
        p = 18.0 / d + np.exp(-d / 36.0) * (1.0 - 18.0 / d)
    else:
        c = np.where(h_ut <= 13.0, 0.0, (np.maximum(h_ut, 13.0) - 13.0) / 10.0) ** 1.5
        p = (18.0 / d + np.exp(-d / 63.0) * (1.0 - 18.0 / d)) * (1.0 + c * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0))
    return np.where(far, p, 1.0)


def pathloss_los_db(scenario: str, d2d, h_bs, h_ut, fc_ghz) -> np.ndarray:
    """LoS path loss in dB, TR 38.901 Table 7.4.1-1.

    UMi: ``PL1 = 32.4 + 21 log10 d3D + 20 log10 fc`` up to ``d'_BP``, then
    ``PL2 = 32.4 + 40 log10 d3D + 20 log10 fc − 9.5 log10(d'_BP² + (h_BS − h_UT)²)``.
    UMa: ``PL1 = 28 + 22 log10 d3D + 20 log10 fc``, then
    ``PL2 = 28 + 40 log10 d3D + 20 log10 fc − 9 log10(d'_BP² + (h_BS − h_UT)²)``.
    """
    _check_scenario(scenario)
    d2d = np.asarray(d2d, float)
    d3 = distance_3d(d2d, h_bs, h_ut)
    dbp = breakpoint_distance(h_bs, h_ut, fc_ghz)
    dh2 = (np.asarray(h_bs, float) - np.asarray(h_ut, float)) ** 2
    lf = 20.0 * np.log10(fc_ghz)
    if scenario == "umi":
        pl1 = 32.4 + 21.0 * np.log10(d3) + lf
        pl2 = 32.4 + 40.0 * np.log10(d3) + lf - 9.5 * np.log10(dbp**2 + dh2)
    else:
        pl1 = 28.0 + 22.0 * np.log10(d3) + lf
        pl2 = 28.0 + 40.0 * np.log10(d3) + lf - 9.0 * np.log10(dbp**2 + dh2)
    return np.where(d2d <= dbp, pl1, pl2)


def pathloss_nlos_db(scenario: str, d2d, h_bs, h_ut, fc_ghz) -> np.ndarray:
    """NLoS path loss in dB, TR 38.901 Table 7.4.1-1: ``max(PL_LoS, PL'_NLoS)``.

    UMi: ``PL' = 35.3 log10 d3D + 22.4 + 21.3 log10 fc − 0.3 (h_UT − 1.5)``.
    UMa: ``PL' = 13.54 + 39.08 log10 d3D + 20 log10 fc − 0.6 (h_UT − 1.5)``.
    """
    d3 = distance_3d(d2d, h_bs, h_ut)
    h_ut = np.asarray(h_ut, float)
    if scenario == "umi":
        nlos = 35.3 * np.log10(d3) + 22.4 + 21.3 * np.log10(fc_ghz) - 0.3 * (h_ut - 1.5)
    else:
        _check_scenario(scenario)
        nlos = 13.54 + 39.08 * np.log10(d3) + 20.0 * np.log10(fc_ghz) - 0.6 * (h_ut - 1.5)
    return np.maximum(pathloss_los_db(scenario, d2d, h_bs, h_ut, fc_ghz), nlos)


def pathloss_db(scenario: str, d2d, h_bs, h_ut, fc_ghz, los) -> np.ndarray:
    """LoS or NLoS path loss by the boolean array ``los``."""
    los = np.asarray(los, bool)
    return np.where(los, pathloss_los_db(scenario, d2d, h_bs, h_ut, fc_ghz),
                    pathloss_nlos_db(scenario, d2d, h_bs, h_ut, fc_ghz))


def shadowing_std_db(scenario: str, los) -> np.ndarray:
    """σ_SF in dB (Table 7.4.1-1): 4 for LoS; 7.82 (UMi) or 6 (UMa) for NLoS."""
    _check_scenario(scenario)
    return np.where(np.asarray(los, bool), SHADOWING_STD_DB[(scenario, True)], SHADOWING_STD_DB[(scenario, False)])


def sample_shadowing_db(rng: np.random.Generator, scenario: str, los) -> np.ndarray:
    """Log-normal shadowing: a zero-mean Gaussian in dB with std :func:`shadowing_std_db`."""
    std = shadowing_std_db(scenario, los)
    return rng.normal(0.0, 1.0, np.shape(std)) * std
