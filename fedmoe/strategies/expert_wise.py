"""Expert-wise federated averaging of a multimodal mixture of experts with resource-aware rounds.

The aggregation (``docs/architecture.md``, "A federated round") follows the federated MoE setting
of the survey [P003]: shared parameters over all participants, each expert over the
devices that hold and use it. Device selection and uplink allocation follow [P001]'s
OFDMA model (eq. 3–5) with the exact allocator of :mod:`fedmoe.wireless.allocator`.

The strategy is laid out as Flower's ``FedAvg`` is beside its ``strategy_utils``: this
module holds the four methods of the Strategy API and the expert-wise aggregation; the
rest has its own home:

* device discovery — :mod:`fedmoe.strategies.discovery`;
* reply validation (error replies, silent devices, malformed or poisoned updates) —
  :mod:`fedmoe.strategies.validation`;
* the request and the typed reply, and every metric name — :mod:`fedmoe.federated.protocol`;
* the stage schedule (stage, lr, τ, λ per round) — :mod:`fedmoe.federated.schedule`;
* device selection and resource allocation — :mod:`fedmoe.federated.selection`;
* round records and the virtual clock — :mod:`fedmoe.federated.rounds`;
* the rules underneath and the errors they may raise — :mod:`fedmoe.strategies.aggregators`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmoe.config import MODALITIES
from fedmoe.federated.dynamics import DeviceDynamics
from fedmoe.federated.parameters import FIXED, LOCAL, SHARED, expert_group, expert_index
from fedmoe.federated.protocol import (
    ACCURACY_KEY,
    CLOCK_KEY,
    COMPLETED_KEY,
    ENERGY_KEY,
    FAILED_KEY,
    LATENCY_KEY,
    NUM_EXAMPLES_KEY,
    TRAIN_LOSS_KEY,
    USAGE_KEY,
    EvaluateReply,
    ReplyError,
    RoundInstructions,
)
from fedmoe.federated.round_channel import round_channel
from fedmoe.federated.rounds import RoundLedger, RoundRecord
from fedmoe.federated.schedule import StageSchedule
from fedmoe.federated.selection import Participation, RoundDemand, RoundPlan, SelectionContext, plan_round
from fedmoe.federated.world import ScenarioWorld, config_json
from fedmoe.flower import array_of, numpy_of, to_numpy, to_record
from fedmoe.models.cost import FORWARD_BACKWARD_FACTOR
from fedmoe.models.device_costs import link_classes
from fedmoe.plugins.selection import SelectedNodes
from fedmoe.strategies.aggregators import AGGREGATION_ERRORS, make_aggregator, quiet_flower
from fedmoe.strategies.discovery import DeviceInfo, discover_devices
from fedmoe.strategies.resumable import ResumableStrategy
from fedmoe.strategies.validation import ReplyValidator, Update, bound_updates, short_reason, sort_replies
from fedmoe.wireless.mobility import Mobility

__all__ = ["DeviceInfo", "ExpertWise", "RoundRecord", "discover_devices", "short_reason"]

log = logging.getLogger(__name__)


@dataclass
class Accepted:
    """A round's replies after :meth:`ExpertWise.accept`."""

    updates: list[Update]
    """The accepted updates, clipped (device order)."""
    failures: list[str]
    """One line per error reply, silent device or rejected reply."""
    selected: int
    """Devices the round's messages went to."""
    rejected: int
    """Replies refused by the validation (also in ``failures``)."""
    clipped: int
    """Accepted updates that were clipped."""


