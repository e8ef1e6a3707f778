"""The V2I environment of [P002]: vehicles on a road, a radar, a camera schedule and the channel.

``B`` episodes run side by side (numpy arrays with a leading ``B`` axis). Slot ``n``:

1. the base station observes ``s_n = (θ̂_k, d̂_k, A_k(n))`` per vehicle ([P002]'s state,
   ``K × 3``; :meth:`V2IEnv.observe`);
2. the agent picks ``π(n)`` and the beams ``v(n)``;
3. :meth:`V2IEnv.step` charges the slot (eq. 3–5, 11, :func:`fedmoe.v2i.dynamics.slot_cost`),
   advances the AoI (eq. 6) and moves the vehicles.

**Kinematics (ours).** The base station's ULA runs along a straight road of
``road_length_m``; vehicle ``k`` drives lane ``k mod 4`` (``lane_offset_m + lane · lane_width_m``
from the array) at a constant speed ``v_k`` and re-enters at the start when it leaves the section.
The true angle from broadside is ``θ_k = atan2(x_k, y_k)``.

**Radar and β (ours; [P002] states neither).** The radar measures ``θ̂ = θ + e_θ`` and
``d̂ = d + e_d`` with standard deviations that scale as ``1/√SNR`` (the Cramér–Rao bound of
angle and range estimation). Between camera frames the base station tracks with the
radar, so the rate at which its estimate drifts off the beam has a part no radar removes
(manoeuvres, model error) and a part proportional to the radar's error variance::

    β_k = β_k^nom · (v_k / v_k^nom) · (κ + 1/SNR) / (κ + 1/SNR_ref)

(``beta``, ``speeds_mps``, ``radar_floor`` = κ, ``snr_ref_db``). At ``snr_db = snr_ref_db``
and nominal speeds ``β_k`` is the configured ``beta``. Each episode draws the speeds
``v_k = speeds_mps_k · speed_scale · U(1 − j, 1 + j)``, so the rate is not a constant of the
vehicle index: only the radar's history reveals it.

**Channels.** :meth:`V2IEnv.step` also returns the slot's tracked channel ``ĥ`` (eq. 2 at the
true position) and the true ``h = ĥ + Δh`` (eq. 8), for the spatial loss (eq. 13).

All random draws that do not depend on the agent's actions come from the episode's own
generator in a fixed order, so two policies evaluated with the same seed meet the same
vehicles, radar noise and fading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmoe.config import V2IConfig
from fedmoe.v2i.channel import csi_error, geometric_channel
from fedmoe.v2i.dynamics import SlotCost, next_aoi, slot_cost
from fedmoe.v2i.oracle import lower_bound

NUM_FEATURES = 3  # θ̂, d̂, A per vehicle
LANES = 4
AOI_SCALE = 5.0  # slots; the AoI feature is A / AOI_SCALE (typical cycles are a few slots)


def snr_factor(cfg: V2IConfig, snr_db: float) -> float:
    """``(κ + 1/SNR) / (κ + 1/SNR_ref)``: how β scales with the radar SNR (module docstring)."""
    return (cfg.radar_floor + 10 ** (-snr_db / 10)) / (cfg.radar_floor + 10 ** (-cfg.snr_ref_db / 10))


def radar_std(cfg: V2IConfig, snr_db: float) -> tuple[float, float]:
    """Radar angle (rad) and range (m) error standard deviations at ``snr_db`` (∝ 1/√SNR)."""
    scale = 10 ** (-(snr_db - cfg.snr_ref_db) / 20)
    return math.radians(cfg.radar_angle_std_deg) * scale, cfg.radar_range_std_m * scale


@dataclass
class Step:
    """What one slot produced (arrays with a leading ``B`` axis)."""

    cost: SlotCost  # totals per episode (eq. 3–5, 9d, 9e, 11)
    vehicle_energy_j: np.ndarray  # (B, K) π_k e_vis + P_k E_rec
    p_misa: np.ndarray  # (B, K) eq. 7 at the start of the slot
    h_hat: np.ndarray  # (B, K, M) tracked channel (eq. 2)
    h: np.ndarray  # (B, K, M) true channel ĥ + Δh (eq. 8)


class V2IEnv:
    """``num_episodes`` episodes of one road (module docstring).

    Parameters
    ----------
    cfg
        The ``v2i`` section.
    num_episodes
        ``B``, episodes simulated side by side.
    seed
        Seeds the speeds, start positions, radar noise and fading.
    speed_scale
        Multiplies every nominal speed (a base station's road, ``v2i.federated.road_speed_scale``).
    snr_db
        Radar SNR; default ``cfg.snr_db``.
    """

    def __init__(self, cfg: V2IConfig, num_episodes: int, seed: int, speed_scale: float = 1.0,
                 snr_db: float | None = None) -> None:
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        if speed_scale <= 0:
            raise ValueError(f"speed_scale must be positive, got {speed_scale}")
        self.cfg = cfg
        self.num_episodes = num_episodes
        self.snr_db = cfg.snr_db if snr_db is None else float(snr_db)
        self.rng = np.random.default_rng(seed)
        k, j = cfg.num_vehicles, cfg.speed_jitter
        nominal = np.asarray(cfg.speeds_mps, dtype=np.float64)
        self.speed = nominal * speed_scale * self.rng.uniform(1 - j, 1 + j, size=(num_episodes, k))
        self.beta = np.asarray(cfg.beta) * (self.speed / nominal) * snr_factor(cfg, self.snr_db)
        self.lateral = cfg.lane_offset_m + cfg.lane_width_m * (np.arange(k) % LANES)
        self.x = self.rng.uniform(-cfg.road_length_m / 2, cfg.road_length_m / 2, size=(num_episodes, k))
        self.aoi = np.full((num_episodes, k), cfg.t_proc, dtype=np.int64)
        self.angle_std, self.range_std = radar_std(cfg, self.snr_db)
        self.slot = 0

    @property
    def angle(self) -> np.ndarray:
        """True angle from the array's broadside, rad (B, K)."""
        return np.arctan2(self.x, self.lateral)

    @property
    def distance(self) -> np.ndarray:
        return np.hypot(self.x, self.lateral)

    def observe(self) -> np.ndarray:
        """``s_n`` (B, K, 3): radar angle (rad), radar range (in road lengths), AoI (in units of :data:`AOI_SCALE`)."""
        shape = self.x.shape
        theta = self.angle + self.rng.normal(0.0, self.angle_std, size=shape)
        dist = self.distance + self.rng.normal(0.0, self.range_std, size=shape)
        return np.stack([theta, dist / self.cfg.road_length_m, self.aoi / AOI_SCALE], axis=-1).astype(np.float32)

    def step(self, schedule: np.ndarray) -> Step:
        """Charge slot ``n`` for ``π(n)`` (B, K), then advance the AoI and the vehicles."""
        cfg = self.cfg
        schedule = np.asarray(schedule, dtype=bool)
        if schedule.shape != self.aoi.shape:
            raise ValueError(f"schedule has shape {schedule.shape}, expected {self.aoi.shape}")
        cost = slot_cost(self.aoi, schedule, cfg, self.beta)
        p = cost.p_misa
        h_hat = geometric_channel(cfg, self.angle, self.distance, self.rng)
        normal = (self.rng.normal(size=h_hat.shape) + 1j * self.rng.normal(size=h_hat.shape)) / math.sqrt(2)
        h = h_hat + csi_error(h_hat, p, cfg.rho, normal)
        vehicle = schedule * cfg.e_vis_j + p * cfg.e_rec_j
        self.aoi = next_aoi(self.aoi, schedule, cfg.t_proc)
        half = cfg.road_length_m / 2
        self.x = (self.x + self.speed * cfg.slot_s + half) % cfg.road_length_m - half
        self.slot += 1
        return Step(cost, vehicle, p, h_hat, h)

    def lower_bound_j(self) -> np.ndarray:
        """Per episode, the lowest time-averaged energy any schedule reaches with its β (:mod:`fedmoe.v2i.oracle`)."""
        return lower_bound(self.cfg, self.beta)
