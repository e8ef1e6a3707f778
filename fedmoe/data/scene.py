"""Street-scene geometry of the synthetic ISAC generator (vectorised over samples).

Coordinates in metres. The base station (BS) stands at the origin, antenna height
``h_BS``; its ULA lies along the x axis with broadside towards +y. A straight street runs
along x in front of it: lane ``i`` has its centre at ``y = offset + (i + 1/2) w``; a
building facade closes the far side at ``y_f = offset + lanes w + 3`` (a 3 m sidewalk).

Each sample is an independent snapshot of the scene:

* one **user** — a vehicle in a lane (box 4.5 x 1.8 x 1.5 m, antenna on the roof) or, with
  probability ``uav_fraction``, a low-altitude UAV anywhere above the street and sidewalk;
* ``num_blockers`` **large vehicles** (trucks, buses: 7–14 m long, 2.5 m wide, 3–4.5 m
  high) in random lanes, moving along their lane's direction;
* ``num_scatterers`` static **reflectors**: half on the far facade (window frames, metal
  panels, 2 m wide, 2–12 m up), half lamp posts on the near sidewalk. Each has a
  reflection loss drawn from ``scatter_loss_db``; low loss means a strong reflector, and
  the same property makes it bright to the camera and strong to the radar. By default
  (``static_site``) they are the site's fixed infrastructure, drawn once from
  ``site_seed`` and the same in every sample, as at a real base station; only the user
  and the vehicles change from sample to sample.

Objects may overlap (no collision avoidance); at the default densities this is rare and
harmless for the labels. All boxes are axis-aligned: ``lo`` and ``hi`` corners (x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmoe.config import SceneConfig

VEHICLE_SIZE = np.array([4.5, 1.8, 1.5])
UAV_SIZE = np.array([0.8, 0.8, 0.3])
SIDEWALK_M = 3.0
FACADE_HEIGHT_M = 15.0
POLE_HEIGHT_M = 6.0


@dataclass
class Scene:
    """One snapshot per sample; leading axis N everywhere.

    Attributes
    ----------
    bs : (3,) BS antenna position.
    user_pos, user_vel, user_acc : (N, 3) user antenna position (m), velocity (m/s), acceleration (m/s^2).
    is_uav : (N,) bool.
    user_lo, user_hi : (N, 3) the user's own box.
    blk_lo, blk_hi : (N, B, 3) blocker boxes; blk_vel : (N, B, 3).
    sc_pos : (N, S, 3) reflection point of each scatterer; sc_lo, sc_hi : (N, S, 3) its box.
    sc_loss_db : (N, S) reflection loss; sc_is_pole : (N, S) bool.
    facade_y : y of the far facade (a plane, used by lidar and camera as background).
    """

    bs: np.ndarray
    user_pos: np.ndarray
    user_vel: np.ndarray
    user_acc: np.ndarray
    is_uav: np.ndarray
    user_lo: np.ndarray
    user_hi: np.ndarray
    blk_lo: np.ndarray
    blk_hi: np.ndarray
    blk_vel: np.ndarray
    sc_pos: np.ndarray
    sc_lo: np.ndarray
    sc_hi: np.ndarray
    sc_loss_db: np.ndarray
    sc_is_pole: np.ndarray
    facade_y: float

    def __len__(self) -> int:
        return len(self.user_pos)


def lane_centres(cfg: SceneConfig) -> np.ndarray:
    """y of each lane's centre line."""
    return cfg.street_offset_m + (np.arange(cfg.num_lanes) + 0.5) * cfg.lane_width_m


