r"""Devices that move between rounds: positions, path loss, shadowing and LoS state on the virtual clock.

``wireless.mobility`` (:class:`~fedmoe.config.MobilityConfig`) gives the model and the device classes;
``model = "none"`` (the default) leaves every device where the drop put it and this module unused.

**Positions.** The base station is at the origin; device :math:`k` starts where the drop put it
(:func:`fedmoe.wireless.devices.sample_device_profiles`: 2-D distance :math:`d_k` and an azimuth
:math:`\phi_k` consistent with its direction cosine :math:`u_k = \cos(\mathrm{el}_k)\sin\phi_k`), so
:math:`p_k = d_k(\cos\phi_k, \sin\phi_k)`. ``random-direction``: it keeps a heading :math:`v_k`
(unit vector, uniform in angle) and a speed :math:`s_k` (uniform in its class's ``speed_mps``) for the
run, and between virtual times :math:`t` and :math:`t'` travels the path length
:math:`L_k = s_k (t' - t)` in a straight line, reflected specularly (:math:`v \leftarrow v - 2 (v \cdot n) n`,
:math:`n = p / |p|`) wherever it meets the cell border :math:`|p| = R` or the minimum-distance circle
:math:`|p| = r_\min` (:func:`move_in_annulus`). Specular reflection keeps the uniform distribution of
positions and headings invariant (a billiard preserves Liouville measure), so devices dropped uniformly
by area stay uniform by area.

**Shadowing** follows with the spatial correlation of [TR38901] §7.5 (the large-scale parameters are
spatially correlated with an exponential autocorrelation of correlation distance :math:`d_\mathrm{cor}`,
Table 7.5-6: SF 10 m (UMi LoS), 13 m (UMi NLoS), 37 m (UMa LoS), 50 m (UMa NLoS)). Along a device's
path this is the AR(1) recursion in travelled distance :math:`\Delta d = L_k` (:func:`ar1_step`),

.. math::

    z \leftarrow \rho z + \sqrt{1 - \rho^2}\,\xi, \qquad \rho = e^{-\Delta d / d_\mathrm{cor}},
    \qquad \xi \sim \mathcal N(0, 1),

on a standard-normal latent :math:`z`; the shadowing is :math:`SF = \sigma_{SF} z`, so it stays
:math:`\mathcal N(0, \sigma_{SF}^2)` ([TR38901] Table 7.4.1-1) with :math:`\mathrm{corr}(SF(t), SF(t'))
= e^{-\Delta d / d_\mathrm{cor}}`. LoS and NLoS have separate latents (as the standard generates the
LoS and NLoS parameter maps separately), each with its own :math:`d_\mathrm{cor}` and both advanced
at every move; a device's shadowing is the one of its current state. The drop's shadowing starts the
latent of the drop's state (:math:`z = SF / \sigma_{SF}`); the other starts from a fresh draw.

**LoS state** follows with the spatially consistent procedure of [TR38901] §7.6.3.3: a standard-normal
latent :math:`z_\mathrm{LoS}` follows the same AR(1) with the LoS correlation distance of Table 7.6.3.1-2
(50 m for UMi and UMa), and the link is LoS when :math:`\Phi(z_\mathrm{LoS}) < \Pr_\mathrm{LoS}(d)`
(Table 7.4.2-1, :func:`fedmoe.wireless.pathloss.los_probability`), :math:`\Phi` the standard normal CDF.
:math:`\Phi(z)` is uniform at every moment, so the state is LoS with probability exactly
:math:`\Pr_\mathrm{LoS}(d)` at every distance, and it flips the less often the longer
:math:`d_\mathrm{cor}`. The latent starts uniform in the part of :math:`(0, 1)` that gives the drop's state
(:math:`[0, \Pr_\mathrm{LoS})` for LoS), so the drop is a draw of the same process.

**The channel** of a moved device is the drop's with path loss, shadowing, LoS state (and the base
station's array gain) replaced: :math:`h_k \leftarrow h_k \cdot 10^{(PL_0 + SF_0 - PL - SF)/10}\,G_{BS} / G_{BS,0}`
(:mod:`fedmoe.wireless.devices` for the product). With ``bs_array_gain = "codebook"`` a LoS link gets
the best-beam gain toward its new direction and an NLoS link a scattered gain drawn once per device
(the drop's, if it was NLoS there); interference stays the drop's. Small-scale fading is redrawn each
round on top of this (:func:`fedmoe.federated.selection.round_profiles`), with the current LoS state.
Moving itself costs no energy the server accounts for: only the round's compute and upload are charged.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from fedmoe.config import MobilityConfig, WirelessConfig
from fedmoe.wireless import pathloss as _pl
from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.link_budget import direction_cosine, los_gain, scattered_gain

log = logging.getLogger(__name__)

SHADOWING_CORRELATION_M = {("umi", True): 10.0, ("umi", False): 13.0, ("uma", True): 37.0, ("uma", False): 50.0}
"""Shadowing correlation distance in m by (scenario, LoS), [TR38901] Table 7.5-6."""

LOS_CORRELATION_M = {"umi": 50.0, "uma": 50.0}
"""Correlation distance of the LoS state in m, [TR38901] Table 7.6.3.1-2."""

MAX_BOUNCES = 100_000
"""Reflections :func:`move_in_annulus` follows per call before it stops a device (a path grazing the border)."""

_EDGE = 1e-9  # m: travel left below this is done


def class_of_devices(shares: list[float], num_devices: int) -> np.ndarray:
    """(K,) class index of every device: the classes take consecutive blocks of devices, in order, of sizes
    the shares times ``K`` rounded by largest remainder (so they add up to ``K``)."""
    quota = np.asarray(shares, dtype=np.float64) / np.sum(shares) * num_devices
    counts = np.floor(quota).astype(np.int64)
    extra = num_devices - int(counts.sum())
    counts[np.argsort(-(quota - counts), kind="stable")[:extra]] += 1
    return np.repeat(np.arange(len(shares)), counts)


def move_in_annulus(pos: np.ndarray, heading: np.ndarray, travel: np.ndarray, r_min: float,
                    r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Move points ``pos`` (K, 2) along unit ``heading`` (K, 2) by ``travel`` (K,) metres inside the annulus
    ``r_min <= |p| <= r_max``, reflecting specularly at both circles (module docstring).

    Returns the new positions and headings. A device still moving after :data:`MAX_BOUNCES` reflections
    (a path that grazes the border, of probability ~0) stops there and a warning is logged.
    """
    pos, heading = np.array(pos, dtype=np.float64), np.array(heading, dtype=np.float64)
    rem = np.array(travel, dtype=np.float64)
    active = rem > _EDGE
    for _ in range(MAX_BOUNCES):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        p, v, left = pos[idx], heading[idx], rem[idx]
        b = np.einsum("ij,ij->i", p, v)
        pp = np.einsum("ij,ij->i", p, p)
        t_out = -b + np.sqrt(np.maximum(b * b - (pp - r_max**2), 0.0))  # forward hit of |p| = R (from inside)
        disc = b * b - (pp - r_min**2)
        t_in = np.where((disc > 0) & (b < 0), -b - np.sqrt(np.maximum(disc, 0.0)), np.inf)  # toward the inner circle
        t_in = np.where(t_in >= 0, t_in, np.inf)
        t_hit = np.maximum(np.minimum(t_out, t_in), 0.0)
        step = np.minimum(left, t_hit)
        p = p + step[:, None] * v
        hit = left > t_hit
        n = p[hit] / np.linalg.norm(p[hit], axis=1, keepdims=True)
        v[hit] = v[hit] - 2.0 * np.einsum("ij,ij->i", v[hit], n)[:, None] * n
        r = np.linalg.norm(p, axis=1, keepdims=True)  # rounding may leave a point a hair outside: put it back
        p = p * (np.clip(r, r_min, r_max) / np.where(r > 0, r, 1.0))
        pos[idx], heading[idx], rem[idx] = p, v, left - step
        active[idx] = rem[idx] > _EDGE
    else:
        if active.any():
            log.warning("mobility: %d device(s) grazing the cell border stopped after %d reflections",
                        int(active.sum()), MAX_BOUNCES)
    return pos, heading


