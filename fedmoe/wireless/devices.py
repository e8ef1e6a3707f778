"""Heterogeneous device profiles and their per-round latency and energy.

A drop places ``K`` devices uniformly (by area) in the annulus ``r_min <= d_2D <= R`` of
:class:`~fedmoe.config.CellConfig` around the base station, draws each link's LoS state
with the TR 38.901 Table 7.4.2-1 probability, its path loss (Table 7.4.1-1), log-normal
shadowing (same table) and small-scale fading (:mod:`fedmoe.wireless.fading`), an azimuth
uniform in ``[0, 2π)`` and the link budget of :mod:`fedmoe.wireless.link_budget`; the
effective linear channel power gain is::

    h_k = 10^(-(PL_k + SF_k) / 10) * |g_k|^2 * G_BS,k * 10^(G_UT / 10) * N0 / (N0 + I0_k)

with ``G_BS,k`` the base station's receive beamforming gain (1 with ``bs_array_gain = "none"``),
``G_UT`` the device antenna gain and ``I0_k`` the inter-cell interference PSD
(:mod:`fedmoe.wireless.interference`, 0 without interference). The last factor refers the
interference to the thermal noise ``N0``, so ``P_k h_k / (N0 b B_min)`` is the SINR and every rate
computed from ``gain`` with the noise ``N0`` is a SINR rate.

Transmit power, compute speed and energy per FLOP are drawn uniformly from the ranges of
:class:`~fedmoe.config.DeviceProfileConfig` (power uniform in dBm, then capped so that
``P_k + G_UT`` stays within ``ut_max_eirp_dbm``). Sensing costs per modality come from its
``sensing`` table. The azimuths, NLoS array channels and interferers come from a child generator
(``rng.spawn``), so the other draws are those of a drop without them.

Per-round cost of device ``k`` (``docs/architecture.md``, "The wireless and device layer"; [P001]):

* latency ``T_k = T_sense,k + F_k / f_k + bits_k / R_k``,
* energy  ``E_k = e_k F_k + P_k bits_k / R_k + E_sense,k``,

with ``F_k`` the FLOPs of the local work, ``f_k`` the compute speed (FLOP/s), ``e_k`` the
energy per FLOP, and ``R_k`` the uplink rate (:mod:`fedmoe.wireless.ofdma`). Sensing is
sequential: a device acquires its modalities one after another, so times and energies add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fedmoe.config import MODALITIES, WirelessConfig
from fedmoe.wireless import fading as _fading
from fedmoe.wireless import pathloss as _pl
from fedmoe.wireless.antenna import direction_to_beam
from fedmoe.wireless.interference import neighbour_interference_psd
from fedmoe.wireless.link_budget import bs_array_gain, direction_cosine, eirp_capped_power_dbm
from fedmoe.wireless.ofdma import dbm_to_w, linear_to_db, noise_psd_w_hz, snr_per_rb, uplink_rate, upload_time


@dataclass(frozen=True)
class DeviceProfiles:
    """Per-device parameters, one entry (row) per device; arrays of length ``K``.

    ``sensing_time_s`` and ``sensing_energy_j`` have shape ``(K, len(modalities))``.
    ``gain`` is the effective linear channel power gain ``h_k`` (module docstring): large-scale,
    fading, array and antenna gains, referred to the thermal noise. ``array_gain`` is ``G_BS,k``
    (linear), ``interference_w_hz`` the interference PSD ``I0_k`` and ``direction_u`` the direction
    cosine of the device at the base station's array; they default to 1, 0 and NaN.
    """

    tx_power_w: np.ndarray
    compute_flops: np.ndarray
    energy_per_flop_j: np.ndarray
    sensing_time_s: np.ndarray
    sensing_energy_j: np.ndarray
    gain: np.ndarray
    distance_m: np.ndarray
    los: np.ndarray
    pathloss_db: np.ndarray
    shadowing_db: np.ndarray
    fading: np.ndarray
    modalities: tuple[str, ...] = MODALITIES
    array_gain: np.ndarray = field(default=None)  # type: ignore[assignment]
    interference_w_hz: np.ndarray = field(default=None)  # type: ignore[assignment]
    direction_u: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        k = len(self.tx_power_w)
        for name, fill in (("array_gain", 1.0), ("interference_w_hz", 0.0), ("direction_u", np.nan)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(k, fill))
        for name in ("compute_flops", "energy_per_flop_j", "gain", "distance_m", "los",
                     "pathloss_db", "shadowing_db", "fading", "array_gain", "interference_w_hz", "direction_u"):
            if np.shape(getattr(self, name)) != (k,):
                raise ValueError(f"DeviceProfiles.{name} has shape {np.shape(getattr(self, name))}, expected ({k},)")
        for name in ("sensing_time_s", "sensing_energy_j"):
            if np.shape(getattr(self, name)) != (k, len(self.modalities)):
                raise ValueError(
                    f"DeviceProfiles.{name} has shape {np.shape(getattr(self, name))}, "
                    f"expected ({k}, {len(self.modalities)})"
                )

    def __len__(self) -> int:
        return len(self.tx_power_w)

    def subset(self, index: ArrayLike) -> "DeviceProfiles":
        """The profiles of the devices selected by ``index`` (integer indices or boolean mask)."""
        fields = {name: getattr(self, name)[index] for name in self.__dataclass_fields__ if name != "modalities"}
        return DeviceProfiles(**fields, modalities=self.modalities)

    def sensing(self, used: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sensing time and energy per device, summed over the modalities in the ``(K, M)``
        boolean mask ``used`` (all modalities when None)."""
        if used is None:
            return self.sensing_time_s.sum(axis=1), self.sensing_energy_j.sum(axis=1)
        mask = np.asarray(used, dtype=bool)
        if mask.shape != self.sensing_time_s.shape:
            raise ValueError(f"modality mask has shape {mask.shape}, expected {self.sensing_time_s.shape}")
        return (self.sensing_time_s * mask).sum(axis=1), (self.sensing_energy_j * mask).sum(axis=1)


