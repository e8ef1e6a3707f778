"""FedBuff: semi-asynchronous rounds of the expert-wise mixture on the virtual clock.

Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022
(arXiv:2106.06639) [P010]: devices train at their own pace, the server buffers their updates and
updates the model every ``K`` arrivals, each update scaled by a function of its staleness. Here the
buffered updates are combined group by group as :class:`fedmoe.strategies.ExpertWise` combines a
round's replies (shared parameters over every update, expert ``i`` over those that computed it), on
the same devices, channel, validation and virtual clock. The event loop itself (who is in flight,
who arrives when, staleness) is :mod:`fedmoe.federated.buffered`.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import cached_property
from typing import Any, Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from fedmoe.config import ConfigError, FedMoEConfig
from fedmoe.federated.buffered import STALENESS_WEIGHTS, ArrivalQueue, InFlight, rebased
from fedmoe.federated.parameters import FIXED, LOCAL
from fedmoe.federated.protocol import TrainReply
from fedmoe.federated.resume import STATE_RECORDS
from fedmoe.federated.rounds import RoundRecord
from fedmoe.federated.selection import RoundPlan, SelectionContext, plan_round
from fedmoe.federated.world import ScenarioWorld
from fedmoe.flower import array_of, to_numpy
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.strategies.validation import Update

log = logging.getLogger(__name__)

STATE_RECORDS.register("InFlight", InFlight)
STATE_RECORDS.register("TrainReply", TrainReply)


def check_fedbuff_config(cfg: FedMoEConfig) -> None:
    """What ``federated.fedbuff`` needs beyond its own bounds, before anything starts: a known staleness
    weight, and no more devices in flight than there are devices or uplink resource blocks (each holds one
    block at least until it arrives). A one-line :class:`~fedmoe.config.ConfigError` naming the field."""
    opts = cfg.federated.fedbuff
    STALENESS_WEIGHTS.check(opts.staleness, "federated.fedbuff.staleness")
    num_rb = cfg.wireless.uplink.num_resource_blocks
    if opts.concurrency > cfg.partition.num_devices:
        raise ConfigError(f"federated.fedbuff.concurrency={opts.concurrency} exceeds partition.num_devices="
                          f"{cfg.partition.num_devices}")
    if opts.concurrency > num_rb:
        raise ConfigError(f"federated.fedbuff.concurrency={opts.concurrency} exceeds the {num_rb} uplink resource "
                          "blocks (each device in flight holds one at least)")


class FedBuff(ExpertWise):
    r"""Buffered asynchronous (semi-asynchronous) expert-wise aggregation on the virtual clock ([P010]).

    **Devices in flight.** ``concurrency`` devices train at once. A device is sent the global model of
    version :math:`v_k` when the server's clock reads :math:`t_k`, and arrives at
    :math:`a_k = t_k + T_k` (:math:`T_k = F_k/f_k + b_k/R_k`, the server's own cost of its checked reply,
    as in :class:`~fedmoe.strategies.ExpertWise`). A device in flight cannot be selected again. Each round
    of ``federated.rounds`` is one server update:

    1. **Dispatch.** The free slots (``concurrency`` minus the devices in flight) are filled by
       ``federated.selection`` among the selectable devices not in flight, and
       ``federated.allocation`` shares among them the resource blocks not held: *a device holds the
       blocks it was allocated from its dispatch to its arrival*, so the devices in flight never hold
       more than :math:`N_{rb}` (an assumption on the uplink's sharing: a device's blocks are
       reserved while it computes, which is conservative). Their replies are validated and clipped at
       once against the version they were sent (:mod:`fedmoe.strategies.validation`); a rejected, failed
       or silent device frees its slot and blocks at once (a simplification: a real server would learn
       of it only at its arrival).
    2. **Buffer.** The arrivals are taken in virtual-time order until ``K = buffer_size`` are
       buffered; an arrival whose staleness :math:`\tau_k = v - v_k` (server updates since its model)
       exceeds ``max_staleness`` is dropped (logged; not counted towards ``K``)
       (:class:`fedmoe.federated.buffered.ArrivalQueue`).
    3. **Server update** ([P010] Algorithm 1, with the expert-wise weights): with
       :math:`\Delta_k = w_k - w^{v_k}` and :math:`s` the ``staleness`` weight,

       .. math::

           \bar\Delta_g = \frac{\sum_{k \in B_g} \omega_{kg}\, s(\tau_k)\, \Delta_{k,g}}{\sum_{k \in B_g} \omega_{kg}},
           \qquad w_g^{v+1} = w_g^v + \eta_g\, \bar\Delta_g,

       for the shared group (:math:`\omega_{kg} = n_k`, over the whole buffer :math:`B`) and each expert
       :math:`i` (:math:`\omega_{ki} = n_k u_{ki}`, over the buffered updates with :math:`u_{ki} > 0`);
       :math:`\eta_g` is ``server_lr``. [P010] divides the sum of :math:`s(\tau_k)\Delta_k` by
       :math:`K`; the weights :math:`\omega` generalise that mean as ExpertWise's do FedAvg's. It is
       computed by handing the rule of ``federated.aggregator`` (FedAvg by default) the updates moved
       onto the current model, :math:`w^v + s(\tau_k)\Delta_k` (:func:`fedmoe.federated.buffered.rebased`),
       then stepping by :math:`\eta_g`. Buffers that hold statistics of the data (the standardiser's,
       BatchNorm's) are averaged as values, not as steps. With ``K = concurrency = clients_per_round``,
       :math:`\eta_g = 1` and FedAvg every update has :math:`\tau = 0` and the run is ExpertWise's
       synchronous one.
    4. **Virtual clock.** The update happens at the buffer's last arrival :math:`t' = a_{(K)}`: the
       round's latency is :math:`t' - t` (not :math:`\max_k T_k`) and its energy
       :math:`\sum_{k \in B} E_k` of the buffered updates (a stale update dropped, like a rejected one, is
       not charged). If fewer than ``K`` devices are in flight, the buffer takes them all. Devices still
       in flight when the run ends are not charged.

    Resume: the devices in flight (their replies and deltas), the version and the dispatch counter are
    part of the saved state, so a resumed run continues as the uninterrupted one does.

    Config keys every client must honour: those of :class:`~fedmoe.strategies.ExpertWise` (the TRAIN
    message is the same; the device does not know it is asynchronous).

    Parameters
    ----------
    world : ScenarioWorld
        The scenario; ``federated.fedbuff`` (:class:`fedmoe.config.FedBuffConfig`) gives ``buffer_size``,
        ``concurrency``, ``staleness`` (a name in :data:`fedmoe.federated.buffered.STALENESS_WEIGHTS`),
        ``server_lr`` and ``max_staleness``.
    aggregator, aggregator_options, on_round
        As in :class:`~fedmoe.strategies.ExpertWise`.
    """

    def __init__(self, world: ScenarioWorld, aggregator: str | None = None,
                 aggregator_options: dict[str, Any] | None = None,
                 on_round: Callable[[RoundRecord], None] | None = None) -> None:
        super().__init__(world, aggregator, aggregator_options, on_round)
        check_fedbuff_config(world.cfg)
        opts = self.fed.fedbuff
        self.buffer_size, self.concurrency = opts.buffer_size, opts.concurrency
        self.server_lr, self.max_staleness = opts.server_lr, opts.max_staleness
        self.staleness_weight = STALENESS_WEIGHTS.get(opts.staleness)
        self.queue = ArrivalQueue()

    def summary(self) -> None:
        """Log the strategy's settings."""
        super().summary()
        opts = self.fed.fedbuff
        log.info("FedBuff: K=%d of %d in flight, s=%s, server lr %g, max staleness %s", self.buffer_size,
                 self.concurrency, opts.staleness, self.server_lr, self.max_staleness)

    # ------------------------------------------------------------------ dispatch

    def plan(self, server_round: int, allowed: np.ndarray) -> RoundPlan:
        """Fill the free slots among the devices not in flight, on the blocks they do not hold (class
        docstring, step 1)."""
        up = self.world.cfg.wireless.uplink
        free_rb = up.num_resource_blocks - self.queue.blocks_held
        slots = min(self.concurrency - len(self.queue), free_rb)
        if slots <= 0:
            none = np.zeros(0)
            return RoundPlan(none.astype(np.int64), none.astype(np.int64), none, none, none, "no free slot")
        wireless = self.world.cfg.wireless.model_copy(update={"uplink": up.model_copy(
            update={"total_bandwidth_hz": free_rb * up.resource_block_hz})})
        ctx = SelectionContext(wireless, slots, self.fed.deadline_s, self._rng, self.fed.selection_options)
        demand = self._demand(allowed, server_round, ctx)
        busy = np.zeros(demand.num_devices, dtype=bool)
        busy[sorted(self.queue.devices)] = True
        demand = dataclasses.replace(demand, available=demand.available & ~busy)
        return plan_round(demand, ctx, self.fed.selection, self.fed.allocation)

    # ------------------------------------------------------------------ arrivals and the server update

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Put the checked replies in flight, buffer the next ``K`` arrivals, update the model from them and
        move the clock to the last of them (class docstring, steps 1–4)."""
        got = self.accept(server_round, replies)
        now = self.clock_s
        sent = self.validator.sent
        blocks = {} if self._plan is None else {int(k): int(b) for k, b in zip(self._plan.devices,
                                                                                self._plan.num_rb)}
        for u in got.updates:
            self.queue.dispatch(u.device, u.node, now, blocks.get(u.device, 1), u.reply, u.arrays, sent)
        buffer = self.queue.collect(self.buffer_size, now, self.max_staleness)
        failures = list(got.failures)
        for item in buffer.dropped:
            line = (f"device {item.device}: dropped, staleness {self.queue.version - item.version} > "
                    f"{self.max_staleness}")
            failures.append(line)
            log.warning("round %d: %s", server_round, line)
        order = sorted(range(len(buffer.taken)), key=lambda j: buffer.taken[j].device)  # as ExpertWise: device order
        taken, staleness = [buffer.taken[j] for j in order], [buffer.staleness[j] for j in order]
        updates = self._moved(taken, staleness)
        merged = self.step(self.aggregate_groups(server_round, [u.message() for u in updates]))
        if updates:
            self.queue.advance()
        record = self.ledger.close_round(
            server_round, self._stage, [u.reply for u in updates], failures, got.selected,
            self._plan.round_latency_s if self._plan is not None else 0.0, rejected=got.rejected,
            clipped=got.clipped, latency_s=buffer.until_s - now, staleness=staleness,
            dropped=len(buffer.dropped))
        log.info("round %d: server update %d from %d arrivals (staleness %s), %d in flight, clock %.4g s",
                 server_round, self.queue.version, len(updates), staleness, len(self.queue), record.clock_s)
        return merged, self.end_round(record, updates)

    def _moved(self, taken: list[InFlight], staleness: list[int]) -> list[Update]:
        """Each buffered arrival as an :class:`~fedmoe.strategies.validation.Update` whose arrays are moved
        onto the current model (:func:`fedmoe.federated.buffered.rebased` with :math:`s(\\tau_k)`)."""
        current = to_numpy(self._wire(self._global))
        return [Update(item.node, item.device, item.reply,
                       rebased(current, item, float(self.staleness_weight(tau)), self._steps))
                for item, tau in zip(taken, staleness)]

    def step(self, merged: ArrayRecord | None) -> ArrayRecord | None:
        """:math:`w^v + \\eta_g (\\text{merged} - w^v)` on the floating arrays (class docstring, step 3);
        ``merged`` as it is when :math:`\\eta_g = 1`."""
        if merged is None or self.server_lr == 1.0:
            return merged
        out = {}
        for k in merged.keys():
            new, old = merged[k].numpy(), self._global[k].numpy()
            if np.issubdtype(new.dtype, np.floating):
                new = (old.astype(np.float64) + self.server_lr * (new.astype(np.float64) - old)).astype(new.dtype)
            out[k] = array_of(new)
        return ArrayRecord(out)

    @cached_property
    def _steps(self) -> dict[str, np.ndarray]:
        """``{message key: flat bool mask}`` of the values that are trainable parameters (the rest are
        buffers, averaged as values)."""
        params = self.validator.parameter_names
        parts: dict[str, list[tuple[slice, bool]]] = {}
        for group in self.groups:
            if group not in (LOCAL, FIXED):
                for name, key, where in self.layout.entries(group):
                    parts.setdefault(key, []).append((where, name in params))
        masks: dict[str, np.ndarray] = {}
        for key, spans in parts.items():
            mask = masks[key] = np.zeros(max(w.stop for w, _ in spans), dtype=bool)
            for where, is_param in spans:
                mask[where] = is_param
        return masks

    # ------------------------------------------------------------------ checkpoint and resume

    def state_dict(self) -> dict[str, Any]:
        """:meth:`ExpertWise.state_dict` and the devices in flight, the version and the dispatch counter."""
        return {**super().state_dict(), "fedbuff": self.queue.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.queue.load_state_dict(state["fedbuff"])
