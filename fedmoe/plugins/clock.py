r"""A virtual clock for the rounds of any Flower strategy: how long each round took on the simulated
radio, and what it cost the devices.

A synchronous round waits for its slowest participant and every participant spends its own
energy ([P001] eq. 3–5 give a device's latency and energy; ``docs/federated.md``, "The virtual
clock")::

    T_round = max_k T_k,        E_round = Σ_k E_k,        clock ← clock + T_round

over the devices whose reply the server accepted. A round in which devices were sent work but
none was accepted lasts ``idle_latency_s`` (the deadline: the server waited for it); a round in
which nobody was sent work lasts 0.

The clock reads its ``T_k`` and ``E_k`` from one of two places:

* :meth:`VirtualClock.advance_plan`: the server's own estimate, the :class:`~fedmoe.federated.selection.RoundPlan`
  of the round (what a device cannot lie about);
* :meth:`VirtualClock.advance_reported`: what each reply reports in its metrics, under names you
  choose (``latency_key``, ``energy_key``); a missing, negative or non-finite value leaves that
  reply out of the clock with a logged reason.

Pure Python and numpy: importing it loads neither torch nor Flower.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

__all__ = ["ClockTick", "VirtualClock"]


@dataclass(frozen=True)
class ClockTick:
    """One round on the virtual clock."""

    round: int
    latency_s: float
    """``max_k T_k`` of the round (or the idle latency)."""
    energy_j: float
    """``Σ_k E_k`` of the round."""
    clock_s: float
    """The clock after the round: the latencies of every round so far, added up."""
    total_energy_j: float
    """The energy of every round so far, added up."""
    participants: int
    """How many ``(T_k, E_k)`` pairs the round was charged for."""


class VirtualClock:
    """Running latency and energy totals of a run's rounds (module docstring).

    Parameters
    ----------
    latency_key, energy_key : str
        The metric names :meth:`advance_reported` reads ``T_k`` and ``E_k`` from, in each reply's
        metric records (default ``"latency-s"`` and ``"energy-j"``).
    clock_key, round_latency_key, round_energy_key, total_energy_key : str
        The names :meth:`metrics` gives the clock, the round's latency and energy, and the running
        energy total, for a ``MetricRecord`` or a log line.
    """

    def __init__(self, latency_key: str = "latency-s", energy_key: str = "energy-j", clock_key: str = "clock-s",
                 round_latency_key: str = "round-latency-s", round_energy_key: str = "round-energy-j",
                 total_energy_key: str = "total-energy-j") -> None:
        names = {"latency_key": latency_key, "energy_key": energy_key, "clock_key": clock_key,
                 "round_latency_key": round_latency_key, "round_energy_key": round_energy_key,
                 "total_energy_key": total_energy_key}
        for what, name in names.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"VirtualClock: {what} must be a non-empty string, got {name!r}")
        outputs = [clock_key, round_latency_key, round_energy_key, total_energy_key]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"VirtualClock: the output metric names must differ, got {outputs}")
        self.latency_key, self.energy_key = latency_key, energy_key
        self.clock_key, self.round_latency_key = clock_key, round_latency_key
        self.round_energy_key, self.total_energy_key = round_energy_key, total_energy_key
        self.history: list[ClockTick] = []

    @property
    def clock_s(self) -> float:
        """The rounds' latencies added up, s."""
        return self.history[-1].clock_s if self.history else 0.0

    @property
    def energy_j(self) -> float:
        """The rounds' energies added up, J."""
        return self.history[-1].total_energy_j if self.history else 0.0

    def advance(self, server_round: int, latencies_s: Sequence[float], energies_j: Sequence[float],
                idle_latency_s: float = 0.0) -> ClockTick:
        """Charge a round with the ``T_k`` and ``E_k`` of its participants (module docstring).

        Parameters
        ----------
        server_round : int
            The round.
        latencies_s, energies_j : Sequence[float]
            ``T_k`` and ``E_k`` of the devices the round counts (same length; finite, ``>= 0``).
        idle_latency_s : float
            The round's latency when ``latencies_s`` is empty: the deadline if devices were sent work
            and none was accepted, 0 if nobody was sent any.
        """
        lat = [float(v) for v in latencies_s]
        energy = [float(v) for v in energies_j]
        if len(lat) != len(energy):
            raise ValueError(f"VirtualClock.advance: {len(lat)} latencies but {len(energy)} energies")
        for name, values in (("latency", lat), ("energy", energy), ("idle latency", [float(idle_latency_s)])):
            bad = [v for v in values if not math.isfinite(v) or v < 0]
            if bad:
                raise ValueError(f"VirtualClock.advance: round {server_round} has a {name} of {bad[0]!r} "
                                 "(must be finite and >= 0)")
        latency = max(lat) if lat else float(idle_latency_s)
        spent = math.fsum(energy)
        tick = ClockTick(round=int(server_round), latency_s=latency, energy_j=spent, clock_s=self.clock_s + latency,
                         total_energy_j=self.energy_j + spent, participants=len(lat))
        self.history.append(tick)
        return tick

    def advance_plan(self, server_round: int, plan: Any, completed: Iterable[int] | None = None,
                     idle_latency_s: float = 0.0) -> ClockTick:
        """Charge a round with the server's own estimate: the ``latency_s`` and ``energy_j`` of ``plan``
        (a :class:`~fedmoe.federated.selection.RoundPlan`) for its devices in ``completed`` (all of
        them when ``None``)."""
        devices = [int(k) for k in plan.devices]
        keep = set(devices) if completed is None else {int(k) for k in completed}
        rows = [j for j, k in enumerate(devices) if k in keep]
        return self.advance(server_round, [plan.latency_s[j] for j in rows], [plan.energy_j[j] for j in rows],
                            idle_latency_s=idle_latency_s if devices else 0.0)

    def advance_reported(self, server_round: int, replies: Iterable[Any], idle_latency_s: float = 0.0) -> ClockTick:
        """Charge a round with what each reply (a Flower ``Message``) reports under ``latency_key`` and
        ``energy_key``, in any of its metric records. Error replies are not counted; a reply whose
        values are missing, negative or not finite is left out with a logged reason."""
        lat, energy = [], []
        for msg in replies:
            if msg.has_error():
                continue
            values = self._read(msg.content.metric_records.values())
            if isinstance(values, str):
                log.warning("round %d: the virtual clock leaves out the reply of node %s: %s", server_round,
                            msg.metadata.src_node_id, values)
                continue
            lat.append(values[0])
            energy.append(values[1])
        return self.advance(server_round, lat, energy, idle_latency_s=idle_latency_s)

    def _read(self, records: Iterable[Mapping[str, Any]]) -> tuple[float, float] | str:
        found: dict[str, Any] = {}
        for record in records:
            for key in (self.latency_key, self.energy_key):
                if key in record and key not in found:
                    found[key] = record[key]
        out = []
        for key in (self.latency_key, self.energy_key):
            if key not in found:
                return f"no metric {key!r}"
            value = found[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"metric {key!r} is not a number"
            if not math.isfinite(float(value)) or value < 0:
                return f"metric {key!r} is {value!r} (must be finite and >= 0)"
            out.append(float(value))
        return out[0], out[1]

    def metrics(self) -> dict[str, float]:
        """The last round's latency and energy and the running totals, under the configured names."""
        last = self.history[-1] if self.history else None
        return {self.round_latency_key: last.latency_s if last else 0.0,
                self.round_energy_key: last.energy_j if last else 0.0,
                self.clock_key: self.clock_s, self.total_energy_key: self.energy_j}

    def state_dict(self) -> dict[str, Any]:
        """The rounds so far (plain values: a checkpoint can store them as JSON)."""
        return {"history": [asdict(t) for t in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.history = [ClockTick(**t) for t in state["history"]]
