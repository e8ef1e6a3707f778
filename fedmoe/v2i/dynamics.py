"""Semantic AoI, beam misalignment, CSI error and energy of the V2I model ([P002] eq. 3–9, 11).

Every function works on arrays of any leading shape ``(..., K)`` (``K`` vehicles), so that
thousands of slots or parallel episodes run as one numpy operation.

* AoI (eq. 6): ``A_k(n+1) = T_proc`` if vehicle ``k``'s camera frame is processed in slot
  ``n`` (``π_k(n) = 1``), else ``A_k(n) + 1``;
* misalignment probability (eq. 7): ``P_k(n) = 1 − exp(−β_k A_k(n))``, and its mean over the
  vehicles ``L_BMP(n)``;
* CSI error (eq. 8): ``h = ĥ + Δh`` with ``E||Δh||² = ρ P_k(n)``;
* energy (eq. 3–5): ``E(n) = Σ_k π_k(n) e_vis + Σ_k P_k(n) E_rec``;
* reward (eq. 11): ``r(n) = −E(n) − λ max(0, L_BMP(n) − Γ)``; the constraints are
  ``A_k(n) ≤ A_max`` (9d) and ``L_BMP(n) ≤ Γ`` (9e).

Slot order: the energy and the constraints of slot ``n`` use the AoI at the start of the
slot, ``A(n)``, and the decision ``π(n)`` taken in it; the decision then sets ``A(n+1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmoe.config import V2IConfig


def next_aoi(aoi: np.ndarray, schedule: np.ndarray, t_proc: int) -> np.ndarray:
    """``A(n+1)`` from ``A(n)`` and ``π(n)`` (eq. 6)."""
    return np.where(np.asarray(schedule, dtype=bool), t_proc, np.asarray(aoi) + 1)


def misalignment(aoi: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``P_k = 1 − exp(−β_k A_k)`` (eq. 7)."""
    return -np.expm1(-np.asarray(beta, dtype=np.float64) * np.asarray(aoi, dtype=np.float64))


def csi_error_variance(p_misa: np.ndarray, rho: float) -> np.ndarray:
    """``E||Δh_k||² = ρ P_k`` (eq. 8)."""
    return float(rho) * np.asarray(p_misa, dtype=np.float64)


@dataclass
class SlotCost:
    """What one slot costs (arrays over the leading axes, vehicles summed or averaged)."""

    p_misa: np.ndarray  # (..., K) P_k at the start of the slot (eq. 7)
    compute_j: np.ndarray  # Σ_k π_k e_vis (eq. 4)
    sweep_j: np.ndarray  # Σ_k P_k E_rec (eq. 5)
    l_bmp: np.ndarray  # mean_k P_k
    aoi_violation: np.ndarray  # any A_k > A_max (9d)
    bmp_violation: np.ndarray  # L_BMP > Γ (9e)
    reward: np.ndarray  # eq. 11

    @property
    def energy_j(self) -> np.ndarray:
        """``E(n) = E_comp(n) + E_sweep(n)`` (eq. 3)."""
        return self.compute_j + self.sweep_j


def slot_cost(aoi: np.ndarray, schedule: np.ndarray, cfg: V2IConfig, beta: np.ndarray | None = None) -> SlotCost:
    """Energy, reliability and reward of slot ``n`` from ``A(n)`` and ``π(n)`` (module docstring).

    ``beta`` (broadcast against ``aoi``) replaces ``cfg.beta``, e.g. per episode.
    """
    p = misalignment(aoi, np.asarray(cfg.beta if beta is None else beta))
    compute = np.asarray(schedule, dtype=np.float64).sum(-1) * cfg.e_vis_j
    sweep = p.sum(-1) * cfg.e_rec_j
    l_bmp = p.mean(-1)
    reward = -(compute + sweep) - cfg.penalty * np.maximum(0.0, l_bmp - cfg.gamma)
    return SlotCost(p, compute, sweep, l_bmp, (np.asarray(aoi) > cfg.a_max).any(-1), l_bmp > cfg.gamma + 1e-12, reward)


@dataclass
class Rollout:
    """A schedule played out over ``N`` slots (arrays ``(..., N)`` or ``(..., N, K)``)."""

    aoi: np.ndarray  # (..., N, K) AoI at the start of each slot
    schedule: np.ndarray  # (..., N, K)
    cost: SlotCost

    def mean_energy_j(self) -> np.ndarray:
        """Time-averaged energy per slot (eq. 9a)."""
        return self.cost.energy_j.mean(-1)


def rollout(schedule: np.ndarray, cfg: V2IConfig, initial_aoi: np.ndarray | None = None,
            beta: np.ndarray | None = None) -> Rollout:
    """Play ``schedule`` ``(..., N, K)`` from ``initial_aoi`` (default ``T_proc`` for every vehicle).

    ``beta`` ``(..., K)`` replaces ``cfg.beta`` (one row per episode).
    """
    schedule = np.asarray(schedule, dtype=bool)
    if schedule.shape[-1] != cfg.num_vehicles:
        raise ValueError(f"schedule has {schedule.shape[-1]} vehicles, the scenario {cfg.num_vehicles}")
    aoi = np.empty(schedule.shape, dtype=np.int64)
    a = np.broadcast_to(np.full(cfg.num_vehicles, cfg.t_proc) if initial_aoi is None else initial_aoi,
                        schedule.shape[:-2] + (cfg.num_vehicles,)).copy()
    for n in range(schedule.shape[-2]):
        aoi[..., n, :] = a
        a = next_aoi(a, schedule[..., n, :], cfg.t_proc)
    b = None if beta is None else np.asarray(beta, dtype=np.float64)[..., None, :]
    return Rollout(aoi, schedule, slot_cost(aoi, schedule, cfg, b))
