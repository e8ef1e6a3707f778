r"""Devices that change across rounds: availability and a battery budget, as the server sees them.

Before a round, :meth:`DeviceDynamics.available` says which devices may be selected: those
that are on (:mod:`fedmoe.federated.availability`: a Markov chain per device, or a trace read
at the round's start on the virtual clock) and whose battery holds at least their expected
round energy :math:`\hat E_k`. After it, :meth:`DeviceDynamics.after_round` charges the
accepted devices and recharges everyone while the clock ran.

**Battery.** Device :math:`k` has capacity :math:`C_k` (J), charge :math:`Q_k` (initially
:math:`Q_k^0`, default :math:`C_k`) and recharge power :math:`P^\text{rech}_k` (W). It is
selectable in a round only if :math:`Q_k \ge \hat E_k`, with

.. math::

    \hat E_k = e_k F_k + P_k b_k / R_k(\lfloor N / \min(m, K) \rfloor),

the round energy of :func:`fedmoe.federated.selection.round_costs` at an equal share of the
:math:`N` resource blocks among the at most :math:`m` devices of a round (:func:`expected_round_energy`;
the allocation is not known before the selection). A round of latency :math:`L` in which the
accepted devices :math:`S` spent :math:`E_k` (the server's own figures, the ones the energy
account adds up) leaves

.. math::

    Q_k \leftarrow \min\bigl(C_k,\; \max(Q_k - E_k [k \in S], 0) + P^\text{rech}_k L\bigr),

every device recharging for the whole round, participants included. A device whose allocation
gave it fewer blocks than the estimate assumed may spend more than :math:`\hat E_k`; its charge
stops at 0. A device that runs flat is therefore out until :math:`P^\text{rech}_k` over the
following rounds' latencies has brought it back to :math:`\hat E_k`.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import numpy as np

from fedmoe.config import ConfigError, DynamicsConfig, PerDevice
from fedmoe.federated.availability import AvailabilityTrace, MarkovAvailability, read_availability_csv
from fedmoe.federated.selection import SelectionContext, round_costs
from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.ofdma import uplink_rate


def expected_round_energy(profiles: DeviceProfiles, flops: np.ndarray, bits: np.ndarray,
                          ctx: SelectionContext) -> np.ndarray:
    r"""(K,) :math:`\hat E_k` of the module docstring: ``E_k`` at an equal share of the resource blocks among
    ``min(ctx.per_round, K)`` devices (inf for a device with no rate that has bits to send)."""
    num_rb = ctx.wireless.uplink.num_resource_blocks
    share = max(num_rb // max(min(ctx.per_round, len(profiles)), 1), 1)
    rate = uplink_rate(np.full(len(profiles), share), ctx.wireless.uplink.resource_block_hz, profiles.tx_power_w,
                       profiles.gain, ctx.noise_psd_w_hz)
    _, energy = round_costs(profiles, np.asarray(flops, dtype=np.float64), np.asarray(bits, dtype=np.float64),
                            np.asarray(rate, dtype=np.float64))
    return np.asarray(energy, dtype=np.float64)


class Battery:
    """The charge of every device's battery (module docstring).

    Parameters
    ----------
    num_devices : int
        ``K``.
    capacity_j, initial_j, recharge_w : float or sequence of float
        :math:`C_k`, :math:`Q_k^0` (None: full) and :math:`P^\\text{rech}_k`, one value for all or one per device.
    """

    def __init__(self, num_devices: int, capacity_j: PerDevice, initial_j: PerDevice | None = None,
                 recharge_w: PerDevice = 0.0) -> None:
        self.capacity_j = _per_device("capacity_j", capacity_j, num_devices)
        self.recharge_w = _per_device("recharge_w", recharge_w, num_devices)
        self.charge_j = self.capacity_j.copy() if initial_j is None else _per_device("initial_j", initial_j,
                                                                                     num_devices)
        if (self.capacity_j <= 0).any() or (self.recharge_w < 0).any() or (self.charge_j < 0).any():
            raise ValueError("Battery: capacity_j must be > 0, initial_j and recharge_w >= 0")
        self.charge_j = np.minimum(self.charge_j, self.capacity_j)

    def holds(self, energy_j: np.ndarray) -> np.ndarray:
        """(K,) bool: :math:`Q_k \\ge \\hat E_k`."""
        return self.charge_j >= np.asarray(energy_j, dtype=np.float64)

    def spend_and_recharge(self, devices: Iterable[int], energy_j: Iterable[float], latency_s: float) -> None:
        """The update of the module docstring after a round of ``latency_s`` s."""
        for k, e in zip(devices, energy_j):
            self.charge_j[int(k)] = max(self.charge_j[int(k)] - float(e), 0.0)
        self.charge_j = np.minimum(self.charge_j + self.recharge_w * float(latency_s), self.capacity_j)


class DeviceDynamics:
    """Availability and battery of ``K`` devices across rounds (module docstring); either part may be absent.

    Parameters
    ----------
    num_devices : int
        ``K``.
    availability : MarkovAvailability or AvailabilityTrace, optional
        Who is on in a round (None: everyone).
    battery : Battery, optional
        The devices' batteries (None: unlimited energy).
    """

    def __init__(self, num_devices: int, availability: MarkovAvailability | AvailabilityTrace | None = None,
                 battery: Battery | None = None) -> None:
        for name, part, size in (("availability", availability, _size(availability)),
                                 ("battery", battery, None if battery is None else battery.capacity_j.size)):
            if part is not None and size != num_devices:
                raise ValueError(f"DeviceDynamics: the {name} covers {size} devices, there are {num_devices}")
        self.num_devices = num_devices
        self.availability = availability
        self.battery = battery

    @classmethod
    def from_config(cls, cfg: DynamicsConfig, num_devices: int) -> "DeviceDynamics | None":
        """The dynamics of ``federated.dynamics``; None when both parts are off (the default)."""
        if cfg.availability is None and cfg.battery is None:
            return None
        a = cfg.availability
        availability: MarkovAvailability | AvailabilityTrace | None = None
        if a is not None and a.model == "trace":
            availability = read_availability_csv(str(a.path), num_devices)
        elif a is not None:
            availability = MarkovAvailability(num_devices, a.p_off, a.p_on, a.start, a.seed)
        b = cfg.battery
        try:
            battery = None if b is None else Battery(num_devices, b.capacity_j, b.initial_j, b.recharge_w)
        except ValueError as err:
            raise ConfigError(f"federated.dynamics.battery: {err}") from None
        return cls(num_devices, availability, battery)

    def available(self, server_round: int, clock_s: float, expected_energy: np.ndarray | None = None) -> np.ndarray:
        """(K,) bool: devices on in ``server_round`` (at virtual clock ``clock_s``, the round's start) whose
        battery holds ``expected_energy`` (:func:`expected_round_energy`; needed with a battery)."""
        on = np.ones(self.num_devices, dtype=bool)
        if isinstance(self.availability, MarkovAvailability):
            on &= self.availability.at_round(server_round)
        elif isinstance(self.availability, AvailabilityTrace):
            on &= self.availability.at(clock_s)
        if self.battery is not None:
            if expected_energy is None:
                raise ValueError("DeviceDynamics.available: a battery needs each device's expected round energy")
            on &= self.battery.holds(expected_energy)
        return on

    def selectable(self, server_round: int, clock_s: float, profiles: DeviceProfiles, flops: np.ndarray,
                   bits: np.ndarray, ctx: SelectionContext) -> np.ndarray:
        """:meth:`available` for a round whose demand is ``flops`` and ``bits`` on the channel ``profiles``: the
        expected round energy (:func:`expected_round_energy`) is worked out only when there is a battery."""
        energy = None if self.battery is None else expected_round_energy(profiles, flops, bits, ctx)
        return self.available(server_round, clock_s, energy)

    def after_round(self, devices: Iterable[int], energy_j: Iterable[float], latency_s: float) -> None:
        """The accepted ``devices`` spent ``energy_j`` in a round of ``latency_s`` s (no-op without a battery)."""
        if self.battery is not None:
            self.battery.spend_and_recharge(devices, energy_j, latency_s)

    @property
    def charge_j(self) -> np.ndarray | None:
        """(K,) the batteries' charge, J (None without a battery)."""
        return None if self.battery is None else self.battery.charge_j.copy()

    def state_dict(self) -> dict[str, Any]:
        """What later rounds depend on: the Markov chains and their generator, the batteries' charge."""
        state: dict[str, Any] = {}
        if isinstance(self.availability, MarkovAvailability):
            state["markov"] = self.availability.state_dict()
        if self.battery is not None:
            state["charge_j"] = self.battery.charge_j.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        if isinstance(self.availability, MarkovAvailability):
            self.availability.load_state_dict(state["markov"])
        if self.battery is not None:
            charge = np.asarray(state["charge_j"], dtype=np.float64)
            if charge.shape != self.battery.charge_j.shape:
                raise ValueError(f"DeviceDynamics: the saved charge has {charge.size} devices, there are "
                                 f"{self.num_devices}")
            self.battery.charge_j = copy.deepcopy(charge)


def _size(availability: MarkovAvailability | AvailabilityTrace | None) -> int | None:
    if isinstance(availability, MarkovAvailability):
        return availability.on.size
    return None if availability is None else len(availability)


def _per_device(name: str, value: PerDevice, k: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"Battery: {name} must be finite")
    if arr.ndim == 0:
        return np.full(k, float(arr))
    if arr.shape != (k,):
        raise ValueError(f"Battery: {name} has {arr.size} values, there are {k} devices (give one, or one each)")
    return arr.copy()


__all__ = ["Battery", "DeviceDynamics", "expected_round_energy"]
