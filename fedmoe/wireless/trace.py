"""Measured channels replayed on the virtual clock: each device's channel power gain and blockage over time.

A :class:`ChannelTrace` holds, per device ``k``, samples ``(t_{k,i}, g_{k,i}, b_{k,i})``: time in s
(strictly increasing), channel power gain ``g = 10 log10 h`` in dB and a blocked flag. The channel
of device ``k`` at virtual time ``t`` (the clock plus ``start_s``) is read as follows
(``docs/traces.md``):

* before the first sample: the first sample;
* between two samples: ``between="hold"`` keeps the last sample at or before ``t``
  (sample-and-hold); ``"linear"`` interpolates the gain linearly in dB between the samples
  around ``t`` (the blocked flag is the earlier sample's);
* after the last sample: ``after_end="hold"`` keeps the last sample; ``"loop"`` repeats the
  device's trace with period ``P_k = t_last - t_first + Δ_k``, ``Δ_k`` its last sample interval
  (the last sample is held for as long as the one before it; with ``"linear"`` the gain heads
  back to the first sample over that interval). A one-sample trace is constant.

The gain replaces the whole ``h_k`` of :class:`~fedmoe.wireless.devices.DeviceProfiles` (path
loss, shadowing and fading together: a measurement holds all three); a blocked device is an
outage for the round (``blocked_outage``: not available to the selection) and its gain is what
was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np

from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.ofdma import db_to_linear

Between = Literal["hold", "linear"]
AfterEnd = Literal["hold", "loop"]


@dataclass(frozen=True)
class ChannelTrace:
    """Per-device gain and blockage samples over time, and how to read them between and after the samples.

    Attributes
    ----------
    times_s, gain_db, blocked
        One array per device ``0 .. K-1``: sample times (s, finite, >= 0, strictly increasing),
        gains ``10 log10 h`` (dB, finite) and blocked flags (bool), all of one length (>= 1).
    between, after_end
        The reading rules of the module docstring.
    start_s
        Trace time at virtual clock 0.
    blocked_outage
        A device blocked at the round's start may not be selected in that round.
    source
        Where the trace came from (for messages).
    """

    times_s: tuple[np.ndarray, ...]
    gain_db: tuple[np.ndarray, ...]
    blocked: tuple[np.ndarray, ...]
    between: Between = "hold"
    after_end: AfterEnd = "hold"
    start_s: float = 0.0
    blocked_outage: bool = True
    source: str = "trace"

    def __post_init__(self) -> None:
        if not (len(self.times_s) == len(self.gain_db) == len(self.blocked)) or not self.times_s:
            raise ValueError("ChannelTrace needs times_s, gain_db and blocked for the same devices (at least one)")
        for k, (t, g, b) in enumerate(zip(self.times_s, self.gain_db, self.blocked)):
            if not (np.ndim(t) == 1 and np.shape(t) == np.shape(g) == np.shape(b) and len(t) >= 1):
                raise ValueError(f"ChannelTrace: device {k} needs 1-D times, gains and flags of one length >= 1")
            if not (np.isfinite(t).all() and np.isfinite(g).all()) or t[0] < 0 or (np.diff(t) <= 0).any():
                raise ValueError(f"ChannelTrace: device {k} has non-finite values or times not >= 0 and increasing")
        if self.between not in ("hold", "linear") or self.after_end not in ("hold", "loop"):
            raise ValueError(f"ChannelTrace: between must be hold or linear, after_end hold or loop; got "
                             f"{self.between!r}, {self.after_end!r}")
        if not (np.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"ChannelTrace: start_s must be finite and >= 0, got {self.start_s}")

    def __len__(self) -> int:
        return len(self.times_s)

    @classmethod
    def from_samples(cls, device: Sequence[int], time_s: Sequence[float], gain_db: Sequence[float],
                     blocked: Sequence[bool] | None = None, **settings: object) -> "ChannelTrace":
        """A trace from flat samples (one entry per sample; devices ``0 .. max(device)``, each in time order)."""
        dev = np.asarray(device, dtype=np.int64)
        t, g = np.asarray(time_s, dtype=np.float64), np.asarray(gain_db, dtype=np.float64)
        b = np.zeros(dev.shape, dtype=bool) if blocked is None else np.asarray(blocked, dtype=bool)
        ks = range(int(dev.max()) + 1) if dev.size else range(0)
        return cls(tuple(t[dev == k] for k in ks), tuple(g[dev == k] for k in ks), tuple(b[dev == k] for k in ks),
                   **settings)  # type: ignore[arg-type]

    def at(self, clock_s: float) -> tuple[np.ndarray, np.ndarray]:
        """``(gain_db, blocked)``, each (K,), at virtual clock ``clock_s`` (module docstring)."""
        gains = np.empty(len(self))
        blocked = np.empty(len(self), dtype=bool)
        for k in range(len(self)):
            gains[k], blocked[k] = self._device_at(k, self.start_s + float(clock_s))
        return gains, blocked

    def _device_at(self, k: int, t: float) -> tuple[float, bool]:
        times, gains, flags = self.times_s[k], self.gain_db[k], self.blocked[k]
        if len(times) == 1 or t <= times[0]:
            return float(gains[0]), bool(flags[0])
        if self.after_end == "loop":
            period = times[-1] - times[0] + (times[-1] - times[-2])
            t = times[0] + (t - times[0]) % period
            times = np.append(times, times[0] + period)  # the first sample again, one period on
            gains = np.append(gains, gains[0])
        elif t >= times[-1]:
            return float(gains[-1]), bool(flags[-1])
        i = int(np.searchsorted(times, t, side="right")) - 1  # times[i] <= t < times[i + 1]
        flag = bool(flags[i])  # i < len(flags): t < the appended sample's time
        if self.between == "hold":
            return float(gains[i]), flag
        w = (t - times[i]) / (times[i + 1] - times[i])
        return float(gains[i] + w * (gains[i + 1] - gains[i])), flag


def traced_profiles(base: DeviceProfiles, trace: ChannelTrace, clock_s: float) -> tuple[DeviceProfiles, np.ndarray]:
    """``base`` with the trace's channel at virtual clock ``clock_s``, and the (K,) blocked flags.

    ``gain = 10^(g/10)``; ``fading`` becomes ``gain / 10^(-(PL + SF)/10)`` so that ``base``'s
    relation ``h = 10^(-(PL + SF)/10) |g|^2`` (:mod:`fedmoe.wireless.devices`) still holds.
    """
    if len(trace) != len(base):
        raise ValueError(f"{trace.source}: the trace describes {len(trace)} devices, there are {len(base)}")
    gain_db, blocked = trace.at(clock_s)
    gain = db_to_linear(gain_db)
    large_scale = db_to_linear(-(base.pathloss_db + base.shadowing_db))
    return replace(base, gain=gain, fading=gain / large_scale), blocked