def drop_distances(rng: np.random.Generator, num_devices: int, r_min: float, r_max: float) -> np.ndarray:
    """2-D distances uniform by area in the annulus: ``d = sqrt(U(r_min^2, r_max^2))``."""
    return np.sqrt(rng.uniform(r_min**2, r_max**2, num_devices))


def sample_device_profiles(cfg: WirelessConfig, num_devices: int, rng: np.random.Generator,
                           min_snr_db: float | None = None) -> DeviceProfiles:
    """Drop ``num_devices`` devices in the cell and draw their channels and hardware (module docstring).

    With ``min_snr_db``, devices whose per-RB SNR (:func:`rb_snr_db`) falls below it are
    discarded and more are drawn until ``num_devices`` remain (admission control: a device
    limited by its power gains little from more bandwidth and would dominate every round).
    """
    if num_devices < 0:
        raise ValueError(f"num_devices must be >= 0, got {num_devices}")
    if min_snr_db is None or num_devices == 0:
        return _drop(cfg, num_devices, rng)
    kept: list[DeviceProfiles] = []
    have = 0
    while have < num_devices:
        if len(kept) == 100:
            raise ValueError(f"min_snr_db={min_snr_db:g} dB admits almost no device of this cell")
        prof = _drop(cfg, max(num_devices, 16), rng)
        prof = prof.subset(rb_snr_db(prof, cfg) >= min_snr_db)
        kept.append(prof)
        have += len(prof)
    return _concat(kept).subset(slice(0, num_devices))


def _concat(parts: list[DeviceProfiles]) -> DeviceProfiles:
    names = [n for n in DeviceProfiles.__dataclass_fields__ if n != "modalities"]
    return DeviceProfiles(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names},
                          modalities=parts[0].modalities)


def _drop(cfg: WirelessConfig, num_devices: int, rng: np.random.Generator) -> DeviceProfiles:
    ch, dev = cfg.channel, cfg.devices
    d2d = drop_distances(rng, num_devices, cfg.cell.min_distance_m, cfg.cell.radius_m)
    los = rng.random(num_devices) < _pl.los_probability(ch.scenario, d2d, ch.ut_height_m)
    pl = _pl.pathloss_db(ch.scenario, d2d, ch.bs_height_m, ch.ut_height_m, ch.carrier_ghz, los)
    sf = _pl.sample_shadowing_db(rng, ch.scenario, los) if ch.shadowing else np.zeros(num_devices)
    g = _fading.fading_power(rng, ch.fading, los, ch.rician_k_db)

    power = dbm_to_w(eirp_capped_power_dbm(rng.uniform(*dev.tx_power_dbm, num_devices),
                                           ch.ut_antenna_gain_dbi, ch.ut_max_eirp_dbm))
    flops = rng.uniform(*dev.compute_flops, num_devices)
    epf = rng.uniform(*dev.energy_per_flop_j, num_devices)
    mods = tuple(m for m in MODALITIES if m in dev.sensing)
    t_sense = np.array([dev.sensing[m].time_s for m in mods], dtype=np.float64)
    e_sense = np.array([dev.sensing[m].time_s * dev.sensing[m].power_w for m in mods], dtype=np.float64)

    side = rng.spawn(1)[0]
    u = direction_cosine(side.uniform(0.0, 2.0 * np.pi, num_devices), d2d, ch.bs_height_m, ch.ut_height_m)
    if ch.bs_array_gain == "codebook":
        g_bs, beams = bs_array_gain(side, u, los, ch.num_antennas, ch.codebook_size)
    else:
        g_bs, beams = np.ones(num_devices), direction_to_beam(u, ch.codebook_size)
    i0 = (neighbour_interference_psd(cfg, side, beams) if cfg.interference.model == "neighbours"
          else np.zeros(num_devices))
    n0 = noise_psd_w_hz(ch.noise_psd_dbm_hz, ch.noise_figure_db)
    gain = 10.0 ** (-(pl + sf) / 10.0) * g * g_bs * 10.0 ** (ch.ut_antenna_gain_dbi / 10.0) * (n0 / (n0 + i0))
    return DeviceProfiles(
        tx_power_w=power,
        compute_flops=flops,
        energy_per_flop_j=epf,
        sensing_time_s=np.broadcast_to(t_sense, (num_devices, len(mods))).copy(),
        sensing_energy_j=np.broadcast_to(e_sense, (num_devices, len(mods))).copy(),
        gain=gain,
        distance_m=d2d,
        los=los,
        pathloss_db=np.asarray(pl, dtype=np.float64),
        shadowing_db=np.asarray(sf, dtype=np.float64),
        fading=g,
        modalities=mods,
        array_gain=g_bs,
        interference_w_hz=i0,
        direction_u=u,
    )


