"""Fixed camera schedules of the V2I model ([P002]'s baselines that need no learning).

Each returns a boolean ``(N, K)`` schedule ``π`` for ``N`` slots; play it with
:func:`fedmoe.v2i.dynamics.rollout`.

* ``vision_only`` — every camera frame processed every slot ([P002]: 40 J/slot of compute);
* ``radar_only`` — no camera frame ever (the AoI grows without bound);
* ``periodic`` — vehicle ``k`` every ``T_k`` slots, phase ``k mod T_k`` (staggered);
* ``aoi_threshold`` — a frame whenever the vehicle's AoI would otherwise exceed ``θ_k``.
"""

from __future__ import annotations

import numpy as np

from fedmoe.config import V2IConfig
from fedmoe.registry import Registry
from fedmoe.v2i.dynamics import next_aoi

SCHEDULES: Registry = Registry("V2I schedule")


@SCHEDULES.register("vision_only")
def vision_only(cfg: V2IConfig, num_slots: int) -> np.ndarray:
    return np.ones((num_slots, cfg.num_vehicles), dtype=bool)


@SCHEDULES.register("radar_only")
def radar_only(cfg: V2IConfig, num_slots: int) -> np.ndarray:
    return np.zeros((num_slots, cfg.num_vehicles), dtype=bool)


@SCHEDULES.register("periodic")
def periodic(cfg: V2IConfig, num_slots: int, periods: np.ndarray | int = 5,
             phases: np.ndarray | None = None) -> np.ndarray:
    """A frame for vehicle ``k`` in the slots ``n ≡ φ_k (mod T_k)`` (default ``φ_k = k``: staggered)."""
    periods = np.broadcast_to(np.asarray(periods, dtype=np.int64), (cfg.num_vehicles,))
    if (periods < 1).any():
        raise ValueError(f"periods must be >= 1, got {periods.tolist()}")
    phases = np.arange(cfg.num_vehicles) if phases is None else np.asarray(phases, dtype=np.int64)
    n = np.arange(num_slots)[:, None]
    return (n % periods) == (phases % periods)


@SCHEDULES.register("aoi_threshold")
def aoi_threshold(cfg: V2IConfig, num_slots: int, thresholds: np.ndarray | int | None = None) -> np.ndarray:
    """A frame in slot ``n`` when ``A_k(n) + 1 > θ_k`` (default ``θ_k = A_max``: the least sensing 9d allows)."""
    theta = np.broadcast_to(np.asarray(cfg.a_max if thresholds is None else thresholds, dtype=np.int64),
                            (cfg.num_vehicles,))
    a = np.full(cfg.num_vehicles, cfg.t_proc)
    out = np.zeros((num_slots, cfg.num_vehicles), dtype=bool)
    for n in range(num_slots):
        out[n] = a + 1 > theta
        a = next_aoi(a, out[n], cfg.t_proc)
    return out
