r"""The event loop of semi-asynchronous rounds on the virtual clock: devices in flight, their arrivals in
virtual-time order, the buffer of ``K`` arrivals each server update waits for, and the staleness weights
(FedBuff, [P010] Algorithm 1; ``docs/federated.md``, "Semi-asynchronous rounds").

A device sent the global model of version :math:`v_k` at virtual time :math:`t_k` (the server's clock
when it was dispatched) arrives at :math:`a_k = t_k + T_k`, :math:`T_k` its training and upload time
(:func:`fedmoe.federated.selection.round_costs`). The server, at version :math:`v` and time
:math:`t`, takes the arrivals in the order of :math:`a_k` (ties: the order of dispatch) until it has
``K`` of them; an arrival whose staleness :math:`\tau_k = v - v_k` exceeds ``max_staleness`` is
dropped on the way (it does not count towards ``K``). The server update happens at the time of the
last arrival taken, :math:`t' = a_{(K)}`, so the clock advances by :math:`t' - t`; if fewer than ``K``
are in flight, the buffer holds whatever arrives until the last of them.

Staleness weights :math:`s(\tau)` are registered by name in :data:`STALENESS_WEIGHTS`:
``inverse_sqrt`` :math:`1/\sqrt{1+\tau}` (the choice of [P010]'s experiments), ``inverse``
:math:`1/(1+\tau)` and ``constant`` :math:`1`.

Pure Python and numpy: no Flower, no torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from fedmoe.federated.protocol import TrainReply
from fedmoe.registry import Registry

__all__ = ["STALENESS_WEIGHTS", "ArrivalQueue", "Buffer", "InFlight", "rebased"]

StalenessWeight = Callable[[int], float]
"""``s(τ) -> weight`` for a staleness ``τ >= 0`` (server versions since the device's model)."""

STALENESS_WEIGHTS: Registry[StalenessWeight] = Registry("staleness weight")


@STALENESS_WEIGHTS.register("inverse_sqrt")
def inverse_sqrt(tau: int) -> float:
    """:math:`s(\\tau) = 1/\\sqrt{1+\\tau}` ([P010], its experiments' choice)."""
    return 1.0 / float(np.sqrt(1.0 + tau))


@STALENESS_WEIGHTS.register("inverse")
def inverse(tau: int) -> float:
    """:math:`s(\\tau) = 1/(1+\\tau)`: stale updates fade faster."""
    return 1.0 / (1.0 + tau)


@STALENESS_WEIGHTS.register("constant")
def constant(tau: int) -> float:
    """:math:`s(\\tau) = 1`: staleness ignored (FedBuff without down-weighting)."""
    return 1.0


@dataclass
class InFlight:
    """A device training on the virtual clock, with what it will deliver when it arrives.

    Its reply came back through Flower at once (the simulation runs it then); the server holds it
    until its virtual arrival time."""

    device: int
    node: int
    version: int
    """The global model version it was sent."""
    dispatched_s: float
    """The server's virtual clock when it was sent its instructions."""
    arrival_s: float
    """``dispatched_s + T_k``."""
    num_rb: int
    """Resource blocks it holds until it arrives."""
    seq: int
    """Order of dispatch (breaks ties in arrival time)."""
    reply: TrainReply
    """Its checked metrics, with the server's ``T_k`` and ``E_k``."""
    arrays: dict[str, np.ndarray]
    """Its checked (and clipped) arrays ``w_k``, by message key."""
    delta: dict[str, np.ndarray]
    """Its update against the version it was sent, ``w_k − w^{v_k}``, by message key (floating arrays, float64)."""


@dataclass
class Buffer:
    """What one server update aggregates."""

    taken: list[InFlight]
    """The arrivals aggregated, in arrival order."""
    staleness: list[int]
    """``τ_k`` of each of them."""
    dropped: list[InFlight]
    """Arrivals left out for being staler than ``max_staleness``."""
    until_s: float
    """The virtual time of the last arrival taken or dropped (the previous clock if none)."""


class ArrivalQueue:
    """The devices in flight and the server's model version (module docstring)."""

    def __init__(self) -> None:
        self.in_flight: list[InFlight] = []
        self.version = 0
        self._seq = 0

    def __len__(self) -> int:
        return len(self.in_flight)

    @property
    def devices(self) -> set[int]:
        """The devices in flight: none of them may be dispatched again before it arrives."""
        return {f.device for f in self.in_flight}

    @property
    def blocks_held(self) -> int:
        """Resource blocks held by the devices in flight."""
        return int(sum(f.num_rb for f in self.in_flight))

    def dispatch(self, device: int, node: int, now_s: float, num_rb: int, reply: TrainReply,
                 arrays: dict[str, np.ndarray], sent: dict[str, np.ndarray]) -> InFlight:
        """A device sent the current version (packed arrays ``sent``) at ``now_s``, which replied ``arrays``:
        it arrives at ``now_s + reply.latency_s``."""
        if device in self.devices:
            raise ValueError(f"device {device} is already in flight")
        # in float64 the difference of two float32 values is exact (unless their binary exponents lie more than
        # 29 apart), so that w^v + 1·Δ gives back w_k bit for bit
        delta = {k: v.astype(np.float64) - sent[k].astype(np.float64) for k, v in arrays.items()
                 if np.issubdtype(v.dtype, np.floating)}
        item = InFlight(int(device), int(node), self.version, float(now_s), float(now_s) + float(reply.latency_s),
                        int(num_rb), self._seq, reply, dict(arrays), delta)
        self._seq += 1
        self.in_flight.append(item)
        return item

    def collect(self, buffer_size: int, now_s: float, max_staleness: int | None = None) -> Buffer:
        """Take arrivals in virtual-time order until ``buffer_size`` are buffered or nobody is left in flight,
        dropping those staler than ``max_staleness`` (module docstring). The version is not bumped:
        :meth:`advance` does it once the update is applied."""
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        order = sorted(self.in_flight, key=lambda f: (f.arrival_s, f.seq))
        taken, staleness, dropped = [], [], []
        until = float(now_s)
        for item in order:
            if len(taken) == buffer_size:
                break
            tau = self.version - item.version
            if tau < 0:
                raise ValueError(f"device {item.device} holds version {item.version}, after the server's "
                                 f"{self.version}")
            until = max(until, item.arrival_s)
            if max_staleness is not None and tau > max_staleness:
                dropped.append(item)
            else:
                taken.append(item)
                staleness.append(tau)
        gone = {id(f) for f in taken + dropped}
        self.in_flight = [f for f in self.in_flight if id(f) not in gone]
        return Buffer(taken, staleness, dropped, until)

    def advance(self) -> int:
        """Bump the model version after a server update; return the new version."""
        self.version += 1
        return self.version

    def state_dict(self) -> dict[str, Any]:
        """The devices in flight, the version and the dispatch counter (a deep copy)."""
        return copy.deepcopy({"in_flight": self.in_flight, "version": self.version, "seq": self._seq})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        state = copy.deepcopy(state)
        items = list(state["in_flight"])
        if not all(isinstance(f, InFlight) for f in items):
            raise ValueError("in_flight holds something other than InFlight records")
        self.in_flight, self.version, self._seq = items, int(state["version"]), int(state["seq"])


def rebased(current: Mapping[str, np.ndarray], item: InFlight, weight: float,
            steps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    r"""``item``'s update moved onto the current model: :math:`w^v + s\,(w_k - w^{v_k})` on the values
    ``steps`` marks (trainable parameters), the device's own :math:`w_k` elsewhere (statistics such as the
    standardiser's and BatchNorm's buffers, which describe the data rather than step the model, and
    non-floating arrays, which no rule aggregates).

    Parameters
    ----------
    current : Mapping[str, numpy.ndarray]
        The packed global arrays :math:`w^v`, by message key.
    item : InFlight
        The arrival.
    weight : float
        :math:`s(\tau_k)`.
    steps : Mapping[str, numpy.ndarray]
        ``{message key: flat bool mask}`` of the values that are trainable parameters.
    """
    out = {}
    for key, own in item.arrays.items():
        if key not in item.delta:
            out[key] = own
            continue
        moved = (current[key].astype(np.float64) + weight * item.delta[key]).astype(own.dtype)
        out[key] = np.where(steps[key].reshape(own.shape), moved, own) if key in steps else own
    return out
