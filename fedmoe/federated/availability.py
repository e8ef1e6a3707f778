r"""Which devices are on in a round: a two-state Markov chain per device, or an availability trace.

**Markov chain** (:class:`MarkovAvailability`). Device :math:`k` is on or off; between round
:math:`t` and :math:`t+1` an on device turns off with probability :math:`p_\text{off}` and an off
device turns on with :math:`p_\text{on}`, independently of the other devices and of its past (a
Gilbert–Elliott on/off model). Its chain has the stationary distribution

.. math::

    \pi_\text{on} = \frac{p_\text{on}}{p_\text{on} + p_\text{off}}, \qquad
    \pi_\text{off} = \frac{p_\text{off}}{p_\text{on} + p_\text{off}},

and an off period lasts :math:`1 / p_\text{on}` rounds on average (geometric). Round 1 has every
device on (``start="on"``) or each on with probability :math:`\pi_\text{on}` (``"stationary"``); each
later round draws one uniform number per device from a generator seeded with ``seed``, so a run is
reproducible and its state (the chains and the generator) can be saved and put back.

**Availability trace** (:func:`read_availability_csv`): a CSV of state changes per device
(``docs/federated.md``)::

    device,time_s,available
    0,0.0,1
    0,120.5,0
    3,40.0,0

* ``device``, ``time_s``: as every per-device time series (:mod:`fedmoe.device_series`): ids
  ``0 .. K-1``, times finite, >= 0 and increasing over a device's rows;
* ``available``: ``0``/``1`` (or ``false``/``true``).

A device's state holds from its row's time until its next row; before its first row, and
without any row, a device is available. The trace is read at each round's start on the
virtual clock. Every problem is an :class:`AvailabilityFormatError` of one line naming the file,
the data row and the field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedmoe.device_series import flag_cell, read_device_rows
from fedmoe.errors import UsageError

COLUMNS = ("device", "time_s", "available")


class AvailabilityFormatError(UsageError):
    """An availability trace file is missing or malformed (one line: file, row, field)."""


class MarkovAvailability:
    """Two-state on/off chains of ``num_devices`` devices (module docstring).

    Parameters
    ----------
    num_devices : int
        ``K``.
    p_off, p_on : float
        Per-round transition probabilities on → off and off → on, in ``[0, 1]``.
    start : {"on", "stationary"}
        Round 1: every device on, or each on with :math:`\\pi_\\text{on}`.
    seed : int
        Seed of the chains' generator.
    """

    def __init__(self, num_devices: int, p_off: float, p_on: float, start: Literal["on", "stationary"] = "on",
                 seed: int = 0) -> None:
        if not (0.0 <= p_off <= 1.0 and 0.0 <= p_on <= 1.0):
            raise ValueError(f"MarkovAvailability: p_off and p_on must lie in [0, 1], got {p_off!r}, {p_on!r}")
        self.p_off, self.p_on = float(p_off), float(p_on)
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA7A1]))
        if start == "stationary":
            self.on = self.rng.random(num_devices) < self.stationary_share
        elif start == "on":
            self.on = np.ones(num_devices, dtype=bool)
        else:
            raise ValueError(f"MarkovAvailability: start must be 'on' or 'stationary', got {start!r}")
        self.round = 1

    @property
    def stationary_share(self) -> float:
        """:math:`p_\\text{on} / (p_\\text{on} + p_\\text{off})`, the long-run share of rounds a device is on."""
        total = self.p_on + self.p_off
        if total == 0:
            raise ValueError("MarkovAvailability: p_on + p_off = 0 has no single stationary share")
        return self.p_on / total

    def at_round(self, server_round: int) -> np.ndarray:
        """(K,) bool: the devices on in ``server_round`` (the chains step forward to it; an earlier round
        than the last one asked gives the last one's state)."""
        while self.round < server_round:
            u = self.rng.random(self.on.size)
            self.on = np.where(self.on, u >= self.p_off, u < self.p_on)
            self.round += 1
        return self.on.copy()

    def state_dict(self) -> dict[str, Any]:
        """The chains, their round and the generator (a deep copy)."""
        return copy.deepcopy({"on": self.on, "round": self.round, "rng": self.rng.bit_generator.state})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        state = copy.deepcopy(state)
        on = np.asarray(state["on"], dtype=bool)
        if on.shape != self.on.shape:
            raise ValueError(f"MarkovAvailability: the saved state has {on.size} devices, this one {self.on.size}")
        self.on, self.round = on, int(state["round"])
        self.rng.bit_generator.state = state["rng"]


class AvailabilityTrace:
    """Per-device on/off changes, each held until the device's next one (module docstring)."""

    def __init__(self, times_s: list[np.ndarray], available: list[np.ndarray], source: str = "") -> None:
        self.times_s = [np.asarray(t, dtype=np.float64) for t in times_s]
        self.available = [np.asarray(a, dtype=bool) for a in available]
        self.source = source

    def __len__(self) -> int:
        return len(self.times_s)

    def at(self, clock_s: float) -> np.ndarray:
        """(K,) bool: each device's state at ``clock_s`` (its last row at or before it; available before any)."""
        out = np.ones(len(self), dtype=bool)
        for k, (t, a) in enumerate(zip(self.times_s, self.available)):
            i = int(np.searchsorted(t, clock_s, side="right")) - 1
            if i >= 0:
                out[k] = a[i]
        return out


def read_availability_csv(path: str | Path, num_devices: int) -> AvailabilityTrace:
    """Read the availability trace ``path`` of ``num_devices`` devices (module docstring)."""
    rows = read_device_rows(path, num_devices, COLUMNS, COLUMNS, AvailabilityFormatError, "availability file")
    times: list[list[float]] = [[] for _ in range(num_devices)]
    states: list[list[bool]] = [[] for _ in range(num_devices)]
    for row in rows:
        times[row.device].append(row.time_s)
        states[row.device].append(flag_cell(row.cells["available"], row.where, "available", AvailabilityFormatError))
    return AvailabilityTrace([np.array(t) for t in times], [np.array(s, dtype=bool) for s in states], str(path))


__all__ = ["COLUMNS", "AvailabilityFormatError", "AvailabilityTrace", "MarkovAvailability", "read_availability_csv"]