def rb_snr_db(profiles: DeviceProfiles, cfg: WirelessConfig) -> np.ndarray:
    """Per-RB SNR ``10 log10(P_k h_k / (N0 B_min))`` in dB (:func:`fedmoe.wireless.ofdma.snr_per_rb`);
    the SINR when interference is modelled (``h_k`` is referred to the thermal noise)."""
    n0 = noise_psd_w_hz(cfg.channel.noise_psd_dbm_hz, cfg.channel.noise_figure_db)
    return linear_to_db(snr_per_rb(profiles.tx_power_w, profiles.gain, n0, cfg.uplink.resource_block_hz))


def equal_share_rate(profiles: DeviceProfiles, cfg: WirelessConfig) -> np.ndarray:
    """Uplink rate of each device when the ``K`` devices split the band evenly: ``⌊N_rb / K⌋``
    resource blocks each (at least one)."""
    up = cfg.uplink
    rb = max(1, up.num_resource_blocks // max(len(profiles), 1))
    n0 = noise_psd_w_hz(cfg.channel.noise_psd_dbm_hz, cfg.channel.noise_figure_db)
    return uplink_rate(np.full(len(profiles), rb), up.resource_block_hz, profiles.tx_power_w, profiles.gain, n0)


def allocation_inputs(profiles: DeviceProfiles, cfg: WirelessConfig, bits: ArrayLike, flops: ArrayLike,
                      used: ArrayLike | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`fedmoe.wireless.allocator.min_round_latency` and
    :func:`~fedmoe.wireless.allocator.select_devices` (all but ``num_rb`` and ``deadline``)."""
    return {
        "bits": np.asarray(bits, dtype=np.float64),
        "gains": profiles.gain,
        "powers": profiles.tx_power_w,
        "fixed_latency": fixed_latency(profiles, flops, used),
        "rb_hz": cfg.uplink.resource_block_hz,
        "noise_psd_w_hz": noise_psd_w_hz(cfg.channel.noise_psd_dbm_hz, cfg.channel.noise_figure_db),
    }


def fixed_latency(profiles: DeviceProfiles, flops: ArrayLike, used: ArrayLike | None = None) -> np.ndarray:
    """The part of the latency that does not depend on bandwidth: ``T_sense,k + F_k / f_k``.

    This is the ``fixed_latency`` input of :mod:`fedmoe.wireless.allocator`.
    """
    t_sense, _ = profiles.sensing(used)
    return t_sense + np.asarray(flops, dtype=np.float64) / profiles.compute_flops


def device_latency(profiles: DeviceProfiles, flops: ArrayLike, bits: ArrayLike, rate_bps: ArrayLike,
                   used: ArrayLike | None = None) -> np.ndarray:
    """``T_k = T_sense,k + F_k / f_k + bits_k / R_k`` per device (``inf`` if ``R_k = 0 < bits_k``)."""
    return fixed_latency(profiles, flops, used) + upload_time(bits, rate_bps)


def device_energy(profiles: DeviceProfiles, flops: ArrayLike, bits: ArrayLike, rate_bps: ArrayLike,
                  used: ArrayLike | None = None) -> np.ndarray:
    """``E_k = e_k F_k + P_k bits_k / R_k + E_sense,k`` per device, in joules."""
    _, e_sense = profiles.sensing(used)
    t_up = upload_time(bits, rate_bps)
    e_tx = np.where(np.isinf(t_up), np.inf, profiles.tx_power_w * np.where(np.isinf(t_up), 0.0, t_up))
    return profiles.energy_per_flop_j * np.asarray(flops, dtype=np.float64) + e_tx + e_sense
