"""Synthetic sensors of the ISAC scene (vectorised over samples).

Camera, lidar and radar are co-located with the base station (as the sensing unit of
the DeepSense 6G testbeds); GPS is on the user. Every function takes the
:class:`~fedmoe.data.scene.Scene` and returns an array with samples on axis 0.

Uplink size of one sample (``bits_per_sample``): camera 8 bit per colour channel and
pixel; lidar 16 bit per range; radar 16 bit per cell and channel; GPS 32 bit per
coordinate; RF 16 bit per beam power.
"""

from __future__ import annotations

import numpy as np

from fedmoe.config import SensorConfig
from fedmoe.data.multipath import Multipath, direction_cosine
from fedmoe.data.scene import FACADE_HEIGHT_M, Scene, segments_blocked
from fedmoe.wireless.antenna import beam_gains, dft_codebook

CAMERA_ELEVATION_DEG = (-60.0, 40.0)
LIDAR_HEIGHT_M = 1.0
TX_POWER_DBM = 23.0
ENV_FLOOR_DB = -80.0
"""Noise floor of the radar's environment map (radar-equation units)."""
PILOT_INTEGRATION_DB = 20.0
"""Coherent integration gain of the pilot map (100 pilot symbols per snapshot)."""
PILOT_FLOOR_DBM = -174.0 + 80.0 + 9.0 - PILOT_INTEGRATION_DB
"""Noise floor of the pilot map: -174 dBm/Hz over 100 MHz, 9 dB noise figure, less the integration gain."""

SKY = np.array([135, 190, 235], dtype=np.float32)
FACADE = np.array([170, 150, 120], dtype=np.float32)
ROAD = np.array([70, 70, 70], dtype=np.float32)
VEHICLE = np.array([210, 40, 40], dtype=np.float32)
UAV = np.array([40, 210, 60], dtype=np.float32)
TRUCK = np.array([40, 70, 200], dtype=np.float32)


def bits_per_sample(cfg: SensorConfig) -> dict[str, int]:
    """Uplink bits of one sample of each modality (see module docstring)."""
    return {
        "camera": 3 * cfg.camera_size**2 * 8,
        "lidar": cfg.lidar_rays * 16,
        "radar": 2 * cfg.radar_range_bins * cfg.radar_angle_bins * 16,
        "gps": 6 * 32,
        "rf": cfg.rf_beams * 16,
    }


def _reflectivity(loss_db: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """1 for the strongest possible reflector (lowest loss), 0 for the weakest."""
    return 1.0 - (loss_db - lo) / max(hi - lo, 1e-9)


def _objects(scene: Scene, loss_range: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Boxes, colours and radar cross-sections of everything visible: scatterers, blockers, user.

    Returns lo, hi (N, O, 3), colour (N, O, 3) float32, rcs_dbsm (N, O).
    """
    n, b = len(scene), scene.blk_lo.shape[1]
    refl = _reflectivity(scene.sc_loss_db, *loss_range)
    shade = (90.0 + 165.0 * refl)[..., None]
    sc_colour = np.concatenate([shade, shade, shade * 0.85], axis=-1)
    user_colour = np.where(scene.is_uav[:, None], UAV, VEHICLE)
    lo = np.concatenate([scene.sc_lo, scene.blk_lo, scene.user_lo[:, None]], axis=1)
    hi = np.concatenate([scene.sc_hi, scene.blk_hi, scene.user_hi[:, None]], axis=1)
    colour = np.concatenate([sc_colour, np.broadcast_to(TRUCK, (n, b, 3)), user_colour[:, None]], axis=1)
    rcs = np.concatenate([5.0 + 10.0 * refl, np.full((n, b), 20.0),
                          np.where(scene.is_uav, -10.0, 10.0)[:, None]], axis=1)
    return lo, hi, colour.astype(np.float32), rcs


def _corner_angles(lo: np.ndarray, hi: np.ndarray, bs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Azimuth and elevation (rad) extents of boxes seen from ``bs``: az_min, az_max, el_min, el_max."""
    corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), axis=-1).reshape(8, 3)
    pts = np.where(corners.astype(bool), hi[..., None, :], lo[..., None, :]) - bs  # (N, O, 8, 3)
    az = np.arctan2(pts[..., 0], pts[..., 1])
    el = np.arctan2(pts[..., 2], np.hypot(pts[..., 0], pts[..., 1]))
    return az.min(-1), az.max(-1), el.min(-1), el.max(-1)