def lane_direction(cfg: SceneConfig) -> np.ndarray:
    """+1 / -1 travel direction (along x) of each lane: near half eastbound, far half westbound."""
    return np.where(np.arange(cfg.num_lanes) < (cfg.num_lanes + 1) // 2, 1.0, -1.0)


def facade_y(cfg: SceneConfig) -> float:
    return cfg.street_offset_m + cfg.num_lanes * cfg.lane_width_m + SIDEWALK_M


def draw_scene(cfg: SceneConfig, bs_height_m: float, n: int, rng: np.random.Generator) -> Scene:
    """Draw ``n`` independent scene snapshots."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    half = cfg.street_length_m / 2
    lanes, dirs, yf = lane_centres(cfg), lane_direction(cfg), facade_y(cfg)

    # --- user: vehicle or UAV
    is_uav = rng.random(n) < cfg.uav_fraction
    lane = rng.integers(0, cfg.num_lanes, n)
    speed = rng.uniform(5.0, 20.0, n)
    veh_pos = np.stack([rng.uniform(-half, half, n), lanes[lane], np.full(n, VEHICLE_SIZE[2])], axis=1)
    veh_vel = np.stack([dirs[lane] * speed, np.zeros(n), np.zeros(n)], axis=1)
    veh_acc = np.stack([rng.normal(0, 1.5, n), rng.normal(0, 0.3, n), np.zeros(n)], axis=1)

    uav_pos = np.stack([rng.uniform(-half, half, n), rng.uniform(cfg.street_offset_m * 0.5, yf, n),
                        rng.uniform(*cfg.uav_height_m, n)], axis=1)
    heading = rng.uniform(0, 2 * np.pi, n)
    uav_speed = rng.uniform(2.0, 12.0, n)
    uav_vel = np.stack([uav_speed * np.cos(heading), uav_speed * np.sin(heading), rng.normal(0, 1.0, n)], axis=1)
    uav_acc = rng.normal(0, 2.0, (n, 3))

    sel = is_uav[:, None]
    user_pos = np.where(sel, uav_pos, veh_pos)
    user_vel = np.where(sel, uav_vel, veh_vel)
    user_acc = np.where(sel, uav_acc, veh_acc)
    # The antenna sits on top of the box: box spans [z - height, z].
    size = np.where(sel, UAV_SIZE, VEHICLE_SIZE)
    user_lo = user_pos - np.concatenate([size[:, :2] / 2, size[:, 2:]], axis=1)
    user_hi = user_pos + np.concatenate([size[:, :2] / 2, np.zeros((n, 1))], axis=1)

    # --- blockers: trucks and buses in lanes
    b = cfg.num_blockers
    blane = rng.integers(0, cfg.num_lanes, (n, b))
    bx = rng.uniform(-half, half, (n, b))
    blen = rng.uniform(7.0, 14.0, (n, b))
    bh = rng.uniform(3.0, 4.5, (n, b))
    by = lanes[blane]
    blk_lo = np.stack([bx - blen / 2, by - 1.25, np.zeros((n, b))], axis=-1)
    blk_hi = np.stack([bx + blen / 2, by + 1.25, bh], axis=-1)
    blk_vel = np.stack([dirs[blane] * rng.uniform(3.0, 15.0, (n, b)), np.zeros((n, b)), np.zeros((n, b))], axis=-1)

    # --- scatterers: facade features (far side) and lamp posts (near sidewalk); fixed
    # infrastructure drawn once from the site seed, or redrawn per sample.
    s = cfg.num_scatterers
    site_rng, rows = (np.random.default_rng(cfg.site_seed), 1) if cfg.static_site else (rng, n)
    is_pole = np.zeros((rows, s), dtype=bool)
    is_pole[:, s - s // 2:] = True
    sx = site_rng.uniform(-half, half, (rows, s))
    sz = np.where(is_pole, POLE_HEIGHT_M - 1.0, site_rng.uniform(2.0, 12.0, (rows, s)))
    sc_loss = site_rng.uniform(*cfg.scatter_loss_db, (rows, s))
    sy = np.where(is_pole, cfg.street_offset_m - 1.0, yf)
    sc_pos = np.stack([sx, sy, sz], axis=-1)
    half_w = np.where(is_pole, 0.15, 1.0)
    sc_lo = np.stack([sx - half_w, sy - np.where(is_pole, 0.15, 0.0), np.where(is_pole, 0.0, sz - 1.0)], axis=-1)
    sc_hi = np.stack([sx + half_w, sy + np.where(is_pole, 0.15, 0.4), np.where(is_pole, POLE_HEIGHT_M, sz + 1.0)],
                     axis=-1)
    full = lambda a: np.broadcast_to(a, (n,) + a.shape[1:]).copy()  # noqa: E731
    is_pole, sc_pos, sc_lo, sc_hi, sc_loss = map(full, (is_pole, sc_pos, sc_lo, sc_hi, sc_loss))

    return Scene(np.array([0.0, 0.0, bs_height_m]), user_pos, user_vel, user_acc, is_uav, user_lo, user_hi,
                 blk_lo, blk_hi, blk_vel, sc_pos, sc_lo, sc_hi, sc_loss, is_pole, yf)


def segments_blocked(p0: np.ndarray, p1: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether each segment p0 -> p1 passes through any axis-aligned box (slab method).

    Parameters
    ----------
    p0, p1 : (..., 3) segment end points (broadcastable against each other).
    lo, hi : (N, B, 3) boxes; the segments' leading axis must be N.

    Returns
    -------
    (...,) bool — True if the open segment intersects at least one box. An end point on a
    box's face (e.g. a reflector mounted on a facade) does not count: the parameter
    interval is shrunk by a small margin (1e-3 of the length) at both ends.
    """
    p0 = np.broadcast_to(p0, np.broadcast_shapes(p0.shape, p1.shape))
    d = p1 - p0
    # Broadcast segments (N, P, 1, 3) against boxes (N, 1, B, 3).
    p0e, de = p0[..., None, :], d[..., None, :]
    extra = p0.ndim - 2  # number of path axes between N and the coordinate axis
    lo_e = lo.reshape(lo.shape[:1] + (1,) * extra + lo.shape[1:])
    hi_e = hi.reshape(hi.shape[:1] + (1,) * extra + hi.shape[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / de
        t1 = (lo_e - p0e) * inv
        t2 = (hi_e - p0e) * inv
    tmin = np.minimum(t1, t2)
    tmax = np.maximum(t1, t2)
    # Axis with zero direction: inside the slab -> (-inf, inf), outside -> empty.
    parallel = de == 0
    inside = (p0e >= lo_e) & (p0e <= hi_e)
    tmin = np.where(parallel, np.where(inside, -np.inf, np.inf), tmin)
    tmax = np.where(parallel, np.where(inside, np.inf, -np.inf), tmax)
    t_enter = tmin.max(axis=-1)
    t_exit = tmax.min(axis=-1)
    eps = 1e-3
    hit = (t_enter < t_exit) & (t_exit > eps) & (t_enter < 1.0 - eps)
    return hit.any(axis=-1)
