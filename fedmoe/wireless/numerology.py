"""NR numerology presets for the OFDMA uplink: channel bandwidth, subcarrier spacing, resource blocks.

* Subcarrier spacing ``Δf = 15 · 2^μ kHz`` for numerology ``μ`` ([TS38211] §4.2, Table 4.2-1).
* A resource block is 12 consecutive subcarriers ([TS38211] §4.4.4.1), so its width is ``B_RB = 12 Δf``.
* The number of RBs a channel carries is the *maximum transmission bandwidth configuration*
  ``N_RB`` of [TS38101-1] Table 5.3.2-1 (FR1) and [TS38101-2] Table 5.3.2-1 (FR2); the rest of
  the channel bandwidth is guard band. A preset therefore sets
  ``UplinkConfig.resource_block_hz = 12 Δf`` and ``total_bandwidth_hz = N_RB · 12 Δf`` (the occupied
  band, not the nominal channel bandwidth), so that ``floor(B / B_min) = N_RB`` exactly.
* Frequency ranges ([TS38101-1] §5.1, [TS38101-2] §5.1): FR1 410 MHz – 7.125 GHz, FR2-1
  24.25 – 52.6 GHz. A preset may only be used with a carrier inside its range.

Presets are registered by name in :data:`NUMEROLOGIES` (``fedmoe.registry.Registry``); add more
with ``NUMEROLOGIES.register(name, Numerology(...))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedmoe.registry import Registry

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
