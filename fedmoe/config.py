"""Pydantic (v2) models for every fedmoe configuration, and the TOML loader.

Every model forbids unknown keys, so a typo is an error rather than a silently
ignored setting. :func:`load_config` turns a validation failure into a
:class:`ConfigError` whose message is one line per problem, naming the dotted
field, what is allowed and what was given, e.g.::

    config error: data.num_samples: must be > 0 (got -5)

The command line prints that line and exits with status 2; it never shows a traceback.
"""

from __future__ import annotations

import math
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedmoe.errors import UsageError
from fedmoe.registry import Registry, UnknownNameError

MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar", "gps", "rf")
"""The sensing modalities fedmoe knows, in canonical order (costliest input first)."""

Modality = Literal["camera", "lidar", "radar", "gps", "rf"]


class ConfigError(UsageError):
    """A configuration problem; ``str(err)`` is ready to print to a user."""


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_ordered(model: BaseModel, names: tuple[str, ...]) -> None:
    """Raise if any ``(lo, hi)`` range field among ``names`` has ``lo > hi``."""
    for name in names:
        lo, hi = getattr(model, name)
        if lo > hi:
            raise ValueError(f"{name}: lower bound {lo:g} exceeds upper bound {hi:g}")


# --------------------------------------------------------------------------- wireless
#
# NR numerology presets for the OFDMA uplink (``UplinkConfig.numerology``): channel bandwidth,
# subcarrier spacing, resource blocks. They live here, in the base layer, because the config
# resolves them while it validates.
#
# * Subcarrier spacing ``Δf = 15 · 2^μ kHz`` for numerology ``μ`` ([TS38211] §4.2, Table 4.2-1).
# * A resource block is 12 consecutive subcarriers ([TS38211] §4.4.4.1), so its width is ``B_RB = 12 Δf``.
# * The number of RBs a channel carries is the *maximum transmission bandwidth configuration*
#   ``N_RB`` of [TS38101-1] Table 5.3.2-1 (FR1) and [TS38101-2] Table 5.3.2-1 (FR2); the rest of
#   the channel bandwidth is guard band. A preset therefore sets
#   ``UplinkConfig.resource_block_hz = 12 Δf`` and ``total_bandwidth_hz = N_RB · 12 Δf`` (the occupied
#   band, not the nominal channel bandwidth), so that ``floor(B / B_min) = N_RB`` exactly.
# * Frequency ranges ([TS38101-1] §5.1, [TS38101-2] §5.1): FR1 410 MHz – 7.125 GHz, FR2-1
#   24.25 – 52.6 GHz. A preset may only be used with a carrier inside its range.
#
# Presets are registered by name in :data:`NUMEROLOGIES` (``fedmoe.registry.Registry``); add more
# with ``NUMEROLOGIES.register(name, Numerology(...))``.

FREQUENCY_RANGES_GHZ: dict[str, tuple[float, float]] = {"FR1": (0.41, 7.125), "FR2": (24.25, 52.6)}
"""Carrier frequency limits in GHz of FR1 and FR2-1 ([TS38101-1] §5.1, [TS38101-2] §5.1)."""

SUBCARRIERS_PER_RB = 12
"""[TS38211] §4.4.4.1: a resource block is 12 consecutive subcarriers."""


@dataclass(frozen=True)
class Numerology:
    """One channel configuration: frequency range, channel bandwidth, subcarrier spacing and ``N_RB``."""

    frequency_range: str
    channel_bandwidth_hz: float
    scs_hz: float
    num_rb: int

    def __post_init__(self) -> None:
        if self.frequency_range not in FREQUENCY_RANGES_GHZ:
            raise ValueError(f"frequency_range must be one of {sorted(FREQUENCY_RANGES_GHZ)}, "
                             f"got {self.frequency_range!r}")
        mu = math.log2(self.scs_hz / 15e3)
        if mu < 0 or mu != int(mu):
            raise ValueError(f"scs_hz must be 15 kHz * 2^mu, got {self.scs_hz:g}")
        if not 1 <= self.num_rb or self.transmission_bandwidth_hz > self.channel_bandwidth_hz:
            raise ValueError(f"num_rb={self.num_rb} RBs of {self.rb_hz:g} Hz do not fit in "
                             f"{self.channel_bandwidth_hz:g} Hz")

    @property
    def mu(self) -> int:
        """Numerology index ``μ = log2(Δf / 15 kHz)`` ([TS38211] Table 4.2-1)."""
        return int(round(math.log2(self.scs_hz / 15e3)))

    @property
    def rb_hz(self) -> float:
        """Resource-block width ``12 Δf``."""
        return SUBCARRIERS_PER_RB * self.scs_hz

    @property
    def transmission_bandwidth_hz(self) -> float:
        """Occupied bandwidth ``N_RB · 12 Δf`` (channel bandwidth minus the guard bands)."""
        return self.num_rb * self.rb_hz

    def contains(self, carrier_ghz: float) -> bool:
        """Whether ``carrier_ghz`` lies in this preset's frequency range."""
        lo, hi = FREQUENCY_RANGES_GHZ[self.frequency_range]
        return lo <= carrier_ghz <= hi


NUMEROLOGIES: Registry[Numerology] = Registry("numerology")
"""Named presets; ``N_RB`` from [TS38101-1] / [TS38101-2] Table 5.3.2-1."""

for _name, _fr, _bw_mhz, _scs_khz, _nrb in (
    ("fr1-20mhz-15khz", "FR1", 20, 15, 106),
    ("fr1-50mhz-15khz", "FR1", 50, 15, 270),
    ("fr1-20mhz-30khz", "FR1", 20, 30, 51),
    ("fr1-50mhz-30khz", "FR1", 50, 30, 133),
    ("fr1-100mhz-30khz", "FR1", 100, 30, 273),
    ("fr2-100mhz-120khz", "FR2", 100, 120, 66),
    ("fr2-200mhz-120khz", "FR2", 200, 120, 132),
    ("fr2-400mhz-120khz", "FR2", 400, 120, 264),
):
    NUMEROLOGIES.register(_name, Numerology(_fr, _bw_mhz * 1e6, _scs_khz * 1e3, _nrb))



class ChannelConfig(StrictModel):
    """Large- and small-scale channel between devices and the base station (3GPP TR 38.901)."""

    scenario: Literal["umi", "uma"] = Field("umi", description="TR 38.901 scenario: UMi-Street-Canyon or UMa")
    carrier_ghz: float = Field(28.0, ge=0.5, le=100.0, description="carrier frequency fc in GHz (38.901 range)")
    bs_height_m: float = Field(10.0, gt=1.0, le=150.0, description="base-station antenna height hBS")
    ut_height_m: float = Field(1.5, ge=1.0, le=22.5, description="default device antenna height hUT")
    shadowing: bool = Field(True, description="draw log-normal shadowing (sigma_SF from TR 38.901 Table 7.4.1-1)")
    fading: Literal["none", "rayleigh", "rician"] = Field(
        "rayleigh", description="small-scale fading of the power gain")
    rician_k_db: float = Field(9.0, ge=-20.0, le=40.0, description="Rician K-factor for LoS links, dB")
    noise_psd_dbm_hz: float = Field(-174.0, ge=-200.0, le=-100.0, description="thermal noise PSD N0, dBm/Hz")
    noise_figure_db: float = Field(9.0, ge=0.0, le=30.0, description="receiver noise figure, dB")
    num_antennas: int = Field(64, ge=1, le=1024, description="base-station ULA size M")
    codebook_size: int = Field(64, ge=1, le=4096, description="DFT beam codebook size B")
    bs_array_gain: Literal["none", "codebook"] = Field(
        "none", description="uplink receive beamforming gain at the base station: 'codebook' combines with the "
                            "best DFT beam (fedmoe.wireless.link_budget), 'none' receives as one antenna (the "
                            "default until the benchmarks are rerun with the gain)")
    ut_antenna_gain_dbi: float = Field(0.0, ge=-20.0, le=40.0, description="device antenna gain toward the BS, dBi")
    ut_max_eirp_dbm: float = Field(
        43.0, ge=-30.0, le=80.0, description="device EIRP limit, dBm (43: TS 38.101-2 power class 3); the transmit "
                                             "power is capped at ut_max_eirp_dbm - ut_antenna_gain_dbi")