def ar1_step(z: np.ndarray, step_m: np.ndarray, d_cor_m: float | np.ndarray, xi: np.ndarray) -> np.ndarray:
    r"""One step of the AR(1) latent in travelled distance: :math:`\rho z + \sqrt{1 - \rho^2}\,\xi`,
    :math:`\rho = e^{-\Delta d / d_\mathrm{cor}}` ([TR38901] §7.5 exponential autocorrelation; module docstring)."""
    rho = np.exp(-np.asarray(step_m, dtype=np.float64) / d_cor_m)
    return rho * z + np.sqrt(1.0 - rho * rho) * xi


def los_latent_from_state(rng: np.random.Generator, los: np.ndarray, p_los: np.ndarray) -> np.ndarray:
    """A standard-normal latent per device whose threshold at ``p_los`` gives ``los``: ``Φ⁻¹(U)``, ``U``
    uniform in ``[0, p)`` for LoS and ``[p, 1)`` for NLoS (module docstring)."""
    u = rng.random(np.shape(los))
    u = np.where(los, u * p_los, p_los + u * (1.0 - p_los))
    return ndtri(np.clip(u, 1e-15, 1.0 - 1e-15))


class Mobility:
    """Positions, shadowing latents and LoS latents of ``K`` moving devices (module docstring).

    Parameters
    ----------
    base : DeviceProfiles
        The drop (:func:`fedmoe.wireless.devices.sample_device_profiles`): distances, LoS states, path loss,
        shadowing, gains and direction cosines of the devices where they start.
    wireless : WirelessConfig
        The cell, channel and ``mobility`` settings (``mobility.model`` must not be ``"none"``).
    """

    def __init__(self, base: DeviceProfiles, wireless: WirelessConfig) -> None:
        cfg: MobilityConfig = wireless.mobility
        if cfg.model == "none":
            raise ValueError("Mobility: wireless.mobility.model is 'none' (use Mobility.from_config, which gives None)")
        cell, ch = wireless.cell, wireless.channel
        d = np.asarray(base.distance_m, dtype=np.float64)
        if not (np.isfinite(d).all() and np.isfinite(base.direction_u).all()) or \
                (d < cell.min_distance_m - 1e-9).any() or (d > cell.radius_m + 1e-9).any():
            raise ValueError("Mobility: the devices need distances and directions inside the cell "
                             "(profiles dropped by fedmoe.wireless.devices.sample_device_profiles)")
        self.base, self.wireless, self.cfg = base, wireless, cfg
        k = len(base)
        rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0x30B1]))
        self.rng = rng
        el = np.arctan2(ch.bs_height_m - ch.ut_height_m, d)
        sin_az = np.clip(base.direction_u / np.cos(el), -1.0, 1.0)
        az = np.arcsin(sin_az)
        az = np.where(rng.random(k) < 0.5, az, np.pi - az)  # u fixes sin(az): either side of the array axis
        self.pos = d[:, None] * np.stack([np.cos(az), np.sin(az)], axis=1)
        theta = rng.uniform(0.0, 2.0 * np.pi, k)
        self.heading = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        classes = list(cfg.classes.values())
        self.device_class = class_of_devices([c.share for c in classes], k)
        lo = np.array([c.speed_mps[0] for c in classes])[self.device_class]
        hi = np.array([c.speed_mps[1] for c in classes])[self.device_class]
        self.speed_mps = lo + (hi - lo) * rng.random(k)
        los = np.asarray(base.los, dtype=bool)
        self.z_los = los_latent_from_state(rng, los, _pl.los_probability(ch.scenario, d, ch.ut_height_m))
        std = _pl.shadowing_std_db(ch.scenario, los)
        drop_z = np.asarray(base.shadowing_db, dtype=np.float64) / std
        fresh = rng.standard_normal((2, k))
        self.z_sf = {True: np.where(los, drop_z, fresh[0]), False: np.where(los, fresh[1], drop_z)}
        g_scatter = scattered_gain(rng, k, ch.num_antennas, ch.codebook_size)[0] \
            if ch.bs_array_gain == "codebook" else np.ones(k)
        self.nlos_array_gain = np.where(los, g_scatter, base.array_gain)
        self.time_s = 0.0
        self.travelled_m = np.zeros(k)

    @classmethod
    def from_config(cls, wireless: WirelessConfig, base: DeviceProfiles) -> "Mobility | None":
        """The mobility of ``wireless.mobility``; None with ``model = "none"`` (the default)."""
        return None if wireless.mobility.model == "none" else cls(base, wireless)

    # ------------------------------------------------------------------ correlation distances

    def shadowing_correlation_m(self, los: bool) -> float:
        """:math:`d_\\mathrm{cor}` of the shadowing in state ``los``: ``mobility.shadowing_correlation_m`` or
        :data:`SHADOWING_CORRELATION_M`."""
        own = self.cfg.shadowing_correlation_m
        return float(own) if own is not None else SHADOWING_CORRELATION_M[(self.wireless.channel.scenario, los)]

    @property
    def los_correlation_m(self) -> float:
        """Correlation distance of the LoS latent: ``mobility.los_correlation_m`` or :data:`LOS_CORRELATION_M`."""
        own = self.cfg.los_correlation_m
        return float(own) if own is not None else LOS_CORRELATION_M[self.wireless.channel.scenario]

    # ------------------------------------------------------------------ moving

    def advance_to(self, clock_s: float) -> None:
        """Move every device from :attr:`time_s` to virtual time ``clock_s`` (an earlier time leaves them)."""
        dt = float(clock_s) - self.time_s
        if not dt > 0:
            return
        travel = self.speed_mps * dt
        cell = self.wireless.cell
        self.pos, self.heading = move_in_annulus(self.pos, self.heading, travel, cell.min_distance_m, cell.radius_m)
        xi = self.rng.standard_normal((3, len(travel)))
        self.z_los = ar1_step(self.z_los, travel, self.los_correlation_m, xi[0])
        for j, state in enumerate((True, False)):
            self.z_sf[state] = ar1_step(self.z_sf[state], travel, self.shadowing_correlation_m(state), xi[1 + j])
        self.travelled_m = self.travelled_m + travel
        self.time_s = float(clock_s)

    @property
    def distance_m(self) -> np.ndarray:
        """(K,) the devices' 2-D distances to the base station now."""
        return np.linalg.norm(self.pos, axis=1)

    def profiles(self) -> DeviceProfiles:
        """The drop's profiles with the devices where they are now (module docstring, "The channel")."""
        ch, base = self.wireless.channel, self.base
        d = self.distance_m
        los = ndtr(self.z_los) < _pl.los_probability(ch.scenario, d, ch.ut_height_m)
        pl = _pl.pathloss_db(ch.scenario, d, ch.bs_height_m, ch.ut_height_m, ch.carrier_ghz, los)
        if ch.shadowing:
            sf = _pl.shadowing_std_db(ch.scenario, los) * np.where(los, self.z_sf[True], self.z_sf[False])
        else:
            sf = np.zeros(len(d))
        u = direction_cosine(np.arctan2(self.pos[:, 1], self.pos[:, 0]), d, ch.bs_height_m, ch.ut_height_m)
        if ch.bs_array_gain == "codebook":
            g_bs = np.where(los, los_gain(u, ch.num_antennas, ch.codebook_size)[0], self.nlos_array_gain)
        else:
            g_bs = base.array_gain
        gain = base.gain * 10.0 ** ((base.pathloss_db + base.shadowing_db - pl - sf) / 10.0) * g_bs / base.array_gain
        return replace(base, gain=gain, distance_m=d, los=los, pathloss_db=np.asarray(pl, dtype=np.float64),
                       shadowing_db=np.asarray(sf, dtype=np.float64), array_gain=g_bs, direction_u=u)

    def at(self, clock_s: float) -> DeviceProfiles:
        """:meth:`advance_to` ``clock_s``, then :meth:`profiles`."""
        self.advance_to(clock_s)
        return self.profiles()

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """What later rounds depend on: positions, headings, latents, the time and the generator (copies)."""
        return copy.deepcopy({"pos": self.pos, "heading": self.heading, "z_los": self.z_los,
                              "z_sf_los": self.z_sf[True], "z_sf_nlos": self.z_sf[False], "time_s": self.time_s,
                              "travelled_m": self.travelled_m, "rng": self.rng.bit_generator.state})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (checked against the number of devices)."""
        k = len(self.base)
        arrays = {name: np.asarray(state[name], dtype=np.float64)
                  for name in ("pos", "heading", "z_los", "z_sf_los", "z_sf_nlos", "travelled_m")}
        for name, arr in arrays.items():
            if arr.shape[:1] != (k,):
                raise ValueError(f"Mobility: the saved {name} has {arr.shape[0] if arr.ndim else 0} devices, "
                                 f"there are {k}")
        self.pos, self.heading, self.z_los = arrays["pos"].copy(), arrays["heading"].copy(), arrays["z_los"].copy()
        self.z_sf = {True: arrays["z_sf_los"].copy(), False: arrays["z_sf_nlos"].copy()}
        self.travelled_m = arrays["travelled_m"].copy()
        self.time_s = float(state["time_s"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])


WALK_TIMES_S = (0.0, 5.0, 10.0, 20.0, 40.0, 60.0)
"""Virtual times (s) of the SNR table of ``docs/wireless.md``, "Mobility"."""


def snr_walk_rows(wireless: WirelessConfig, speeds_mps: dict[str, float], times_s=WALK_TIMES_S,
                  drop_seed: int = 0) -> list[dict[str, Any]]:
    """Per-RB SNR (:func:`fedmoe.wireless.devices.rb_snr_db`) of one device over time at each of ``speeds_mps``
    (``{name: speed}``): the same drop (seed ``drop_seed``), heading and correlated draws (``wireless.mobility``'s
    seed), only the speed differs. One row per time: ``{"time_s", name: (distance m, LoS, SNR dB), ...}``."""
    from fedmoe.wireless.devices import rb_snr_db, sample_device_profiles

    walks = {}
    for name, speed in speeds_mps.items():
        mobility = {**wireless.mobility.model_dump(), "model": "random-direction",
                    "classes": {name: {"share": 1.0, "speed_mps": (speed, speed)}}}
        cfg = WirelessConfig.model_validate({**wireless.model_dump(), "mobility": mobility})
        walks[name] = (cfg, Mobility(sample_device_profiles(cfg, 1, np.random.default_rng(drop_seed)), cfg))
    rows = []
    for t in times_s:
        row: dict[str, Any] = {"time_s": float(t)}
        for name, (cfg, walk) in walks.items():
            prof = walk.at(t)
            row[name] = (float(prof.distance_m[0]), bool(prof.los[0]), float(rb_snr_db(prof, cfg)[0]))
        rows.append(row)
    return rows


def format_snr_walk(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`snr_walk_rows` as a markdown table (the one in ``docs/wireless.md``)."""
    names = [k for k in rows[0] if k != "time_s"]
    head = "| t (s) | " + " | ".join(f"{n}: d (m) | LoS | SNR (dB)" for n in names) + " |"
    lines = [head, "| ---: | " + " | ".join("---: | --- | ---:" for _ in names) + " |"]
    for row in rows:
        cells = [f"{row[n][0]:.1f} | {'LoS' if row[n][1] else 'NLoS'} | {row[n][2]:.1f}" for n in names]
        lines.append(f"| {row['time_s']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["LOS_CORRELATION_M", "SHADOWING_CORRELATION_M", "WALK_TIMES_S", "Mobility", "ar1_step", "class_of_devices",
           "format_snr_walk", "los_latent_from_state", "move_in_annulus", "snr_walk_rows"]
