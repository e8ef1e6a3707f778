r"""What the server keeps of each federated round: its record on the virtual clock, and what
the devices reported that later rounds plan with.

A round is synchronous: it lasts as long as its slowest accepted reply,
:math:`\max_k T_k` (the deadline when devices were selected and none was accepted, 0
when none was selected), and costs :math:`\sum_k E_k`; the virtual clock advances by its
latency (:func:`fedmoe.federated.selection.round_costs` gives ``T_k`` and ``E_k``). A semi-asynchronous
round (:mod:`fedmoe.federated.buffered`) instead lasts from the previous server update to its buffer's
last arrival, which its strategy passes as ``latency_s`` to :meth:`RoundLedger.close_round`. The
:class:`~fedmoe.federated.protocol.TrainReply` objects the ledger is given carry the server's
own ``T_k``, ``E_k`` and upload bits, not the device's (:mod:`fedmoe.strategies.validation`): a device
cannot move the virtual clock or the energy account by what it reports.

:class:`RoundLedger` keeps, besides the records and the clock, each device's last training
loss (the statistical utility of ``utility-weighted`` selection) and, from stage II on, its
FLOPs per sample pass and update bits (the demand the next rounds plan with); all of it is
part of the state a resumed run restores (:mod:`fedmoe.federated.resume`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fedmoe.federated.protocol import TrainReply
from fedmoe.plugins.clock import VirtualClock


@dataclass
class RoundRecord:
    """One round on the virtual clock (synchronous: the round lasts as long as its slowest device)."""

    round: int
    stage: int
    selected: int
    completed: int
    failed: int
    planned_latency_s: float
    latency_s: float
    energy_j: float
    clock_s: float
    upload_bits: float
    train_loss: float
    device_flops: float = 0.0
    devices: list[int] = field(default_factory=list)
    usage_by_class: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rejected: int = 0  # replies refused by fedmoe.strategies.validation (also counted in ``failed``)
    clipped: int = 0  # accepted replies scaled down by fedmoe.strategies.validation.bound_updates
    # Each accepted device's own costs, aligned with ``devices`` (the server's T_k, E_k and upload bits,
    # its samples and training loss): the per-device table of the live log (fedmoe.federated.live_log).
    device_latency_s: list[float] = field(default_factory=list)
    device_energy_j: list[float] = field(default_factory=list)
    device_upload_bits: list[float] = field(default_factory=list)
    device_samples: list[float] = field(default_factory=list)
    device_loss: list[float] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)  # semi-asynchronous rounds: τ_k of each reply aggregated
    dropped: int = 0  # semi-asynchronous rounds: arrivals dropped for staleness (also counted in ``failed``)


class RoundLedger:
    """The round records, the virtual clock and the devices' reported costs and losses (module docstring).

    Parameters
    ----------
    device_class : numpy.ndarray
        (K,) the link class of each device (:func:`fedmoe.models.device_costs.link_classes`):
        expert usage is recorded per class.
    local_epochs : int
        The passes of a stage-II round (``federated.epochs_of_stage(2)``): the FLOPs a device
        reports in stage II cover that many passes.
    deadline_s : float
        ``federated.deadline_s``: the latency of a round in which no reply was accepted.
    """

    def __init__(self, device_class: np.ndarray, local_epochs: int, deadline_s: float) -> None:
        self.device_class = device_class
        self.local_epochs = local_epochs
        self.deadline_s = deadline_s
        self.history: list[RoundRecord] = []
        self.clock = VirtualClock()
        self.reported: dict[int, tuple[float, float]] = {}  # device -> (FLOPs per sample pass, bits) in stage II
        self.loss: dict[int, float] = {}  # device -> its last training loss

    def close_round(self, server_round: int, stage: int, replies: Sequence[TrainReply], failures: list[str],
                    selected: int, planned_latency_s: float, rejected: int = 0, clipped: int = 0,
                    latency_s: float | None = None, staleness: Sequence[int] = (), dropped: int = 0) -> RoundRecord:
        """Account for a round whose accepted replies are ``replies`` (in device order): advance the
        clock, remember the devices' losses (and, in stage II, their costs), and append its record.

        Parameters
        ----------
        server_round, stage : int
            The round and its stage.
        replies : Sequence[TrainReply]
            The accepted replies.
        failures : list[str]
            One line per device that failed, was silent or was rejected.
        selected : int
            Devices the round's messages went to.
        planned_latency_s : float
            The round latency the selection expected.
        rejected : int, optional
            Replies refused by the validation (also in ``failures``).
        clipped : int, optional
            Accepted replies whose update was clipped (:func:`fedmoe.strategies.validation.bound_updates`).
        latency_s : float, optional
            The round's latency when the caller knows it: in semi-asynchronous rounds
            (:mod:`fedmoe.federated.buffered`) the wait from the previous server update to the buffer's
            last arrival, not the replies' ``max T_k``. Default: ``max T_k`` (synchronous).
        staleness : Sequence[int], optional
            ``τ_k`` of each reply (semi-asynchronous rounds), kept in the record.
        dropped : int, optional
            Arrivals dropped for staleness (also in ``failures``).
        """
        lat, energy, bits, loss, n, devices, flops = [], [], [], [], [], [], []
        usage_sum: dict[str, np.ndarray] = {}
        usage_n: dict[str, float] = {}
        for r in replies:
            dev = r.partition_id
            weight = float(r.num_examples)
            devices.append(dev)
            lat.append(r.latency_s)
            energy.append(r.energy_j)
            bits.append(r.upload_bits)
            flops.append(r.flops)
            loss.append(r.train_loss)
            n.append(weight)
            self.loss[dev] = r.train_loss
            if stage == 2:
                passes = max(weight * self.local_epochs, 1.0)
                self.reported[dev] = (r.flops / passes, r.upload_bits)
            cls = str(self.device_class[dev])
            u = np.asarray(r.expert_usage, dtype=np.float64) * weight
            usage_sum[cls] = usage_sum.get(cls, 0.0) + u
            usage_n[cls] = usage_n.get(cls, 0.0) + weight
        idle = self.deadline_s if selected else 0.0
        own_latency = list(lat)  # each device's T_k, before a semi-asynchronous round's clock overrides it
        if latency_s is not None:
            lat, idle = [float(latency_s)] * len(lat), float(latency_s)
        tick = self.clock.advance(server_round, lat, energy, idle_latency_s=idle)
        n_arr = np.array(n)
        order = np.argsort(devices, kind="stable")
        by_device = lambda values: [float(values[i]) for i in order]  # noqa: E731 - aligned with sorted(devices)
        record = RoundRecord(
            round=server_round, stage=stage, selected=selected, completed=len(replies), failed=len(failures),
            planned_latency_s=planned_latency_s, latency_s=tick.latency_s, energy_j=tick.energy_j,
            clock_s=tick.clock_s, upload_bits=float(sum(bits)),
            train_loss=float((n_arr * np.array(loss)).sum() / n_arr.sum()) if replies else float("nan"),
            device_flops=float(sum(flops)), devices=sorted(devices),
            usage_by_class={c: (usage_sum[c] / usage_n[c]).tolist() for c in sorted(usage_sum)},
            failures=failures, rejected=rejected, clipped=clipped,
            device_latency_s=by_device(own_latency), device_energy_j=by_device(energy),
            device_upload_bits=by_device(bits), device_samples=by_device(n), device_loss=by_device(loss),
            staleness=[int(t) for t in staleness], dropped=int(dropped))
        self.history.append(record)
        return record

    @property
    def clock_s(self) -> float:
        """The virtual clock: the rounds' latencies added up, s."""
        return self.clock.clock_s

    def state_dict(self) -> dict[str, Any]:
        """``history``, ``clock_s``, ``reported`` and ``loss`` (a deep copy)."""
        return copy.deepcopy({"history": self.history, "clock_s": self.clock_s, "reported": self.reported,
                              "loss": self.loss})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (other keys are ignored)."""
        state = copy.deepcopy({k: state[k] for k in ("history", "clock_s", "reported", "loss")})
        self.history = list(state["history"])
        self.clock = VirtualClock()
        for r in self.history:  # the clock's rounds are the records' (the saved clock_s is their sum)
            self.clock.advance(r.round, [r.latency_s] if r.completed else [], [r.energy_j] if r.completed else [],
                               idle_latency_s=r.latency_s)
        self.reported = dict(state["reported"])
        self.loss = dict(state["loss"])