class UplinkConfig(StrictModel):
    """OFDMA uplink: total bandwidth B split in integer resource blocks of B_min ([P001] eq. 3-4)."""

    numerology: str | None = Field(
        None, description="NR preset (fedmoe.config.NUMEROLOGIES), e.g. 'fr2-100mhz-120khz'; it sets "
                          "total_bandwidth_hz = N_RB * 12 * SCS and resource_block_hz = 12 * SCS")
    total_bandwidth_hz: float = Field(20e6, gt=0.0, le=1e10, description="total uplink bandwidth B")
    resource_block_hz: float = Field(200e3, gt=0.0, le=1e10, description="resource-block width B_min")

    @model_validator(mode="before")
    @classmethod
    def _apply_numerology(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("numerology") is None:
            return data
        try:
            preset = NUMEROLOGIES.check(data["numerology"], "numerology")
        except UnknownNameError as err:
            raise ValueError(str(err)) from None
        data = dict(data)
        for name, value in (("total_bandwidth_hz", preset.transmission_bandwidth_hz),
                            ("resource_block_hz", preset.rb_hz)):
            if name in data and float(data[name]) != value:
                raise ValueError(f"numerology {data['numerology']!r} sets {name}={value:g}; "
                                 f"drop {name}={data[name]} or the numerology")
            data[name] = value
        return data

    @model_validator(mode="after")
    def _at_least_one_block(self) -> "UplinkConfig":
        if self.resource_block_hz > self.total_bandwidth_hz:
            raise ValueError(
                f"resource_block_hz ({self.resource_block_hz:g}) must be <= total_bandwidth_hz "
                f"({self.total_bandwidth_hz:g})"
            )
        return self

    @property
    def num_resource_blocks(self) -> int:
        """floor(B / B_min): the number of blocks the allocator may hand out."""
        return int(self.total_bandwidth_hz // self.resource_block_hz)


class SensingCostConfig(StrictModel):
    """Time and power a device spends acquiring one sample of a modality."""

    time_s: float = Field(..., ge=0.0, le=60.0)
    power_w: float = Field(..., ge=0.0, le=1000.0)


def _default_sensing() -> dict[str, SensingCostConfig]:
    # Orders of magnitude for small embedded sensors; documented in docs/wireless.md.
    return {
        "camera": SensingCostConfig(time_s=0.033, power_w=1.5),
        "lidar": SensingCostConfig(time_s=0.050, power_w=8.0),
        "radar": SensingCostConfig(time_s=0.010, power_w=3.0),
        "gps": SensingCostConfig(time_s=0.001, power_w=0.05),
        "rf": SensingCostConfig(time_s=0.001, power_w=0.1),
    }


class DeviceProfileConfig(StrictModel):
    """Ranges from which heterogeneous device profiles are drawn (uniformly, per device)."""

    tx_power_dbm: tuple[float, float] = Field((10.0, 23.0), description="transmit power P_k range, dBm")
    compute_flops: tuple[float, float] = Field((2e9, 2e10), description="compute speed f_k range, FLOP/s")
    energy_per_flop_j: tuple[float, float] = Field(
        (1e-10, 1e-9), description="compute energy per FLOP range, J (kappa f^2 per cycle at one FLOP/cycle)"
    )
    sensing: dict[Modality, SensingCostConfig] = Field(default_factory=_default_sensing)

    @model_validator(mode="after")
    def _ordered_ranges(self) -> "DeviceProfileConfig":
        check_ordered(self, ("tx_power_dbm", "compute_flops", "energy_per_flop_j"))
        for name in ("compute_flops", "energy_per_flop_j"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name}: bounds must be > 0")
        return self


class CellConfig(StrictModel):
    """Where devices are dropped around the base station."""

    radius_m: float = Field(250.0, gt=0.0, le=10_000.0, description="cell radius")
    min_distance_m: float = Field(10.0, ge=0.0, le=1_000.0, description="minimum 2-D distance to the BS")

    @model_validator(mode="after")
    def _min_below_radius(self) -> "CellConfig":
        if self.min_distance_m >= self.radius_m:
            raise ValueError(f"min_distance_m ({self.min_distance_m:g}) must be < radius_m ({self.radius_m:g})")
        return self


class InterferenceConfig(StrictModel):
    """Uplink interference from co-channel devices of neighbouring cells (fedmoe.wireless.interference)."""

    model: Literal["none", "neighbours"] = Field(
        "none", description="'none': noise only; 'neighbours': a fully loaded ring of co-channel cells")
    num_cells: int = Field(6, ge=1, le=6, description="neighbouring cells of the first hexagonal tier")
    inter_site_distance_m: float | None = Field(
        None, gt=0.0, le=20_000.0, description="distance to the neighbouring base stations (default sqrt(3) R)")
    rbs_per_interferer: int = Field(
        10, ge=1, le=10_000, description="RBs an interfering device spreads its power over (its PSD P / (n B_min))")


class DeepSenseTraceConfig(StrictModel):
    """How DeepSense power sequences become a channel trace (``docs/traces.md``)."""

    csv: str | None = Field(None, description="the CSV inside the scenario folder (default: as `fedmoe data import`)")
    sample_interval_s: float = Field(0.1, gt=0.0, le=3600.0,
                                     description="time between consecutive samples of a sequence (DeepSense: 10/s)")
    median_snr_db: float = Field(20.0, ge=-30.0, le=60.0, description="per-RB SNR that the median best-beam power "
                                 "of the file maps to at reference_tx_power_dbm (the powers are uncalibrated)")
    reference_tx_power_dbm: float = Field(23.0, ge=-30.0, le=60.0, description="transmit power of that SNR, dBm")
    blockage_drop_db: float = Field(10.0, gt=0.0, le=100.0, description="samples without a blockage label count "
                                    "as blocked this far below their sequence's median best-beam power, dB")
    num_beams: int = Field(64, ge=1, le=4096, description="values in each power file")


class TraceConfig(StrictModel):
    """A measured channel per device, replayed on the virtual clock instead of random fading (``docs/traces.md``)."""

    path: str = Field(..., min_length=1, description="the trace file (format fedmoe) or DeepSense scenario folder/CSV")
    format: str = Field("fedmoe", min_length=1, description="a name in fedmoe.data.trace_formats.TRACE_FORMATS: "
                        "fedmoe (device,time_s,gain_db[,blocked]) or deepsense")
    between: Literal["hold", "linear"] = Field("hold", description="between samples: sample-and-hold, or linear "
                                               "in dB")
    after_end: Literal["hold", "loop"] = Field("hold", description="after a device's last sample: hold it, or "
                                               "repeat the device's trace")
    start_s: float = Field(0.0, ge=0.0, le=1e9, description="trace time at virtual clock 0, s")
    blocked: Literal["outage", "gain"] = Field("outage", description="a device blocked at a round's start: outage "
                                               "(not selectable that round), or gain (only its measured gain counts)")
    deepsense: DeepSenseTraceConfig = Field(default_factory=DeepSenseTraceConfig)


Speed = Annotated[float, Field(ge=0.0, le=150.0, allow_inf_nan=False)]
"""A device speed in m/s: finite, >= 0 and at most 150 (540 km/h)."""


class MobilityClassConfig(StrictModel):
    """A class of devices that move alike (``docs/wireless.md``, "Mobility"): their share of the devices and
    the range their speeds are drawn from (uniform, one speed per device for the run)."""

    share: float = Field(1.0, gt=0.0, le=1.0, description="share of the devices in this class (the shares add to 1)")
    speed_mps: tuple[Speed, Speed] = Field(
        (0.5, 1.5), description="speed range, m/s (pedestrian ~1, vehicle 10-15, UAV 10-20)")

    @model_validator(mode="after")
    def _ordered(self) -> "MobilityClassConfig":
        check_ordered(self, ("speed_mps",))
        return self


def _default_mobility_classes() -> dict[str, MobilityClassConfig]:
    return {"pedestrian": MobilityClassConfig()}


class MobilityConfig(StrictModel):
    """Devices that move between rounds (:mod:`fedmoe.wireless.mobility`, ``docs/wireless.md``, "Mobility").

    ``none`` (the default) keeps every device where it was dropped. ``random-direction``: each device keeps its
    heading and speed and reflects specularly off the cell border and the minimum-distance circle; its path
    loss follows the distance, its shadowing and LoS state follow with the spatial correlation of [TR38901]
    §7.5 (Table 7.5-6) and §7.6.3 (Table 7.6.3.1-2).
    """

    model: Literal["none", "random-direction"] = Field(
        "none", description="'none': devices stay where they were dropped; 'random-direction': straight lines at "
                            "each device's speed, reflected at the cell's borders")
    classes: dict[str, MobilityClassConfig] = Field(
        default_factory=_default_mobility_classes,
        description="device classes in order: the first share of the devices (by index) is the first class, ...")
    shadowing_correlation_m: float | None = Field(
        None, gt=0.0, le=10_000.0, description="shadowing correlation distance, m (default: TR 38.901 Table 7.5-6 "
                                               "by scenario and LoS state)")
    los_correlation_m: float | None = Field(
        None, gt=0.0, le=10_000.0, description="LoS-state correlation distance, m (default: TR 38.901 "
                                               "Table 7.6.3.1-2, 50 m)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the headings, speeds and correlated draws")

    @model_validator(mode="after")
    def _shares(self) -> "MobilityConfig":
        if not self.classes:
            raise ValueError("mobility classes: give at least one class")
        total = sum(c.share for c in self.classes.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"mobility classes: the shares add to {total:g}, not 1")
        return self


class WirelessConfig(StrictModel):
    channel: ChannelConfig = Field(default_factory=ChannelConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    devices: DeviceProfileConfig = Field(default_factory=DeviceProfileConfig)
    cell: CellConfig = Field(default_factory=CellConfig)
    interference: InterferenceConfig = Field(default_factory=InterferenceConfig)
    trace: TraceConfig | None = Field(None, description="measured channels per device instead of random fading")
    mobility: MobilityConfig = Field(default_factory=MobilityConfig,
                                     description="devices moving between rounds (default: none)")

    @model_validator(mode="after")
    def _trace_or_mobility(self) -> "WirelessConfig":
        if self.trace is not None and self.mobility.model != "none":
            raise ValueError("mobility: a trace (wireless.trace) gives every round's measured channel, which moving "
                             "would not change; use mobility.model = 'none' with a trace")
        return self

    @model_validator(mode="after")
    def _numerology_fits_carrier(self) -> "WirelessConfig":
        if self.uplink.numerology is None:
            return self
        preset = NUMEROLOGIES.get(self.uplink.numerology)
        if not preset.contains(self.channel.carrier_ghz):
            lo, hi = FREQUENCY_RANGES_GHZ[preset.frequency_range]
            raise ValueError(f"uplink.numerology {self.uplink.numerology!r} is {preset.frequency_range} "
                             f"({lo:g}-{hi:g} GHz) but channel.carrier_ghz={self.channel.carrier_ghz:g}")
        return self


# --------------------------------------------------------------------------- data


class SceneConfig(StrictModel):
    """Street scene of the synthetic ISAC generator (see fedmoe.data.scene)."""

    street_length_m: float = Field(100.0, gt=10.0, le=2_000.0, description="visible street section along x")
    street_offset_m: float = Field(8.0, ge=1.0, le=200.0, description="distance from the BS to the nearest lane")
    num_lanes: int = Field(4, ge=1, le=12)
    lane_width_m: float = Field(3.5, gt=1.0, le=10.0)
    num_blockers: int = Field(10, ge=0, le=64, description="large vehicles (trucks, buses) per scene")
    num_scatterers: int = Field(8, ge=0, le=64, description="static reflectors (poles, facade features) per scene")
    static_site: bool = Field(True, description="reflectors are fixed infrastructure, the same in every sample "
                              "(drawn once from site_seed); false redraws them per sample")
    site_seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the fixed reflector layout")
    uav_fraction: float = Field(0.25, ge=0.0, le=1.0, description="share of users that are low-altitude UAVs")
    uav_height_m: tuple[float, float] = Field((15.0, 60.0), description="UAV altitude range")
    blockage_loss_db: tuple[float, float] = Field((25.0, 40.0), description="extra loss of a blocked path")
    scatter_loss_db: tuple[float, float] = Field((4.0, 12.0), description="reflection loss of a scattered path")
    time_step_s: float = Field(0.5, gt=0.0, le=10.0, description="horizon of the next-position label")

    @model_validator(mode="after")
    def _ordered(self) -> "SceneConfig":
        check_ordered(self, ("uav_height_m", "blockage_loss_db", "scatter_loss_db"))
        return self


class SensorConfig(StrictModel):
    """Resolution and noise of each synthetic sensor."""

    camera_size: int = Field(32, ge=8, le=512, description="camera raster is 3 x size x size")
    camera_fov_deg: float = Field(150.0, gt=10.0, le=180.0, description="horizontal field of view")
    lidar_rays: int = Field(64, ge=4, le=4096, description="rays of the horizontal range scan")
    lidar_max_range_m: float = Field(120.0, gt=1.0, le=1_000.0)
    lidar_noise_m: float = Field(0.05, ge=0.0, le=10.0)
    radar_range_bins: int = Field(16, ge=2, le=512)
    radar_angle_bins: int = Field(32, ge=2, le=512)
    radar_max_range_m: float = Field(120.0, gt=1.0, le=10_000.0)
    radar_noise_db: float = Field(6.0, ge=0.0, le=40.0)
    gps_noise_m: float = Field(0.1, ge=0.0, le=100.0, description="std of each GPS coordinate")
    rf_beams: int = Field(2, ge=1, le=256, description="wide beams on which RF power is measured")
    rf_noise_db: float = Field(1.0, ge=0.0, le=40.0)


class DataConfig(StrictModel):
    """The embedded synthetic dataset."""

    num_samples: int = Field(20_000, gt=0, le=50_000_000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    sensors: SensorConfig = Field(default_factory=SensorConfig)
    input: str | None = Field(None, description="a dataset file (.npz of `fedmoe data make` or `fedmoe data import`) "
                              "a federated run splits into the devices' data and the server's test set instead of "
                              "generating data (fedmoe.data.file_split); `fedmoe run --input` sets it")


class PartitionConfig(StrictModel):
    """How data is spread over devices (see fedmoe.data.partition)."""

    num_devices: int = Field(10, ge=1, le=100_000)
    samples_per_device: int = Field(500, ge=1, le=10_000_000, description="mean local dataset size")
    label_skew: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = Field(0.5, gt=0.0, le=1e6)
    quantity_skew: Literal["none", "lognormal"] = "none"
    quantity_sigma: float = Field(1.0, ge=0.0, le=5.0, description="sigma of the log-normal size distribution")
    modality_availability: dict[Modality, float] = Field(
        default_factory=lambda: {m: 1.0 for m in MODALITIES},
        description="probability that a device has each sensor",
    )
    degradation_noise: float = Field(0.0, ge=0.0, le=10.0, description="max extra noise std (relative) per sensor")
    degradation_dropout: float = Field(0.0, ge=0.0, le=1.0, description="max per-sample dropout prob per sensor")
    group: Literal["sample", "sequence"] = Field(
        "sample", description="data.input only: the unit the split deals out; 'sequence' keeps each seq_index "
                              "sequence (a vehicle's pass) on one device and out of the server's test set")

    @model_validator(mode="after")
    def _probabilities(self) -> "PartitionConfig":
        for m, p in self.modality_availability.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"modality_availability.{m}: must be in [0, 1] (got {p:g})")
        return self


class TaskWeights(StrictModel):
    """Weights α_t of the multi-task loss, and the objective of the beam task (fedmoe.models.heads.beam_loss)."""

    beam: float = Field(1.0, ge=0.0, le=1e3)
    beam_objective: Literal["cross_entropy", "soft_power", "topk_set"] = Field(
        "cross_entropy", description="beam loss: cross-entropy on the best beam, cross-entropy on soft labels from "
                                     "the beam powers, or -log of the probability of the k best beams")
    soft_power_db: float = Field(3.0, gt=0.0, le=100.0, description="soft_power: targets ∝ 10^(P_b / this) (dB)")
    objective_k: int = Field(3, ge=1, le=4096, description="topk_set: the k best beams whose probability is raised")
    pathloss: float = Field(0.0, ge=0.0, le=1e3, description="weight of the path-loss Huber loss (dB / 10)")
    next_position: float = Field(0.0, ge=0.0, le=1e3, description="weight of the next-position Huber loss (m)")


class ScoreConfig(StrictModel):
    """How beam predictions are scored (fedmoe.models.scores): beams swept per sample and the main score."""

    top_k: int = Field(3, ge=1, le=4096, description="beams a base station sweeps from the predicted ranking")
    main: Literal["top1", "topk", "power_ratio_db"] = Field(
        "topk", description="the score summaries, targets and the demo lead with")


class TrainConfig(StrictModel):
    """Centralised two-stage training."""

    stage1_epochs: int = Field(6, ge=0, le=1000)
    stage2_epochs: int = Field(6, ge=0, le=1000)
    batch_size: int = Field(256, ge=1, le=65536)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="per stage: cosine decay to lr/100, or constant")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW decoupled weight decay")
    cost_weight: float = Field(0.0, ge=0.0, le=1e4, description="λ of the resource-aware loss ([P001] eq. 9)")
    z_loss_weight: float = Field(1e-3, ge=0.0, le=10.0)
    balance_weight: float = Field(0.0, ge=0.0, le=10.0)
    stage1_mode: Literal["each", "subsets"] = Field(
        "each", description="stage I: every expert predicts alone (each), or random subsets are averaged")
    keep_prob: float = Field(0.7, gt=0.0, le=1.0, description="stage I subsets: chance an available expert is active")
    gate_estimator: Literal["score_function", "straight_through", "oracle_routing"] = Field(
        "score_function", description="stage II gate training: score function or straight-through gradients (sampling "
                                      "gates), or classification of the per-sample oracle choice (one-expert gates)")
    routing_loss: Literal["task", "topk_miss", "power_loss_db"] = Field(
        "power_loss_db", description="oracle_routing: the per-sample loss the oracle minimises with λ·C: the training "
                                     "objective, a top-k miss (0/1), or the dB a top-k sweep loses (score.top_k)")
    routing_holdout: float = Field(
        0.0, ge=0.0, lt=1.0, description="oracle_routing: share of the training samples the experts never train on; "
                                         "the gate learns from their losses there (0: the gate learns on the "
                                         "experts' own training samples)")
    routing_from_stage1: bool = Field(
        False, description="oracle_routing: the gate also learns in stage I (the experts run alone there anyway)")
    routing_trains_experts: bool = Field(
        True, description="oracle_routing: stage II also fine-tunes the experts (else only the gate learns)")
    routing_top_k: int | None = Field(
        None, ge=1, le=4096, description="oracle_routing: beams the routing loss sweeps (default: train.score.top_k)")
    critic_baseline: bool = Field(True, description="score function: per-sample learned baseline (else batch mean)")
    entropy_weight: float = Field(0.05, ge=0.0, le=10.0, description="score function: gate entropy bonus β_H")
    tau_start: float = Field(2.0, gt=0.0, le=100.0)
    tau_end: float = Field(0.2, gt=0.0, le=100.0)
    collapse_share: float = Field(0.9, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    tasks: TaskWeights = Field(default_factory=TaskWeights)
    score: ScoreConfig = Field(default_factory=ScoreConfig)


def distinct_modalities(v: tuple[str, ...]) -> tuple[str, ...]:
    """``v`` unchanged, or a ``ValueError`` naming the list when a modality repeats (for validators)."""
    if len(set(v)) != len(v):
        raise ValueError(f"modalities repeat: {list(v)}")
    return v


class ModelConfig(StrictModel):
    """The mixture of experts (see fedmoe.models and docs/models.md)."""

    experts_per_modality: int = Field(3, ge=1, le=3, description="[P000]: 3 per modality, 15 in all")
    modalities: tuple[Modality, ...] = Field(MODALITIES, description="modalities with their own experts ([P000])")
    subsets: tuple[tuple[Modality, ...], ...] = Field(
        (), description="modality-subset experts ([P001]), e.g. [['gps', 'rf'], ['gps', 'rf', 'radar']]")
    expert_widths: dict[str, tuple[int, ...]] = Field(
        default_factory=dict, description="widths (small, medium, large; or one for all) of a modality's or "
                                          "subset's experts, by name ('gps', 'gps+rf'): overrides the defaults")
    expert_dim: int = Field(32, ge=4, le=1024, description="width of every expert's output z_d")
    head_hidden: int = Field(128, ge=0, le=4096, description="hidden width of the task heads (0: linear heads)")
    gate: str = Field("gumbel_hard", description="a name in fedmoe.models.gates.GATES")
    gate_backbone: str = Field("mlp", description="a name in fedmoe.models.gate_backbones.GATE_BACKBONES")
    top_n: int = Field(5, ge=1, le=64, description="experts per sample of the topn gate")
    use_costs: bool = Field(True, description="the gate sees each sample's cost vector")
    gate_modalities: tuple[Modality, ...] = Field(("gps", "rf"), description="inputs the gate reads (cheap ones)")
    latency_weight: float = Field(0.5, ge=0.0, le=1.0, description="share of latency (vs energy) in the cost C")

    @field_validator("modalities")
    @classmethod
    def _distinct_modalities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return distinct_modalities(v)

    @field_validator("gate")
    @classmethod
    def _gate_gets_its_inputs(cls, v: str) -> str:
        # The channel-aware gate reads a per-expert link quality on every call. Federated,
        # split and SplitFed runs and centralised training give the mixture's gate features
        # and cost vectors only, so it would pass every check here and fail at the first
        # forward pass. The channel-aware gate of [P004] runs in mode "distributed", whose
        # gates (distributed.*) are not model.gate.
        if v == "channel_aware":
            raise ValueError("'channel_aware' reads a per-expert link quality, which no mode gives the mixture's "
                             "gate (federated, split and splitfed runs and fedmoe train pass features and costs "
                             "only); the channel-aware gate of [P004] runs in mode = \"distributed\" "
                             "(distributed.*), with gates of its own")
        return v

    @field_validator("subsets")
    @classmethod
    def _valid_subsets(cls, v: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for subset in v:
            if not subset or len(set(subset)) != len(subset):
                raise ValueError(f"each subset needs distinct modalities, got {list(subset)}")
        if len(set(v)) != len(v):
            raise ValueError("subsets repeat")
        return v

    @model_validator(mode="after")
    def _some_expert(self) -> "ModelConfig":
        if not self.modalities and not self.subsets:
            raise ValueError("the mixture has no experts: give modalities or subsets")
        return self

    @model_validator(mode="after")
    def _widths_name_groups(self) -> "ModelConfig":
        # A group the mixture does not have is allowed (a scenario that extends this one may drop it),
        # but its name must be modalities joined by '+', so that a typo is an error.
        for name, widths in self.expert_widths.items():
            unknown = [m for m in name.split("+") if m not in MODALITIES]
            if unknown:
                raise ValueError(f"expert_widths.{name}: unknown modalities {unknown}; a group is a modality or "
                                 f"modalities joined by '+' (known: {list(MODALITIES)})")
            if len(widths) not in (1, *range(self.experts_per_modality, 4)) or any(w < 1 or w > 4096 for w in widths):
                raise ValueError(f"expert_widths.{name}: give one width, or {self.experts_per_modality} (small, "
                                 f"medium, large), each in [1, 4096]; got {list(widths)}")
        return self


class FaultConfig(StrictModel):
    """Faults injected into simulated devices (:mod:`fedmoe.federated.faults`); all off by default.

    Each round, each device that is asked to train draws its fate from ``seed``, the round
    and its partition id, so a run is reproducible. Malicious devices are a fixed set.
    """

    crash_rate: float = Field(0.0, ge=0.0, le=1.0, description="probability that a device errs instead of training")
    hang_rate: float = Field(0.0, ge=0.0, le=1.0, description="probability that a device replies only after hang_s")
    hang_s: float = Field(30.0, ge=0.0, le=86_400.0, description="wall-clock delay of a hanging device, s")
    straggler_rate: float = Field(0.0, ge=0.0, le=1.0, description="probability that a device is slow")
    straggler_factor: float = Field(
        5.0, ge=1.0, le=1e6, description="a straggler's latency and energy multiplier (virtual clock)")
    straggler_delay_s: float = Field(0.0, ge=0.0, le=86_400.0, description="extra wall-clock delay of a straggler, s")
    sign_flip_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of devices that send −s × their update")
    sign_flip_scale: float = Field(1.0, gt=0.0, le=1e6, description="s of the sign-flipping attack")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _rates(self) -> "FaultConfig":
        if self.crash_rate + self.hang_rate + self.straggler_rate > 1.0 + 1e-12:
            raise ValueError(f"crash_rate + hang_rate + straggler_rate = "
                             f"{self.crash_rate + self.hang_rate + self.straggler_rate:g} exceeds 1")
        return self


class CompressionConfig(StrictModel):
    """Compressed updates (``docs/federated.md``, "Compressed updates"; :mod:`fedmoe.plugins.compression`).

    A device sends its update ``Δ = θ_k − θ`` of each group (the shared parameters, each expert it
    trained) compressed by ``method``: ``"qsgd"`` (unbiased stochastic quantisation to ``bits`` bits a
    value, one float32 scale per state-dict entry, [P008]) or ``"topk"`` (the ``k_fraction`` largest
    entries as uint32 indices and float32 values, [P009]), or any name registered in
    :data:`fedmoe.plugins.compression.COMPRESSORS`; with ``error_feedback`` it keeps what the
    compressor dropped in its local state and adds it to its next update ([P009]).
    """

    method: str = Field("none", description="'none' or a name in fedmoe.plugins.compression.COMPRESSORS "
                                            "(qsgd, topk)")
    bits: int = Field(8, ge=2, le=8, description="qsgd: bits a value (2, 4 or 8)")
    k_fraction: float = Field(0.1, gt=0.0, le=1.0, description="topk: share of each group's entries sent")
    error_feedback: bool = Field(True, description="keep the compression error on the device and add it to the "
                                                   "next update (residual e ← e + Δ − C(e + Δ))")

    @model_validator(mode="after")
    def _known(self) -> "CompressionConfig":
        from fedmoe.plugins.compression import COMPRESSORS

        if self.method != "none" and self.method not in COMPRESSORS:
            raise ValueError(f"unknown compressor {self.method!r}; known: none, {', '.join(COMPRESSORS.names())}")
        if self.method != "none":
            self.compressor()  # bits outside what the compressor supports fail here
        return self

    def compressor(self):
        """The :class:`~fedmoe.plugins.compression.Compressor` (``None`` for ``"none"``)."""
        from fedmoe.plugins.compression import make_compressor

        return make_compressor(self.method, bits=self.bits, k_fraction=self.k_fraction)


class AvailabilityConfig(StrictModel):
    """Devices that go off and on between rounds (:mod:`fedmoe.federated.dynamics`, ``docs/federated.md``).

    ``markov``: each device is a two-state chain, on → off with ``p_off`` and off → on with
    ``p_on`` per round, so that in the long run it is on a share ``p_on / (p_on + p_off)`` of the
    rounds. ``trace``: the file ``path`` (``device,time_s,available``) read at each round's start
    on the virtual clock.
    """

    model: Literal["markov", "trace"] = Field("markov", description="a Markov chain per device, or a trace file")
    p_off: float = Field(0.1, ge=0.0, le=1.0, description="markov: chance that an on device is off the next round")
    p_on: float = Field(0.5, ge=0.0, le=1.0, description="markov: chance that an off device is on the next round")
    start: Literal["on", "stationary"] = Field(
        "on", description="markov: round 1 with every device on, or each on with the stationary share")
    path: str | None = Field(None, min_length=1, description="trace: the availability file (device,time_s,available)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="markov: seed of the chains")

    @model_validator(mode="after")
    def _complete(self) -> "AvailabilityConfig":
        if self.model == "trace" and self.path is None:
            raise ValueError("availability model 'trace' needs path (the availability file)")
        if self.model == "markov" and self.start == "stationary" and self.p_on + self.p_off == 0:
            raise ValueError("availability start 'stationary' needs p_on + p_off > 0")
        return self


PerDevice = float | tuple[float, ...]
"""One value for every device, or one per device (row of the scenario's devices)."""


class BatteryConfig(StrictModel):
    """A battery per device (:mod:`fedmoe.federated.dynamics`): a device whose charge is below its expected
    round energy is not selectable; it recharges at ``recharge_w`` while the virtual clock advances."""

    capacity_j: PerDevice = Field(..., description="battery capacity, J (> 0)")
    initial_j: PerDevice | None = Field(None, description="charge at the start, J (default: full)")
    recharge_w: PerDevice = Field(0.0, description="recharge power while the virtual clock runs, W (>= 0)")

    @model_validator(mode="after")
    def _signs(self) -> "BatteryConfig":
        for name, value, positive in (("capacity_j", self.capacity_j, True), ("initial_j", self.initial_j, False),
                                      ("recharge_w", self.recharge_w, False)):
            for v in (() if value is None else value if isinstance(value, tuple) else (value,)):
                if not math.isfinite(v) or v < 0 or (positive and v == 0):
                    raise ValueError(f"battery {name}: {v!r} must be finite and {'> 0' if positive else '>= 0'}")
        return self


class DynamicsConfig(StrictModel):
    """Devices that change across rounds (``docs/federated.md``); both parts off by default."""

    availability: AvailabilityConfig | None = Field(None, description="devices going off and on")
    battery: BatteryConfig | None = Field(None, description="a battery budget per device")


class OortOptions(StrictModel):
    """Options of the ``oort`` selection policy (:func:`fedmoe.federated.selection_baselines.select_oort`, [P005])."""

    epsilon: float = Field(
        0.2, ge=0.0, le=1.0, description="exploration share ε: up to ⌈ε m⌉ of the m slots go to devices never heard "
                                         "from, drawn by speed")
    alpha: float = Field(
        2.0, ge=0.0, le=100.0, description="system penalty exponent α: a device slower than the deadline T on an "
                                           "equal share of the blocks has its utility times (T / t_k)^α")
    staleness: float = Field(
        0.1, ge=0.0, le=100.0, description="c of the staleness bonus sqrt(c ln R / L_k) (0: none)")


class PowerOfChoiceOptions(StrictModel):
    """Options of the ``power-of-choice`` policy (:func:`fedmoe.federated.selection_baselines.select_power_of_choice`,
    [P006])."""

    candidates: int | None = Field(
        None, ge=1, le=100_000, description="d, the candidates drawn by data size before the m of highest loss are "
                                            "kept; at least clients_per_round (None: 2 × clients_per_round)")


class AgeOptions(StrictModel):
    """Options of the ``age-weighted`` policy (:func:`fedmoe.federated.selection_baselines.select_age_weighted`,
    [P007])."""

    exponent: float = Field(
        1.0, gt=0.0, le=10.0, description="β of the weight a_k^β of a device whose last update is a_k rounds old")


class SelectionOptions(StrictModel):
    """Per-policy options of ``federated.selection`` (each read only by its policy)."""

    oort: OortOptions = Field(default_factory=OortOptions)
    power_of_choice: PowerOfChoiceOptions = Field(default_factory=PowerOfChoiceOptions)
    age: AgeOptions = Field(default_factory=AgeOptions)


class FedBuffConfig(StrictModel):
    """Semi-asynchronous rounds (``federated.strategy = "fedbuff"``; :mod:`fedmoe.strategies.fedbuff`, [P010]).

    ``concurrency`` devices train at once on the virtual clock; the server updates the model every
    ``buffer_size`` arrivals, each update weighted by ``staleness`` of its age and the buffered mean
    applied with ``server_lr``. One server update is one round of ``federated.rounds``.
    """

    buffer_size: int = Field(5, ge=1, le=100_000, description="K: arrivals buffered per server update")
    concurrency: int = Field(10, ge=1, le=100_000, description="devices training at once (in flight)")
    staleness: str = Field(
        "inverse_sqrt", min_length=1, description="s(τ): a name in fedmoe.federated.buffered.STALENESS_WEIGHTS")
    server_lr: float = Field(1.0, gt=0.0, le=100.0, description="η_g: step of the buffered mean update")
    max_staleness: int | None = Field(
        None, ge=0, le=100_000, description="updates staler than this many server versions are dropped (None: kept)")

    @model_validator(mode="after")
    def _buffer_fits(self) -> "FedBuffConfig":
        if self.buffer_size > self.concurrency:
            raise ValueError(f"buffer_size ({self.buffer_size}) exceeds concurrency ({self.concurrency}): the "
                             "buffer could never fill")
        return self


class FederatedConfig(StrictModel):
    """Federated rounds on Flower (``fedmoe run``): rounds, device selection, aggregation.

    Stage I of the two-stage training (experts alone) runs for the first
    ``stage1_rounds`` rounds, stage II (gate and fine-tuning) for the rest; λ is
    ``train.cost_weight`` and the local optimiser follows ``train`` (batch size, lr with
    its schedule over the rounds of each stage, weight decay, gate estimator).
    """

    rounds: int = Field(20, ge=1, le=100_000)
    stage1_rounds: int = Field(
        8, ge=0, le=100_000, description="rounds of stage I (experts alone); the rest train the gate")
    local_epochs: int = Field(1, ge=1, le=1_000, description="passes over the local data per round")
    stage2_local_epochs: int | None = Field(
        None, ge=1, le=1_000, description="passes per stage-II round (default: local_epochs); with frozen experts "
                                          "under supervised routing only the gate trains then, which is cheap")
    clients_per_round: int = Field(10, ge=1, le=100_000, description="devices sampled per round (random, utility caps)")
    selection: str = Field(
        "deadline-max-devices", description="a name in fedmoe.federated.selection.SELECTION_POLICIES")
    selection_options: SelectionOptions = Field(
        default_factory=SelectionOptions, description="options of the oort, power-of-choice and age-weighted policies")
    allocation: Literal["min-latency", "equal"] = Field(
        "min-latency", description="resource blocks of the selected: exact min round latency, or an equal split")
    deadline_s: float = Field(20.0, gt=0.0, le=1e6, description="round deadline T of the deadline policies, s")
    strategy: str = Field("expert_wise", description="a name in fedmoe.strategies.STRATEGIES")
    aggregator: str = Field("fedavg", description="the Flower rule: a name in fedmoe.strategies.AGGREGATORS")
    aggregator_options: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="keyword arguments of the aggregator (e.g. proximal_mu, eta)")
    local_keys: tuple[str, ...] = Field((), description="glob patterns of parameter names that never leave a device")
    max_modalities: int = Field(
        5, ge=1, le=5, description="modality budget: the cheapest this many sensors a device may use per round")
    test_samples: int = Field(4000, ge=1, le=10_000_000, description="held-out samples of the server-side evaluation")
    eval_every: int = Field(
        1, ge=1, le=100_000, description="server-side evaluation every this many rounds (and the last)")
    centralised_reference: bool = Field(
        True, description="also train the same model centrally on the union of the devices' data (cached per "
                          "configuration) and report its score beside the federated one")
    fraction_evaluate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of devices asked to evaluate on their own data")
    checkpoint_every: int = Field(
        5, ge=0, le=100_000, description="save the global model every this many rounds (0: only the last)")
    client_cpus: int = Field(1, ge=1, le=1024, description="CPUs per virtual client (Ray backend)")
    partition_cache: int = Field(
        32, ge=0, le=100_000, description="device partitions kept in memory per worker process")
    round_timeout_s: float = Field(3600.0, gt=0.0, le=1e6, description="wall-clock wait for the replies of a round")
    faults: FaultConfig = Field(default_factory=FaultConfig)
    compression: CompressionConfig = Field(
        default_factory=CompressionConfig, description="compressed updates from the devices (qsgd, topk)")
    dynamics: DynamicsConfig = Field(
        default_factory=DynamicsConfig, description="availability and battery of the devices across rounds")
    fedbuff: FedBuffConfig = Field(
        default_factory=FedBuffConfig, description="semi-asynchronous rounds of strategy fedbuff ([P010])")
    max_update_ratio: float = Field(
        10.0, gt=0.0, le=1e12,
        description="a reply array that moved by more than this times max(‖global array‖, 1) is rejected "
                    "(fedmoe.strategies.validation)")
    clip_ratio: float = Field(
        4.0, ge=1.0, le=1e12,
        description="an accepted update of a parameter or buffer longer than this times the lower median of the "
                    "round's updates of it is scaled down to that length (fedmoe.strategies.validation.bound_updates)")

    @model_validator(mode="after")
    def _stages_fit(self) -> "FederatedConfig":
        if self.stage1_rounds > self.rounds:
            raise ValueError(f"stage1_rounds ({self.stage1_rounds}) exceeds rounds ({self.rounds})")
        d = self.selection_options.power_of_choice.candidates
        if d is not None and d < self.clients_per_round:
            raise ValueError(f"selection_options.power_of_choice.candidates ({d}) must be at least "
                             f"clients_per_round ({self.clients_per_round})")
        return self

    def epochs_of_stage(self, stage: int) -> int:
        """Local passes per round of ``stage`` (1 or 2): ``local_epochs``, or ``stage2_local_epochs`` in stage II."""
        return self.stage2_local_epochs or self.local_epochs if stage == 2 else self.local_epochs


class ReportConfig(StrictModel):
    """What a run writes for its operator while it goes (:mod:`fedmoe.federated.live_log`, docs/operating.md).

    ``rounds.csv`` and ``devices.csv`` are always written round by round; these options add more. They
    change nothing the run computes, so a run may be resumed with other values
    (:func:`fedmoe.federated.resume.load_state` leaves this section out of its comparison).
    """

    tensorboard: bool = Field(
        False, description="also write TensorBoard event files (one scalar per round and metric) to "
                           "<run>/tensorboard; needs the tensorboard extra (pip install 'fedmoe[tensorboard]')")


class SplitConfig(StrictModel):
    """Split learning on Flower (``mode = "split"`` or ``"splitfed"``; :mod:`fedmoe.strategies.split_learning`).

    Devices keep their modality experts (encoders); per batch they send the features of the
    experts the server's gate selected over ``link``; the server runs gate, fusion and heads
    and returns the gradients. Rounds, stages, local epochs and devices per round follow
    ``federated``; the optimiser follows ``train`` (constant learning rate).
    """

    link: Literal["ideal", "analog", "digital"] = Field(
        "ideal", description="uplink of the features: lossless at the Shannon rate, analog ([P004]) or quantised")
    link_options: dict[str, float | int] = Field(
        default_factory=dict, description="keyword arguments of the link (digital: bits, clip, bits_per_symbol)")
    snr_db: float | None = Field(
        None, ge=-30.0, le=60.0, description="feature-link SNR in dB for every device; None: each device's own "
                                             "uplink SNR")
    value_bits: int = Field(32, ge=1, le=64, description="bits per feature value on the ideal link")
    batches_per_message: int = Field(
        1, ge=1, le=10_000, description="batches a device encodes per message (1: exact split learning; more: "
                                        "stale gradients)")
    message_timeout_s: float = Field(120.0, gt=0.0, le=1e6, description="wall-clock wait for one exchange's replies")
    eval_devices: int = Field(0, ge=0, le=100_000, description="devices evaluated on their held-out data (0: all)")


class DistributedConfig(StrictModel):
    """Distributed experts over noisy links with a channel-aware gate (``mode = "distributed"``, [P004]).

    A backbone and the gate at the server, expert ``k`` on device ``k`` (partition id
    ``k < num_experts``). The mixture is trained at the server in [P004]'s two stages
    (:mod:`fedmoe.split.distributed`); the experts are then deployed to their devices and
    the test set is classified over Flower messages at every SNR of ``eval_snr_db``, with
    the naive and the channel-aware gate (:mod:`fedmoe.strategies.distributed_experts`).
    """

    dataset: Literal["isac", "digits"] = Field(
        "isac", description="synthetic ISAC beams from GPS, RF and radar vectors, or scikit-learn's bundled digits")
    num_samples: int = Field(6000, ge=100, le=10_000_000, description="ISAC samples generated (digits: all 1,797)")
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    num_experts: int = Field(8, ge=2, le=64)
    feature_dim: int = Field(32, ge=2, le=4096, description="width of the backbone's feature z")
    hidden: int = Field(64, ge=2, le=4096, description="hidden width of the backbone, experts and gates")
    link: Literal["analog", "digital"] = Field("analog", description="downlink of the features to the experts")
    link_options: dict[str, float | int] = Field(
        default_factory=dict, description="digital: bits, clip, bits_per_symbol")
    train_snr_db: tuple[float, float] = Field(
        (10.0, 40.0), description="stage 2: mean SNR drawn uniformly in dB in this range")
    eval_snr_db: tuple[float, ...] = Field((10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0), min_length=1)
    fading: bool = Field(True, description="Rayleigh power gain per expert and sample on top of the mean SNR")
    stage1_epochs: int = Field(30, ge=1, le=10_000)
    stage2_epochs: int = Field(15, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    balance_weight: float = Field(0.1, ge=0.0, le=100.0)
    bandwidth_hz: float = Field(1e6, gt=0.0, le=1e10, description="downlink bandwidth of each expert's link")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> "DistributedConfig":
        check_ordered(self, ("train_snr_db",))
        return self


class V2IAgentConfig(StrictModel):
    """Learning of the V2I agents (:mod:`fedmoe.v2i.agents`, :mod:`fedmoe.v2i.training`).

    Every learned policy (the heterogeneous MoE and its baselines) uses the same rollouts,
    advantage estimate and clipped policy-gradient update, so they differ only in the network.
    """

    policy: str = Field("hetero_moe", min_length=1, description="registered agent (fedmoe.v2i.agents.AGENTS)")
    hidden: int = Field(64, ge=4, le=4096, description="width of the MLPs and of the LSTM state")
    episodes_per_update: int = Field(32, ge=1, le=4096, description="parallel episodes per policy update")
    episode_slots: int = Field(128, ge=8, le=100_000, description="slots per training episode")
    updates: int = Field(150, ge=1, le=1_000_000, description="policy updates of one training run")
    lr: float = Field(3e-3, gt=0.0, le=1.0, description="Adam step of the temporal expert and the critic")
    spatial_lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam step of the spatial expert (α_MLP)")
    ppo_epochs: int = Field(4, ge=1, le=100, description="passes over each batch of rollouts")
    clip: float = Field(0.2, gt=0.0, le=10.0, description="ratio clip of the policy-gradient step")
    discount: float = Field(0.95, gt=0.0, lt=1.0)
    gae: float = Field(0.9, ge=0.0, le=1.0, description="λ of generalised advantage estimation")
    entropy: float = Field(0.003, ge=0.0, le=10.0, description="entropy bonus of the Bernoulli policy")
    spatial_weight: float = Field(1.0, gt=0.0, le=1e6, description="λ of the spatial loss (Algorithm 1, line 14)")
    eval_episodes: int = Field(32, ge=1, le=100_000)
    eval_slots: int = Field(400, ge=8, le=1_000_000)
    warmup_slots: int = Field(40, ge=0, le=100_000, description="slots left out of the evaluation averages")


class V2IFederatedConfig(StrictModel):
    """Federated training of the V2I agent across base stations (:mod:`fedmoe.strategies.v2i_federated`)."""

    rounds: int = Field(8, ge=1, le=100_000)
    local_updates: int = Field(20, ge=1, le=1_000_000, description="policy updates per base station and round")
    road_speed_scale: tuple[float, ...] = Field(
        (0.5, 1.0, 1.6), min_length=1,
        description="speed factor of each base station's road; its length is the number of base stations")
    snr_db: tuple[float, ...] = Field((), description="radar SNR of each road (empty: v2i.snr_db everywhere)")
    alone_updates: int | None = Field(
        None, ge=1, le=10_000_000,
        description="updates of the agent trained alone on road 0 (default rounds × local_updates, what one base "
                    "station performs; rounds × local_updates × stations gives it as many episodes as the federation)")


class V2IConfig(StrictModel):
    """V2I semantic-AoI camera scheduling and beamforming ([P002]; :mod:`fedmoe.v2i`).

    Defaults follow [P002]'s Section IV where it gives a value (K = 4 vehicles, M = 64,
    28 GHz, 10 J per camera frame, i.e. 40 J/slot for all four, 25 J per beam recovery,
    P_max = 30 dBm, σ² = −114 dBm). Everything else is ours: the kinematic rates ``beta``,
    ``t_proc`` (0: a processed frame leaves no misalignment, which gives the paper's
    "exactly 40 J" for vision-only), ``a_max``, ``gamma``, ``penalty``, ``rho``, the road
    geometry, and the radar model that ties β to the SNR (:mod:`fedmoe.v2i.env`).
    """

    num_vehicles: int = Field(4, ge=1, le=64)
    num_antennas: int = Field(64, ge=2, le=1024)
    carrier_ghz: float = Field(28.0, gt=0.0, le=300.0)
    e_vis_j: float = Field(10.0, ge=0.0, le=1e6, description="energy of processing one camera frame, J (eq. 4)")
    e_rec_j: float = Field(25.0, ge=0.0, le=1e6, description="energy of one exhaustive beam recovery, J (eq. 5)")
    beta: tuple[float, ...] = Field((0.04, 0.06, 0.09, 0.12), min_length=1,
                                    description="kinematic uncertainty rate β_k per vehicle at its nominal speed and "
                                                "snr_ref_db, 1/slot (eq. 7)")
    t_proc: int = Field(0, ge=0, le=1000, description="AoI right after a camera frame is processed, slots (eq. 6)")
    a_max: int = Field(20, ge=1, le=1000, description="largest AoI allowed, slots (eq. 9d)")
    gamma: float = Field(0.3, gt=0.0, le=1.0, description="largest mean misalignment probability Γ (eq. 9e)")
    penalty: float = Field(100.0, ge=0.0, le=1e6, description="λ_misa of the reward (eq. 11), J per unit of excess")
    rho: float = Field(
        1.0, ge=0.0, le=1e6, description="CSI error bound ρ relative to ||ĥ||²: E||Δh||² = ρ P_misa ||ĥ||² (eq. 8)")
    p_max_dbm: float = Field(30.0, ge=-50.0, le=60.0)
    noise_dbm: float = Field(-114.0, ge=-200.0, le=0.0)
    num_paths: int = Field(3, ge=1, le=64, description="paths of the geometric channel (eq. 2)")
    rician_k_db: float = Field(
        10.0, ge=-30.0, le=60.0, description="power of the line-of-sight path over the others, dB")
    speeds_mps: tuple[float, ...] = Field((20.0, 30.0, 45.0, 60.0), min_length=1,
                                          description="nominal speed of each vehicle, m/s (β_k scales with it)")
    speed_jitter: float = Field(0.25, ge=0.0, lt=1.0, description="each episode draws speed × U(1 − j, 1 + j)")
    slot_s: float = Field(0.1, gt=0.0, le=10.0, description="slot duration, s")
    road_length_m: float = Field(
        200.0, gt=0.0, le=1e5, description="road section the base station covers (vehicles wrap)")
    lane_offset_m: float = Field(15.0, gt=0.0, le=1e4, description="distance from the array to the first lane, m")
    lane_width_m: float = Field(3.5, ge=0.0, le=100.0)
    snr_db: float = Field(10.0, ge=-30.0, le=60.0, description="radar SNR of the operating point, dB")
    snr_ref_db: float = Field(10.0, ge=-30.0, le=60.0, description="SNR at which ``beta`` holds, dB")
    radar_floor: float = Field(0.1, ge=0.0, le=1e6,
                               description="κ: β ∝ (κ + 1/SNR); the part of the drift no radar removes")
    radar_angle_std_deg: float = Field(0.5, ge=0.0, le=90.0, description="radar angle error at snr_ref_db, degrees")
    radar_range_std_m: float = Field(0.5, ge=0.0, le=1e4, description="radar range error at snr_ref_db, m")
    agent: V2IAgentConfig = Field(default_factory=V2IAgentConfig)
    federated: V2IFederatedConfig = Field(default_factory=V2IFederatedConfig)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _per_vehicle(self) -> "V2IConfig":
        for name in ("beta", "speeds_mps"):
            values = getattr(self, name)
            if len(values) != self.num_vehicles:
                raise ValueError(f"{name} has {len(values)} values, num_vehicles is {self.num_vehicles}")
            if any(b <= 0 for b in values):
                raise ValueError(f"{name} must be positive, got {list(values)}")
        if self.t_proc > self.a_max:
            raise ValueError(f"t_proc ({self.t_proc}) exceeds a_max ({self.a_max})")
        fed = self.federated
        if any(s <= 0 for s in fed.road_speed_scale):
            raise ValueError(f"federated.road_speed_scale must be positive, got {list(fed.road_speed_scale)}")
        if fed.snr_db and len(fed.snr_db) != len(fed.road_speed_scale):
            raise ValueError(f"federated.snr_db has {len(fed.snr_db)} values, there are "
                             f"{len(fed.road_speed_scale)} roads (federated.road_speed_scale)")
        return self


class FedMoEConfig(StrictModel):
    """Top-level configuration (a scenario TOML file holds any subset of it)."""

    name: str = Field("default", min_length=1, max_length=128)
    data: DataConfig = Field(default_factory=DataConfig)
    wireless: WirelessConfig = Field(default_factory=WirelessConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    federated: FederatedConfig = Field(default_factory=FederatedConfig)
    mode: Literal["federated", "split", "splitfed", "distributed", "v2i"] = Field(
        "federated", description="federated averaging, split learning, split learning with experts averaged per round, "
                                 "distributed experts over noisy links ([P004]), or V2I scheduling agents trained "
                                 "across base stations ([P002])")
    split: SplitConfig = Field(default_factory=SplitConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    v2i: V2IConfig = Field(default_factory=V2IConfig)
    report: ReportConfig = Field(
        default_factory=ReportConfig, description="what the run writes for its operator as it goes (TensorBoard)")

    @model_validator(mode="after")
    def _k_fits_codebook(self) -> "FedMoEConfig":
        beams = self.wireless.channel.codebook_size
        for name, k in (("train.score.top_k", self.train.score.top_k),
                        ("train.tasks.objective_k", self.train.tasks.objective_k)):
            if k > beams:
                raise ValueError(f"{name}={k} exceeds the codebook (wireless.channel.codebook_size={beams})")
        return self

    @model_validator(mode="after")
    def _input_is_federated(self) -> "FedMoEConfig":
        if self.data.input is not None and self.mode != "federated":
            raise ValueError(f"data.input (a dataset file) is supported in mode federated only, got mode {self.mode}")
        return self

    @model_validator(mode="after")
    def _tensorboard_is_federated(self) -> "FedMoEConfig":
        if self.report.tensorboard and self.mode != "federated":
            raise ValueError(f"report.tensorboard (per-round event files) is supported in mode federated only, got "
                             f"mode {self.mode}")
        return self

    @model_validator(mode="after")
    def _trace_is_federated(self) -> "FedMoEConfig":
        if self.wireless.trace is not None and self.mode != "federated":
            raise ValueError(f"wireless.trace (a measured channel) is supported in mode federated only, got mode "
                             f"{self.mode}")
        return self

    @model_validator(mode="after")
    def _mobility_is_federated(self) -> "FedMoEConfig":
        if self.wireless.mobility.model != "none" and self.mode != "federated":
            raise ValueError(f"wireless.mobility (devices moving between rounds) is supported in mode federated only, "
                             f"got mode {self.mode}")
        return self

    @model_validator(mode="after")
    def _experts_have_devices(self) -> "FedMoEConfig":
        if self.mode == "distributed" and self.partition.num_devices < self.distributed.num_experts:
            raise ValueError(f"distributed.num_experts={self.distributed.num_experts} needs as many devices; "
                             f"partition.num_devices={self.partition.num_devices}")
        roads = len(self.v2i.federated.road_speed_scale)
        if self.mode == "v2i" and self.partition.num_devices != roads:
            raise ValueError(f"mode v2i runs one base station per road: v2i.federated.road_speed_scale has {roads} "
                             f"roads, partition.num_devices={self.partition.num_devices}")
        return self


# --------------------------------------------------------------------------- loading and errors


def _field_bounds(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """Describe the allowed range of the field at ``loc`` ("> 0 and <= 100"), if it has one."""
    current: Any = model
    info = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
    if info is None:
        return None
    parts = []
    for meta in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{sym} {getattr(meta, attr):g}")
    return " and ".join(parts) or None


def _plain(annotation: Any) -> Any:
    """``annotation`` without ``Annotated[...]`` and without the ``None`` of an optional (``X | None``)."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _union_member_index(model: type[BaseModel], loc: tuple[Any, ...]) -> int | None:
    """Where in ``loc`` pydantic put the member's name (``"int"``) of a union field that the value
    matched none of (one error per member), or ``None`` when ``loc`` goes through no union."""
    current: Any = model
    for i, part in enumerate(loc):
        current = _plain(current)
        origin = get_origin(current)
        if origin in (Union, types.UnionType):
            return i
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        elif origin is dict:
            current = get_args(current)[1]
        elif origin is list or (origin is tuple and get_args(current)[-1:] == (Ellipsis,)):
            current = get_args(current)[0]
        elif origin is tuple and isinstance(part, int) and part < len(get_args(current)):
            current = get_args(current)[part]
        else:
            return None
    return None


def _essential_errors(errors: list[dict[str, Any]], model: type[BaseModel]) -> list[dict[str, Any]]:
    """Pydantic's errors, one per problem: a value that matched no member of a union field gives one
    error instead of one per member (``aggregator_options.mu: Input should match one of float, int,
    bool, str``), and a list too short only because an item failed gives none of its own."""
    merged: list[dict[str, Any]] = []
    unions: dict[tuple[Any, ...], dict[str, Any]] = {}
    locs = [tuple(e["loc"]) for e in errors]
    for e in errors:
        loc = tuple(e["loc"])
        if e["type"] == "too_short" and any(len(o) > len(loc) and o[:len(loc)] == loc for o in locs):
            continue
        i = _union_member_index(model, tuple(e["loc"]))
        if i is None:
            merged.append(e)
            continue
        where = tuple(e["loc"])[:i]
        if where not in unions:
            unions[where] = {"loc": where, "type": "union", "members": [], **{k: e[k] for k in ("input",) if k in e}}
            merged.append(unions[where])
        member = str(e["loc"][i])
        if member not in unions[where]["members"]:
            unions[where]["members"].append(member)
    for e in unions.values():
        e["msg"] = f"Input should match one of {', '.join(e.pop('members'))}"
    return merged


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: ``field.path: message (allowed: range; got value)``.

    The value is shown for fields the config knows (it is what the user typed for that
    setting), never for an unknown key: a misplaced or misspelt key may hold anything (a
    token pasted into the wrong file, say), and an error message ends up in logs and
    terminals, so only the key's name is reported."""
    lines = []
    for e in _essential_errors(err.errors(), model):
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in (prefix,) + loc if p != "")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        extra = []
        bounds = _field_bounds(model, loc)
        if bounds and e["type"] not in ("extra_forbidden", "missing"):
            extra.append(f"allowed: {bounds}")
        if "input" in e and e["type"] not in ("missing", "extra_forbidden") and not isinstance(e["input"], dict):
            extra.append(f"got {e['input']!r}")
        lines.append(f"{where or '(top level)'}: {msg}" + (f" ({'; '.join(extra)})" if extra else ""))
    return "\n".join(lines)


def parse_config(data: dict[str, Any], model: type[StrictModel] = FedMoEConfig, source: str = "config") -> Any:
    """Validate a dict against ``model``; raise :class:`ConfigError` with one line per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + format_validation_error(err, model).replace("\n", f"\n{source}: ")) from None


FILE_SETTINGS = ("data.input", "wireless.trace.path", "federated.dynamics.availability.path")
"""The settings that name a file which every process of a run opens (the ServerApp and each ClientApp),
whatever its working folder."""


def file_settings(cfg: FedMoEConfig) -> dict[str, str]:
    """The :data:`FILE_SETTINGS` that ``cfg`` sets, ``{dotted name: path}``."""
    found = {}
    for name in FILE_SETTINGS:
        value: Any = cfg
        for part in name.split("."):
            value = getattr(value, part, None)
            if value is None:
                break
        if value is not None:
            found[name] = str(value)
    return found


def with_absolute_files(cfg: FedMoEConfig) -> FedMoEConfig:
    """``cfg`` with every file setting (:data:`FILE_SETTINGS`) made absolute from this process's working folder
    (``~`` expanded); ``cfg`` itself when none is relative."""
    relative = {k: v for k, v in file_settings(cfg).items() if not Path(v).is_absolute()}
    if not relative:
        return cfg
    data = cfg.model_dump(mode="json")
    for name, value in relative.items():
        *parents, last = name.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = str(Path(value).expanduser().resolve())
    return parse_config(data, source=", ".join(relative))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The content of a TOML file; a missing file or bad TOML is a one-line :class:`ConfigError`."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a config file")
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> FedMoEConfig:
    """Load a TOML file into :class:`FedMoEConfig` (defaults when ``path`` is None).

    ``overrides`` is a nested dict merged over the file's content (used by the CLI).
    """
    data: dict[str, Any] = {} if path is None else read_toml(path)
    source = "config" if path is None else str(path)
    if overrides:
        data = deep_merge(data, overrides)
    return parse_config(data, FedMoEConfig, source)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``update`` merged in recursively (``update`` wins)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def dotted_to_nested(assignments: dict[str, Any]) -> dict[str, Any]:
    """``{"data.num_samples": 5}`` -> ``{"data": {"num_samples": 5}}``; a :class:`ConfigError` when
    one key sets a value that another goes inside of (``data.seed`` and ``data.seed.x``)."""
    nested: dict[str, Any] = {}
    for key, value in assignments.items():
        node = nested
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parts[:i + 1])} is set to a value, so it has no key "
                                  f"{parts[i + 1]!r}")
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(f"{key}: conflicts with the keys set inside it ({key}.{next(iter(node[parts[-1]]))})")
        node[parts[-1]] = value
    return nested