class ExpertWise(ResumableStrategy):
    r"""Expert-wise aggregation of a mixture of experts, with resource-aware device selection.

    Every round :math:`t`:

    1. **Channel and demand.** With ``wireless.mobility``, the devices move to where they are at the round's
       start on the virtual clock (:mod:`fedmoe.wireless.mobility`: path loss, shadowing and LoS state follow).
       Small-scale fading is redrawn, or, with ``wireless.trace``, each device's
       measured channel at the round's start on the virtual clock is read (a device blocked then is
       not selectable; :mod:`fedmoe.federated.round_channel`); with ``federated.dynamics``, a device that is
       off, or whose battery holds less than its expected round energy, is not selectable either
       (:mod:`fedmoe.federated.dynamics`); each device's training FLOPs
       :math:`F_k` and update bits :math:`b_k` are estimated (stage I: all experts it may
       use; stage II: what it reported last time in stage II, else the round's mean).
    2. **Selection and allocation.** ``federated.selection`` picks devices
       (:mod:`fedmoe.federated.selection`), ``federated.allocation`` shares the resource
       blocks; each device gets its rate :math:`R_k`, the deadline, λ and its modality
       budget (the ``federated.max_modalities`` sensors with the fewest uplink bits), and
       the round's stage, learning rate and gate temperature
       (:class:`fedmoe.federated.schedule.StageSchedule`).
    3. **Local training** on the devices (``fedmoe/clients/app.py``), then **validation** of every
       reply (:mod:`fedmoe.strategies.validation`): NaN/Inf, unknown arrays, wrong shapes or dtypes,
       blobs whose ``.npy`` header is not their metadata, arrays that moved more than
       ``federated.max_update_ratio`` × the global array's norm, sample counts outside
       ``[1, the device's samples]``, FLOPs the reported usage cannot cost and metrics that
       do not read as a :class:`~fedmoe.federated.protocol.TrainReply` are rejected with a
       logged reason and never reach the rule. The accepted updates are then **clipped**
       entry by entry to ``federated.clip_ratio`` × the lower median of the round's updates
       of that entry (:func:`fedmoe.strategies.validation.bound_updates`), and the rule gets
       messages rebuilt from the checked values, never the device's bytes.
    4. **Aggregation** of the accepted replies, group by group (:mod:`fedmoe.federated.parameters`). With
       :math:`n_k` the samples of device :math:`k` and :math:`u_{ki}` the share of them
       on which it computed expert :math:`i`, the rule underneath (FedAvg by default)
       combines

       .. math::

           w_{\text{shared}}^{t+1} = \frac{\sum_{k \in S_t} n_k w_{k,\text{shared}}}{\sum_{k \in S_t} n_k},
           \qquad
           w_i^{t+1} = \frac{\sum_{k \in S_{t,i}} n_k u_{ki} w_{k,i}}{\sum_{k \in S_{t,i}} n_k u_{ki}},

       with :math:`S_{t,i} = \{k \in S_t : u_{ki} > 0\}` (a device lacking the
       modality, or outside its budget, has :math:`u_{ki} = 0` and does not touch
       expert :math:`i`); an expert nobody used keeps :math:`w_i^t`. Parameters matching
       ``federated.local_keys`` are never sent and never aggregated.
    5. **Virtual clock.** The round lasts :math:`\max_{k} T_k` of the accepted replies and
       costs :math:`\sum_k E_k`, both computed by the server from the checked FLOPs, the bits
       received, the allocated rate and the device's profile
       (:func:`fedmoe.federated.selection.round_costs`), not taken from the reply; its
       :class:`~fedmoe.federated.rounds.RoundRecord` goes to :attr:`history`
       (:class:`fedmoe.federated.rounds.RoundLedger`); with a battery, the accepted devices' :math:`E_k`
       come off their charge and every device recharges for the round's latency.

    Parameters travel packed: one flat array per group, named after it (``"shared"``,
    ``"expert/<i>"``; :class:`fedmoe.federated.parameters.PackedLayout`), in both
    directions; the global arrays this strategy returns keep the state-dict names.

    Any Flower strategy can be the rule of step 4 (``federated.aggregator``; see
    :mod:`fedmoe.strategies.aggregators`): it receives, per group, replies whose
    ``"num-examples"`` is the group weight above (robust rules such as FedMedian and
    Krum ignore the weights). Its ``configure_train`` also runs every round, per group,
    so stateful rules see the current global arrays, and the config keys it adds
    (e.g. FedProx's ``"proximal-mu"``) reach the clients. A rule that refuses a group's
    updates (:data:`fedmoe.strategies.aggregators.AGGREGATION_ERRORS`) leaves that group as it was
    for the round; any other exception from a rule ends the run.

    Config keys every client must honour (``ConfigRecord`` of the TRAIN message):
    ``"scenario"`` (the config as JSON), ``"server-round"``, ``"stage"`` (1 or 2),
    ``"local-epochs"``, ``"lr"``, ``"tau"`` (gate temperature), ``"cost-weight"`` (λ),
    ``"rate-bps"``, ``"num-rb"``, ``"deadline-s"``, ``"modalities"`` (allowed sensors),
    ``"fit-standardiser"`` and, under FedProx, ``"proximal-mu"``
    (:class:`~fedmoe.federated.protocol.RoundInstructions`). Replies carry ``"arrays"`` (the
    packed shared group and the groups of the experts it computed) and a ``"metrics"``
    record with ``"num-examples"``, ``"expert-usage"`` (E floats), ``"train-loss"``,
    ``"flops"``, ``"upload-bits"``, ``"latency-s"``, ``"energy-j"``, ``"partition-id"`` and
    ``"stage"`` (:class:`~fedmoe.federated.protocol.TrainReply`).

    Parameters
    ----------
    world : ScenarioWorld
        The scenario (config, devices, experts' costs).
    aggregator : str, optional
        Name in :data:`fedmoe.strategies.AGGREGATORS`; default ``federated.aggregator``.
    aggregator_options : dict, optional
        Its keyword arguments; default ``federated.aggregator_options``.
    on_round : callable, optional
        ``on_round(record)`` after each aggregation (progress bars, live logs).
    """

    expert_wise: bool = True
    """False aggregates every parameter over every participant (plain FedAvg)."""

    def __init__(self, world: ScenarioWorld, aggregator: str | None = None,
                 aggregator_options: dict[str, Any] | None = None,
                 on_round: Callable[[RoundRecord], None] | None = None) -> None:
        fed = world.cfg.federated
        self.world = world
        self.fed = fed
        self.aggregator_name = aggregator or fed.aggregator
        self.aggregator_options = dict(fed.aggregator_options if aggregator_options is None else aggregator_options)
        make_aggregator(self.aggregator_name, self.aggregator_options)  # fail early on bad options
        self.on_round = on_round
        self.scenario_json = config_json(world.cfg)
        self.layout = world.layout
        self.groups = self.layout.groups
        self.schedule = StageSchedule.from_config(world.cfg)
        self.validator = ReplyValidator(world, fed.max_update_ratio)
        self.ledger = RoundLedger(link_classes(world.equal_share_rate), fed.epochs_of_stage(2), fed.deadline_s)
        self.devices: dict[int, DeviceInfo] | None = None
        self._rules: dict[str, Strategy] = {}
        self._plan: RoundPlan | None = None
        self._evaluating: set[int] = set()  # the nodes asked to evaluate this round
        self._stage = 1
        self._rng = np.random.default_rng(np.random.SeedSequence([world.cfg.data.seed, 0x5E1EC7]))
        self.dynamics = DeviceDynamics.from_config(fed.dynamics, world.num_devices)
        """Availability and batteries across rounds (``federated.dynamics``; None: off)."""
        self.mobility = Mobility.from_config(world.cfg.wireless, world.profiles)
        """Devices moving between rounds (``wireless.mobility``, :mod:`fedmoe.wireless.mobility`; None: off)."""

    @property
    def history(self) -> list[RoundRecord]:
        """The record of every round so far (:class:`~fedmoe.federated.rounds.RoundRecord`)."""
        return self.ledger.history

    @property
    def clock_s(self) -> float:
        """The virtual clock: the rounds' latencies added up, s."""
        return self.ledger.clock_s

    # ------------------------------------------------------------------ Flower Strategy API

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info("ExpertWise: shared + %d experts%s, rule %s %s, selection %s/%s, deadline %.3g s",
                 sum(expert_index(g) is not None for g in self.groups),
                 ", local keys kept" if LOCAL in self.groups else "", self.aggregator_name, self.aggregator_options,
                 self.fed.selection, self.fed.allocation, self.fed.deadline_s)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Select and allocate this round's devices and send each its instructions (class docstring, steps 1–2)."""
        wire = self._wire(arrays)  # first: arrays of another model are refused before any device is asked
        if self.devices is None:  # a device whose answer is refused is left out of the run (see .discovery)
            self.devices = discover_devices(grid, self.world.num_devices, self.scenario_json, min_devices=1)
        self._stage = self.schedule.stage(server_round)
        self._global = arrays
        allowed = self._allowed_modalities()
        plan = self._plan = self.plan(server_round, allowed)
        node_of = {d.device_id: d.node_id for d in self.devices.values()}
        self.validator.expect(to_numpy(wire), server_round, self._stage,
                              {int(k): float(r) for k, r in zip(plan.devices, plan.rate_bps)})
        extra = self._rule_config(server_round, wire, [node_of[int(k)] for k in plan.devices])
        messages = []
        for j, k in enumerate(plan.devices):
            k = int(k)
            instr = RoundInstructions(
                server_round=server_round, stage=self._stage, local_epochs=self.fed.epochs_of_stage(self._stage),
                lr=self._lr(server_round), tau=self._tau(server_round), cost_weight=self.cost_weight(server_round),
                rate_bps=float(plan.rate_bps[j]), num_rb=int(plan.num_rb[j]), deadline_s=self.fed.deadline_s,
                modalities=tuple(m for m, on in zip(MODALITIES, allowed[k]) if on),
                proximal_mu=float(extra.get("proximal-mu", 0.0)), fit_standardiser=server_round == 1)
            cfg = ConfigRecord({**extra, **config, **instr.to_config(), "scenario": self.scenario_json})
            content = RecordDict({"arrays": wire, "config": cfg})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node_of[k]))
        log.info("round %d (stage %d): %d devices selected (%s), expected round latency %.3g s",
                 server_round, self._stage, len(messages), plan.note, plan.round_latency_s)
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate the replies, aggregate the accepted ones group by group and advance the
        virtual clock (class docstring, steps 3–5)."""
        got = self.accept(server_round, replies)
        merged = self.aggregate_groups(server_round, [u.message() for u in got.updates])
        record = self.ledger.close_round(
            server_round, self._stage, [u.reply for u in got.updates], got.failures, got.selected,
            self._plan.round_latency_s if self._plan is not None else 0.0, rejected=got.rejected,
            clipped=got.clipped)
        return merged, self.end_round(record, got.updates)

    def accept(self, server_round: int, replies: Iterable[Message]) -> Accepted:
        """The round's replies sorted (:func:`~fedmoe.strategies.validation.sort_replies`), screened
        (:meth:`validate`) and clipped (:meth:`bound`), every failure logged (class docstring, step 3)."""
        selected = [] if self._plan is None else [int(k) for k in self._plan.devices]
        got = sort_replies(replies, self._device_of_node(), selected)
        failures = list(got.errors)
        for f in failures:
            log.warning("round %d: %s", server_round, f)
        if got.missing:
            failures.append(f"{got.missing} device(s) did not reply in time")
            log.warning("round %d: device(s) %s did not reply within the round's timeout", server_round, got.silent)
        accepted, rejected = self._screen(server_round, got.ok)
        failures += rejected
        bounded, clipped = self.bound(accepted)
        for line in clipped:
            log.warning("round %d: %s", server_round, line)
        return Accepted(bounded, failures, len(selected), len(rejected),
                        sum(b is not a for a, b in zip(accepted, bounded)))

    def end_round(self, record: RoundRecord, updates: list[Update]) -> MetricRecord:
        """After the round's record: the batteries (``federated.dynamics``) of the devices in ``updates``,
        ``on_round`` and the round's training metrics for Flower."""
        if self.dynamics is not None:
            self.dynamics.after_round([u.reply.partition_id for u in updates], [u.reply.energy_j for u in updates],
                                      record.latency_s)
        if self.on_round is not None:
            self.on_round(record)
        return MetricRecord({TRAIN_LOSS_KEY: record.train_loss, LATENCY_KEY: record.latency_s,
                             ENERGY_KEY: record.energy_j, CLOCK_KEY: record.clock_s,
                             COMPLETED_KEY: record.completed, FAILED_KEY: record.failed})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Ask ``federated.fraction_evaluate`` of the devices to evaluate on their own held-out data."""
        if self.fed.fraction_evaluate == 0.0 or self.devices is None:
            return []
        nodes = sorted(self.devices)
        k = max(1, int(round(len(nodes) * self.fed.fraction_evaluate)))
        chosen = self._rng.choice(nodes, size=k, replace=False)
        self._evaluating = {int(n) for n in chosen}
        cfg = ConfigRecord({**config, "server-round": server_round, "scenario": self.scenario_json})
        wire = self._wire(arrays)
        return [Message(content=RecordDict({"arrays": wire, "config": cfg}), message_type=MessageType.EVALUATE,
                        dst_node_id=int(n)) for n in chosen]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The devices' accuracies, weighted by their held-out samples.

        A reply counts only if it answers this round's request to a known device and reads as an
        :class:`~fedmoe.federated.protocol.EvaluateReply` of that device: ``accuracy`` in
        ``[0, 1]``, ``num-examples`` in ``[1, the held-out samples the scenario gives it]``
        (:meth:`~fedmoe.federated.world.ScenarioWorld.evaluation_size`, so a device cannot
        outweigh the others), its own ``partition-id``. Any other reply is logged and left out."""
        device_of = self._device_of_node()
        asked = self._evaluating
        accepted: list[EvaluateReply] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            reason = None
            if msg.has_error():
                reason = short_reason(msg.error.reason)
            elif node not in device_of or node not in asked:
                reason = "not asked to evaluate this round"
            elif (metrics := msg.content.metric_records.get("metrics")) is None:
                reason = "reply lacks 'metrics'"
            else:
                device = device_of[node]
                try:
                    reply = EvaluateReply.from_metrics(metrics, max_examples=self.world.evaluation_size(device),
                                                       num_devices=self.world.num_devices)
                    if reply.partition_id != device:
                        reason = f"partition-id {reply.partition_id} is not the node's device {device}"
                    else:
                        accepted.append(reply)
                except ReplyError as err:
                    reason = str(err)
            if reason is not None:
                log.warning("round %d: left out the evaluation of node %s: %s", server_round, node, reason)
        if not accepted:
            return None
        n = np.array([float(r.num_examples) for r in accepted])
        acc = np.array([r.accuracy for r in accepted])
        return MetricRecord({ACCURACY_KEY: float((n * acc).sum() / n.sum()), NUM_EXAMPLES_KEY: int(n.sum())})

    # ------------------------------------------------------------------ checkpoint and resume

    def state_dict(self) -> dict[str, Any]:
        """What later rounds depend on besides the global arrays (:mod:`fedmoe.federated.resume`):
        round records, virtual clock, the devices' reported costs and losses, the selection RNG
        and each group's rule (stateful rules: FedAvgM's momentum, FedAdam's moments)."""
        dynamics = {} if self.dynamics is None else {"dynamics": self.dynamics.state_dict()}
        mobility = {} if self.mobility is None else {"mobility": self.mobility.state_dict()}
        return {**self.ledger.state_dict(),
                **copy.deepcopy({"rng": self._rng.bit_generator.state, "rules": self._rules}), **dynamics,
                **mobility}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.ledger.load_state_dict(state)
        if self.dynamics is not None:
            self.dynamics.load_state_dict(state["dynamics"])
        if self.mobility is not None:
            self.mobility.load_state_dict(state["mobility"])
        state = copy.deepcopy({"rng": state["rng"], "rules": state["rules"]})
        self._rng.bit_generator.state = state["rng"]
        self._rules = dict(state["rules"])

    # ------------------------------------------------------------------ validation

    def validate(self, server_round: int, replies: list[Message]) -> tuple[list[Message], list[str]]:
        """``(accepted, reasons)``: replies that pass :mod:`fedmoe.strategies.validation` against what
        this round sent, rebuilt from the checked values (:meth:`~fedmoe.strategies.validation.Update.message`);
        every rejection is logged with its reason and never reaches a rule."""
        accepted, reasons = self._screen(server_round, replies)
        return [u.message() for u in accepted], reasons

    def _screen(self, server_round: int, replies: list[Message]) -> tuple[list[Update], list[str]]:
        """:meth:`validate`, keeping each accepted reply as an :class:`~fedmoe.strategies.validation.Update`."""
        accepted, rejected = self.validator.screen(replies, self._device_of_node())
        for node, reason in rejected:
            log.warning("round %d: rejected the update of node %s: %s", server_round, node, reason)
        return accepted, [f"node {node}: rejected: {reason}" for node, reason in rejected]

    def bound(self, updates: list[Update]) -> tuple[list[Update], list[str]]:
        """The accepted ``updates`` clipped against each other (:func:`fedmoe.strategies.validation.bound_updates`,
        ``federated.clip_ratio``) over the members of each group (:meth:`group_weights`), and a line per clip."""
        members: dict[str, list[int]] = {}
        for i, u in enumerate(updates):
            for group in self.group_weights(set(u.arrays), u.reply.num_examples, u.reply.expert_usage):
                members.setdefault(group, []).append(i)
        entries = {group: self.layout.entries(group) for group in members}
        return bound_updates(updates, self.validator.sent, entries, members, self.fed.clip_ratio)

    def _device_of_node(self) -> dict[int, int]:
        """``{node id: device id}`` of the devices discovered (empty before the first round)."""
        return {d.node_id: d.device_id for d in (self.devices or {}).values()}

    # ------------------------------------------------------------------ aggregation

    def group_weights(self, sent: set[str], num_examples: float, usage: list[float] | tuple[float, ...]
                      ) -> dict[str, float]:
        """``{group: weight}`` of one reply that carries the message keys ``sent``: the shared group with
        weight ``n_k``, expert ``i`` with ``n_k u_ki``; a group the reply does not carry whole, or an
        expert it did not use (``u_ki = 0``), is not in it: that reply does not take part in that
        group's aggregation at all (a robust rule such as FedMedian would otherwise count it)."""
        weights: dict[str, float] = {}
        for group in self.groups:
            if group in (LOCAL, FIXED) or not set(self.layout.wire_keys(group)) <= sent:
                continue
            i = expert_index(group)
            if i is None or not self.expert_wise:
                weight = float(num_examples)
            else:
                weight = float(num_examples) * float(usage[i]) if i < len(usage) else 0.0
            if weight > 0:
                weights[group] = weight
        return weights

    def group_members(self, replies: list[Message]) -> dict[str, list[tuple[Message, float]]]:
        """``{group: [(reply, weight)]}``: shared over every reply (weight ``n_k``), expert ``i``
        over the replies that carry it with ``u_ki > 0`` (weight ``n_k u_ki``; :meth:`group_weights`)."""
        members: dict[str, list[tuple[Message, float]]] = {}
        for msg in replies:
            metrics = msg.content["metrics"]
            weights = self.group_weights(set(msg.content["arrays"].keys()), float(metrics[NUM_EXAMPLES_KEY]),
                                         list(metrics.get(USAGE_KEY, [])))
            for group, weight in weights.items():
                members.setdefault(group, []).append((msg, weight))
        return members

    def aggregate_groups(self, server_round: int, replies: list[Message]) -> ArrayRecord | None:
        """The new global arrays: each group combined by its rule, groups nobody sent kept as they were.

        A rule that refuses a group's updates (it raises one of
        :data:`~fedmoe.strategies.aggregators.AGGREGATION_ERRORS`, e.g. a robust rule given too few)
        leaves that group as it was, with a warning; any other exception propagates."""
        if not replies:
            return None
        current = self._global
        out = {k: current[k] for k in current.keys()}
        for group, members in self.group_members(replies).items():
            keys = self.layout.wire_keys(group)
            subs = [Message(content=RecordDict({
                        "arrays": ArrayRecord({k: msg.content["arrays"][k] for k in keys}),
                        "metrics": MetricRecord({NUM_EXAMPLES_KEY: weight})}),
                        message_type=MessageType.TRAIN, dst_node_id=int(msg.metadata.src_node_id or 0))
                    for msg, weight in members]
            rule = self._rule(group)
            try:
                with quiet_flower():
                    agg, _ = rule.aggregate_train(server_round, subs)
            except AGGREGATION_ERRORS as err:
                log.warning("round %d: %s could not aggregate %s (%d updates): %s; kept as it was",
                            server_round, type(rule).__name__, group, len(subs), err)
                continue
            if agg is None:
                continue
            for k, v in self.layout.unpack({k: numpy_of(agg[k]) for k in keys}).items():
                out[k] = array_of(v)
        return ArrayRecord(out)

    def merge(self, server_round: int, current: ArrayRecord, replies: list[Message]) -> ArrayRecord | None:
        """:meth:`aggregate_groups` onto ``current`` (state-dict names), for loops outside
        :meth:`start` (SplitFed averages the devices' experts with it)."""
        self._global = current
        return self.aggregate_groups(server_round, replies)

    def _wire(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global arrays as messages carry them: packed per group
        (:class:`~fedmoe.federated.parameters.PackedLayout`)."""
        unknown = [k for k in arrays.keys() if k not in self.layout.shapes]
        if unknown:
            raise ValueError(f"ExpertWise aggregates the scenario's mixture of experts, and {len(unknown)} of the "
                             f"initial arrays are not its parameters (e.g. {unknown[:3]}); for a model of your own, "
                             "wrap a Flower strategy in fedmoe.plugins.WirelessSelection and ValidatedStrategy "
                             "(docs/plugins.md)")
        return to_record(self.layout.pack(to_numpy(arrays)))

    def _rule(self, group: str) -> Strategy:
        if group not in self._rules:
            self._rules[group] = make_aggregator(self.aggregator_name, self.aggregator_options)
        return self._rules[group]

    def _rule_config(self, server_round: int, arrays: ArrayRecord, nodes: list[int]) -> dict[str, Any]:
        """Run each group's rule's ``configure_train`` (its state follows the global arrays) and return
        the config keys the shared group's rule adds for the clients (FedProx: ``proximal-mu``)."""
        extra: dict[str, Any] = {}
        if not nodes:
            return extra
        for group in self.groups:
            if group in (LOCAL, FIXED):
                continue
            sub = ArrayRecord({k: arrays[k] for k in self.layout.wire_keys(group)})
            with quiet_flower():  # one participant is enough: the config is the same for all of them
                msgs = list(self._rule(group).configure_train(server_round, sub, ConfigRecord(),
                                                              SelectedNodes(nodes[:1])))
            if group == SHARED and msgs:
                extra = {k: v for k, v in msgs[0].content["config"].items()}
        return extra

    # ------------------------------------------------------------------ planning

    def plan(self, server_round: int, allowed: np.ndarray) -> RoundPlan:
        """The round's devices, resource blocks and rates (class docstring, steps 1–2): ``federated.selection``
        picks at most ``clients_per_round`` of the selectable devices and ``federated.allocation`` shares
        the uplink's blocks among them. ``allowed``: (K, M) the sensors each device may use."""
        ctx = SelectionContext(self.world.cfg.wireless, self.fed.clients_per_round, self.fed.deadline_s, self._rng,
                               self.fed.selection_options)
        return plan_round(self._demand(allowed, server_round, ctx), ctx, self.fed.selection, self.fed.allocation)

    def _allowed_modalities(self) -> np.ndarray:
        """(K, M) bool: each device's sensors, cut to the ``max_modalities`` with the fewest uplink bits."""
        bits = np.array([self.world.bits_per_sample.get(m, np.inf) for m in MODALITIES])
        cheapest = np.zeros(len(MODALITIES), dtype=bool)
        cheapest[np.argsort(bits, kind="stable")[:self.fed.max_modalities]] = True
        has = np.ones((self.world.num_devices, len(MODALITIES)), dtype=bool)
        for d in (self.devices or {}).values():
            has[d.device_id] = d.modalities
        return has & cheapest

    @cached_property
    def _param_bits(self) -> tuple[float, np.ndarray]:
        """Bits of the shared parameters and of each expert's on the uplink, compressed as the devices
        send them (``federated.compression``; :meth:`fedmoe.federated.update_codec.UpdateCodec.group_bits`)."""
        bits = self.world.codec.group_bits
        return bits(SHARED), np.array([bits(expert_group(i)) for i in range(len(self.world.footprints))])

    def _demand(self, allowed: np.ndarray, server_round: int, ctx: SelectionContext) -> RoundDemand:
        """Expected FLOPs and bits of every device this round (class docstring, step 1), its samples and
        last loss, who took part in the earlier rounds (the round records: their accepted devices), and
        who is on with enough battery (``federated.dynamics``, :mod:`fedmoe.federated.dynamics`)."""
        world = self.world
        k = world.num_devices
        n = np.zeros(k)
        present = np.zeros(k, dtype=bool)
        for d in self.devices.values():
            n[d.device_id] = d.num_examples
            present[d.device_id] = True
        uses = ~((~allowed[:, None, :]) & world.expert_modalities[None]).any(axis=2)  # (K, E)
        expert_flops = world.expert_flops
        shared_bits, expert_bits = self._param_bits
        flops = FORWARD_BACKWARD_FACTOR * self.fed.local_epochs * n * (uses @ expert_flops)  # stage I's compute
        bits = shared_bits + uses @ expert_bits
        reported, losses = self.ledger.reported, self.ledger.loss
        if self._stage == 2 and reported:
            per_sample = np.array([v[0] for v in reported.values()])
            sent = np.array([v[1] for v in reported.values()])
            flops = self.fed.epochs_of_stage(2) * n * per_sample.mean()
            bits = np.full(k, sent.mean())
            for dev, (f, b) in reported.items():
                flops[dev] = self.fed.epochs_of_stage(2) * n[dev] * f
                bits[dev] = b
        mean_loss = float(np.mean(list(losses.values()))) if losses else 1.0
        loss = np.array([losses.get(d, mean_loss) for d in range(k)])
        profiles, usable = round_channel(world.profiles, world.cfg.wireless, self._rng, world.trace, self.clock_s,
                                         self.mobility)
        history = Participation.from_rounds(k, server_round, ((r.round, r.devices) for r in self.ledger.history))
        if self.dynamics is not None:
            usable = usable & self.dynamics.selectable(server_round, self.clock_s, profiles, flops, bits, ctx)
        return RoundDemand(profiles, flops, bits, n * loss, present & allowed.any(axis=1) & usable, samples=n,
                           loss=loss, history=history)

    def _lr(self, server_round: int) -> float:
        """The round's learning rate (:meth:`fedmoe.federated.schedule.StageSchedule.learning_rate`)."""
        return self.schedule.learning_rate(server_round)

    def _tau(self, server_round: int) -> float:
        """The round's gate temperature (:meth:`fedmoe.federated.schedule.StageSchedule.temperature`)."""
        return self.schedule.temperature(server_round)

    def cost_weight(self, server_round: int) -> float:
        """λ sent to the devices in ``server_round`` (``train.cost_weight``).

        The hook to vary λ over the run: override it in a subclass (``docs/federated.md``,
        "Your own strategy or rule"); the devices use what it returns in their resource-aware loss
        ([P001] eq. 9) and the round record keeps it in the instructions sent.
        """
        return self.schedule.cost_weight