def camera(scene: Scene, cfg: SensorConfig, rng: np.random.Generator, loss_range: tuple[float, float]) -> np.ndarray:
    """RGB raster (N, 3, S, S) uint8 from the BS: azimuth across, elevation down.

    Painter's algorithm: background (sky, far facade, road), then boxes from the farthest
    to the nearest, each filling its azimuth/elevation extent (at least one pixel wide so
    thin poles and small UAVs stay visible); brightness of a reflector encodes its
    reflectivity; Gaussian pixel noise (std 6).
    """
    size, n = cfg.camera_size, len(scene)
    half_fov = np.deg2rad(cfg.camera_fov_deg) / 2
    az = np.linspace(-half_fov, half_fov, size)
    el = np.deg2rad(np.linspace(CAMERA_ELEVATION_DEG[1], CAMERA_ELEVATION_DEG[0], size))
    pix_az, pix_el = az[1] - az[0], el[0] - el[1]

    # Background, identical for all samples: facade band between its foot and top.
    dist = scene.facade_y / np.maximum(np.cos(az), 1e-3)
    top = np.arctan2(FACADE_HEIGHT_M - scene.bs[2], dist)
    foot = np.arctan2(-scene.bs[2], dist)
    el_col, top_row, foot_row = el[:, None], top[None, :], foot[None, :]
    background = np.where(el_col > top_row, SKY[:, None, None],
                          np.where(el_col >= foot_row, FACADE[:, None, None], ROAD[:, None, None]))
    image = np.broadcast_to(background, (n, 3, size, size)).copy()

    lo, hi, colour, _ = _objects(scene, loss_range)
    az_min, az_max, el_min, el_max = _corner_angles(lo, hi, scene.bs)
    widen_az = np.maximum(pix_az - (az_max - az_min), 0) / 2
    widen_el = np.maximum(pix_el - (el_max - el_min), 0) / 2
    az_min, az_max, el_min, el_max = az_min - widen_az, az_max + widen_az, el_min - widen_el, el_max + widen_el
    depth = np.linalg.norm((lo + hi) / 2 - scene.bs, axis=-1)
    order = np.argsort(-depth, axis=1)
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    az_min, az_max, el_min, el_max = take(az_min), take(az_max), take(el_min), take(el_max)
    colour = np.take_along_axis(colour, order[..., None], axis=1)
    for k in range(order.shape[1]):
        in_az = (az[None, :] >= az_min[:, k, None]) & (az[None, :] <= az_max[:, k, None])  # (N, S)
        in_el = (el[None, :] >= el_min[:, k, None]) & (el[None, :] <= el_max[:, k, None])  # (N, S)
        mask = in_el[:, :, None] & in_az[:, None, :]
        np.copyto(image, colour[:, k, :, None, None], where=mask[:, None])
    image += rng.normal(0.0, 6.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def lidar(scene: Scene, cfg: SensorConfig, rng: np.random.Generator) -> np.ndarray:
    """Horizontal range scan (N, rays) float32 in metres at 1 m height from the BS mast foot.

    Rays span the camera's field of view; a ray returns the distance to the first box that
    reaches 1 m height (vehicles, trucks, poles), else the facade, capped at the maximum
    range; Gaussian range noise. UAVs and facade features above 1 m are not seen.
    """
    half_fov = np.deg2rad(cfg.camera_fov_deg) / 2
    az = np.linspace(-half_fov, half_fov, cfg.lidar_rays)
    dx, dy = np.sin(az), np.cos(az)
    lo, hi, _, _ = _objects(scene, (0.0, 1.0))
    at_height = (lo[..., 2] <= LIDAR_HEIGHT_M) & (hi[..., 2] >= LIDAR_HEIGHT_M)  # (N, O)
    with np.errstate(divide="ignore", invalid="ignore"):
        tx1, tx2 = lo[..., None, 0] / dx, hi[..., None, 0] / dx  # (N, O, rays)
        ty1, ty2 = lo[..., None, 1] / dy, hi[..., None, 1] / dy
    tx_lo = np.where(dx == 0, np.where((lo[..., None, 0] <= 0) & (hi[..., None, 0] >= 0), -np.inf, np.inf),
                     np.minimum(tx1, tx2))
    tx_hi = np.where(dx == 0, np.where((lo[..., None, 0] <= 0) & (hi[..., None, 0] >= 0), np.inf, -np.inf),
                     np.maximum(tx1, tx2))
    t_in = np.maximum(tx_lo, np.minimum(ty1, ty2))
    t_out = np.minimum(tx_hi, np.maximum(ty1, ty2))
    hit = (t_in <= t_out) & (t_out > 0) & at_height[..., None]
    t = np.where(hit, np.maximum(t_in, 0.0), np.inf).min(axis=1)  # (N, rays)
    facade = scene.facade_y / np.maximum(dy, 1e-6)
    rng_m = np.minimum(np.minimum(t, facade[None, :]), cfg.lidar_max_range_m)
    rng_m = rng_m + rng.normal(0.0, cfg.lidar_noise_m, rng_m.shape)
    return np.clip(rng_m, 0.0, cfg.lidar_max_range_m).astype(np.float32)


def radar(scene: Scene, mp: Multipath, cfg: SensorConfig, rng: np.random.Generator,
          loss_range: tuple[float, float], blockage_db: float) -> np.ndarray:
    """Range-angle maps (N, 2, R, A) float32 (dB) of the BS's monostatic ISAC radar.

    Channel 0, the environment: reflectors and large vehicles by the radar equation
    (``RCS - 40 log10 r``, minus twice the blockage loss when the line of sight to the
    target crosses a large vehicle).

    Channel 1, the user: the range-angle profile of its uplink pilot as the radar's array
    receiver sees it (bistatic sensing; the user is the transmitter), one peak per
    propagation path ``p`` at the path's direction ``u_p`` and length ``l_p``, with power
    ``P_tx + g_p + 10 log10 M`` dBm (``g_p`` the path gain of
    :class:`~fedmoe.data.multipath.Multipath`, ``M`` the array gain) over a noise floor of
    ``-174 + 10 log10(100 MHz) + 9 - 20`` dBm (20 dB: coherent integration of 100 pilots). This is
    the ISAC premise: the radar senses through the same channel as the uplink. When a truck
    blocks the direct path, its peak fades and the paths via the reflectors show where the
    strongest remaining one comes from — a cheap GPS fix cannot tell that.

    Each target is spread as a Gaussian over about one range bin and one angle bin (angle
    bins uniform in the direction cosine ``u``, like the beam codebook), plus
    ``radar_noise_db`` Gaussian noise on both channels.
    """
    lo, hi, _, rcs = _objects(scene, loss_range)
    lo, hi, rcs = lo[:, :-1], hi[:, :-1], rcs[:, :-1]  # the user has its own channel
    centre = (lo + hi) / 2
    centre[:, : scene.sc_pos.shape[1]] = scene.sc_pos  # reflectors are seen at their reflection point
    r = np.linalg.norm(centre - scene.bs, axis=-1)
    blocked = segments_blocked(np.broadcast_to(scene.bs, centre.shape), centre, scene.blk_lo, scene.blk_hi)
    # A blocker's centre lies inside its own box, which would count as blocking: trucks are
    # never marked blocked (one truck hidden behind another keeps its full return).
    b0 = scene.sc_pos.shape[1]
    blocked[:, b0:b0 + scene.blk_lo.shape[1]] = False
    env_db = rcs - 40.0 * np.log10(np.maximum(r, 1.0)) - 2.0 * blockage_db * blocked

    user = scene.user_pos
    length = np.concatenate([np.linalg.norm(user - scene.bs, axis=-1)[:, None],
                             np.linalg.norm(scene.sc_pos - scene.bs, axis=-1)
                             + np.linalg.norm(user[:, None, :] - scene.sc_pos, axis=-1)], axis=1)
    user_dbm = TX_POWER_DBM + mp.gain_db + 10.0 * np.log10(mp.h.shape[1])

    maps = [_range_angle_map(r, direction_cosine(centre, scene.bs), env_db, ENV_FLOOR_DB, cfg, rng),
            _range_angle_map(length, mp.u, user_dbm, PILOT_FLOOR_DBM, cfg, rng)]
    return np.stack(maps, axis=1).astype(np.float32)


def _range_angle_map(r: np.ndarray, u: np.ndarray, power_db: np.ndarray, floor_db: float, cfg: SensorConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """Targets (N, O) at range ``r``, direction cosine ``u``, power ``power_db`` -> (N, R, A) dB map."""
    r_edges = np.linspace(0.0, cfg.radar_max_range_m, cfg.radar_range_bins + 1)
    r_centres, r_step = (r_edges[:-1] + r_edges[1:]) / 2, r_edges[1] - r_edges[0]
    u_centres = -1.0 + (2.0 * np.arange(cfg.radar_angle_bins) + 1.0) / cfg.radar_angle_bins
    u_step = 2.0 / cfg.radar_angle_bins
    w_r = np.exp(-0.5 * ((r[..., None] - r_centres) / (0.7 * r_step)) ** 2)  # (N, O, R)
    w_u = np.exp(-0.5 * ((u[..., None] - u_centres) / (0.7 * u_step)) ** 2)  # (N, O, A)
    power = np.einsum("no,nor,noa->nra", 10.0 ** (power_db / 10.0), w_r, w_u)
    return 10.0 * np.log10(power + 10.0 ** (floor_db / 10.0)) + rng.normal(0.0, cfg.radar_noise_db, power.shape)


def gps(scene: Scene, cfg: SensorConfig, rng: np.random.Generator, dt: float) -> np.ndarray:
    """Two noisy fixes (N, 6) float32: current position and the one ``dt`` seconds earlier."""
    now = scene.user_pos + rng.normal(0.0, cfg.gps_noise_m, scene.user_pos.shape)
    before = scene.user_pos - scene.user_vel * dt + rng.normal(0.0, cfg.gps_noise_m, scene.user_pos.shape)
    return np.concatenate([now, before], axis=1).astype(np.float32)


def rf(mp: Multipath, cfg: SensorConfig, rng: np.random.Generator) -> np.ndarray:
    """Received power (dBm) of the user's pilot on ``rf_beams`` wide beams (N, rf_beams) float32.

    The wide beams are a DFT codebook of an ``rf_beams``-element sub-array (the first
    elements of the BS ULA), so they are ``M / rf_beams`` times wider than the narrow
    beams; transmit power 23 dBm; Gaussian measurement noise of ``rf_noise_db``.
    """
    m = mp.h.shape[1]
    k = min(cfg.rf_beams, m)
    sub = mp.h[:, :k] * np.sqrt(m / k)  # the sub-array's own normalisation
    gain = beam_gains(sub, dft_codebook(k, cfg.rf_beams))
    p = TX_POWER_DBM + 10.0 * np.log10(gain + 1e-30) + rng.normal(0.0, cfg.rf_noise_db, gain.shape)
    return p.astype(np.float32)
