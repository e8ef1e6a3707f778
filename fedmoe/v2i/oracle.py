"""The lowest time-averaged energy any camera schedule can reach in the V2I model ([P002] eq. 9).

The AoI dynamics are deterministic (eq. 6) and the energy of a slot depends only on the AoI
and the decision (eq. 3–5, 7), so this is a deterministic minimum-mean-cycle problem.

**One vehicle.** Every schedule is a sequence of cycles: a frame resets the AoI to
``T_proc``, then it grows for ``T − 1`` slots until the next frame. A cycle of length ``T``
costs on average ::

    c_k(T) = ( e_vis + E_rec Σ_{j=0}^{T−1} P_k(T_proc + j) ) / T,   T_proc + T − 1 ≤ A_max (9d)

(the AoI at the start of the ``T`` slots runs over ``T_proc, …, T_proc + T − 1``), so the
best long-run average is ``min_T c_k(T)``, reached by the periodic schedule with that
period (:func:`best_periods`). A mean over cycles cannot beat its best cycle.

**All vehicles.** Without the per-slot reliability constraint (9e) the vehicles decouple
and ``Σ_k min_T c_k(T)`` is the optimum. With it, that sum is a lower bound; a schedule
meeting (9e) in every slot with that energy is optimal. :func:`reference_schedule` looks
for one among the staggered periodic schedules with the best periods (every phase offset;
the joint schedule repeats after the least common multiple of the periods) and reports
the bound, the best feasible periodic schedule and whether the two meet (then the
reference is exact).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from fedmoe.config import V2IConfig
from fedmoe.v2i.dynamics import misalignment, rollout
from fedmoe.v2i.schedules import periodic


def cycle_costs(cfg: V2IConfig, beta: np.ndarray | None = None) -> np.ndarray:
    """(..., K, T_max) ``c_k(T)`` for ``T = 1 … A_max − T_proc + 1`` (module docstring).

    ``beta`` ``(..., K)`` replaces ``cfg.beta`` (e.g. one row per episode).
    """
    t_max = cfg.a_max - cfg.t_proc + 1
    aoi = cfg.t_proc + np.arange(t_max)
    b = np.asarray(cfg.beta if beta is None else beta, dtype=np.float64)
    p = misalignment(aoi, b[..., None])  # (..., K, T_max)
    periods = np.arange(1, t_max + 1)
    return (cfg.e_vis_j + cfg.e_rec_j * np.cumsum(p, axis=-1)) / periods


def best_periods(cfg: V2IConfig, beta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(T_k*, c_k(T_k*))``: each vehicle's optimal period and its average energy per slot (shapes ``(..., K)``)."""
    c = cycle_costs(cfg, beta)
    idx = c.argmin(axis=-1)
    return idx + 1, np.take_along_axis(c, idx[..., None], axis=-1)[..., 0]


def lower_bound(cfg: V2IConfig, beta: np.ndarray | None = None) -> np.ndarray:
    """``Σ_k min_T c_k(T)`` (``(...)``): no schedule has a lower time-averaged energy (module docstring)."""
    return best_periods(cfg, beta)[1].sum(-1)


@dataclass
class Reference:
    """The exact reference (module docstring)."""

    lower_bound_j: float  # Σ_k min_T c_k(T): no schedule does better
    periods: np.ndarray  # T_k*
    phases: np.ndarray | None  # offsets of the best feasible staggered schedule (None: none found)
    energy_j: float | None  # its time-averaged energy
    exact: bool  # energy equals the bound: the schedule is optimal

    def schedule(self, cfg: V2IConfig, num_slots: int) -> np.ndarray:
        """The reference schedule over ``num_slots`` slots."""
        if self.phases is None:
            raise ValueError("no periodic schedule meets the reliability constraint (9e)")
        return periodic(cfg, num_slots, self.periods, self.phases)


def reference_schedule(cfg: V2IConfig, max_combinations: int = 200_000, beta: np.ndarray | None = None) -> Reference:
    """The bound and the best staggered optimal-period schedule meeting (9e) in every slot (``beta``: ``(K,)``)."""
    periods, costs = best_periods(cfg, beta)
    bound = float(costs.sum())
    horizon = math.lcm(*[int(t) for t in periods])
    offsets = [range(int(t)) for t in periods]
    if math.prod(int(t) for t in periods) > max_combinations:
        raise ValueError(f"{math.prod(int(t) for t in periods)} phase combinations exceed max_combinations")
    best: tuple[float, np.ndarray] | None = None
    # warm-up of one period so that every vehicle's AoI is on its cycle, then one joint period
    warm = int(periods.max())
    for phases in itertools.product(*offsets):
        ph = np.asarray(phases)
        run = rollout(periodic(cfg, warm + horizon, periods, ph), cfg, beta=beta)
        steady = slice(warm, warm + horizon)
        if run.cost.bmp_violation[steady].any() or run.cost.aoi_violation[steady].any():
            continue
        energy = float(run.cost.energy_j[steady].mean())
        if best is None or energy < best[0] - 1e-12:
            best = (energy, ph)
    if best is None:
        return Reference(bound, periods, None, None, False)
    return Reference(bound, periods, best[1], best[0], abs(best[0] - bound) <= 1e-9 * max(1.0, bound))
