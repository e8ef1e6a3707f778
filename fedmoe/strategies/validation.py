"""Checks of a device's training reply before it may reach any aggregation rule, and the bound on
how far an accepted reply may move the model (``docs/security.md``, "Malicious device").

**Rejection.** A reply is rejected, with a one-line reason, if

* it comes from a node that is not a known device or from a device not selected this round,
  or lacks its ``"metrics"`` or ``"arrays"``;
* its metrics do not read as a :class:`~fedmoe.federated.protocol.TrainReply`: in particular
  ``num-examples`` is missing, not a finite integer, below 1, or above the number of
  training samples the scenario gives that device (the server computes it itself, so a
  device cannot inflate its weight); ``expert-usage`` does not have one finite entry in
  ``[0, 1]`` per expert; ``train-loss`` is not finite; a cost (``flops``, ``upload-bits``,
  ``latency-s``, ``energy-j``) is negative or not finite; ``stage`` is not the round's;
* its ``partition-id`` is not the device of the node that sent it;
* its ``flops`` are not what training the reported usage costs
  (:func:`fedmoe.federated.local.training_flops_range`);
* its arrays fail, in this order, each step before anything of the next is read: a name the
  server did not send (``unexpected arrays``); a dtype or shape in the ``Array`` metadata
  other than the one the server sent under that name; a blob that is not the ``.npy`` of its
  metadata (:func:`fedmoe.flower.npy_layout`: ``stype``, header, length); then, decoded,
  NaN or ±Inf. An unknown or oversized array is refused from its name and metadata alone;
* a trainable parameter moved absurdly far: ``‖θ_k − θ‖₂ > r · max(‖θ‖₂, 1)`` for the
  parameter ``θ`` the server sent, with ``r = federated.max_update_ratio`` (ten times the
  global parameter's own norm by default; a legitimate round of local SGD moves it by a
  fraction of that). Buffers are left out of this check (the standardiser's statistics jump
  from their initial values to the data's in the first round); :func:`bound_updates` bounds them.

Only complete groups matter to the aggregation, so a reply may leave arrays out; it may not
add, reshape or poison any.

**Compressed replies** (``federated.compression``, :mod:`fedmoe.federated.update_codec`): a group
travels as its compressor's parts (``"expert/3#codes"``, ``"expert/3#scale"``; ``"shared#index"``,
``"shared#value"``), whose dtypes and shapes the group's size fixes; those are what the name,
metadata, ``.npy`` and NaN checks above read. Then the parts' values are checked (codes in range,
scales finite, indices in range and strictly increasing; a group sent in part is refused;
:func:`fedmoe.plugins.compression.decompress_arrays`) and decoded to ``θ + Δ̂``, and every later
check (steps, clipping) and the rule see the decoded arrays. The bits charged are those of the
parts received.

**What the rules get.** An accepted reply becomes an :class:`Update`: the values the checks
read and the :class:`TrainReply` with the server's own costs. The rules are handed a message
rebuilt from it (:meth:`Update.message`), never the device's bytes, so a rule aggregates
exactly what was checked. The costs in the round record are the server's: ``upload-bits``
counted from the arrays received, and the latency ``T_k`` and energy ``E_k`` of
:func:`fedmoe.federated.selection.round_costs` from the checked FLOPs, those bits, the rate
the server allocated and the device's profile (times the straggler factor the scenario's
``federated.faults`` give the device that round, in simulation). The ``latency-s`` and
``energy-j`` a device reports are only checked to be finite and non-negative.

**Clipping.** An accepted update can still be large within those limits, and a limit relative
to the global model lets a device grow it round after round. :func:`bound_updates` therefore
bounds every update against the round's other updates of the same thing, and *clips* rather
than rejects: for each state-dict entry (parameter or buffer) of each group, over the replies
aggregated for that group, an update ``Δ_k = θ_k − θ`` longer than ``c`` times the lower
median of the round's non-zero ``‖Δ_j‖`` for that entry is scaled down to that length (``c =
federated.clip_ratio``); an entry that only one reply moves, the others leaving it as it was,
is not moved. While honest replies are a majority of those that move an entry, the lower
median is an honest step, so one device moves an entry by at most ``c`` honest steps a round,
whatever the global norm. Buffers need no special case: in the first round every device with a
sensor moves that sensor's standardiser statistics by about as much, so the median of those
moves is a real one (devices without the sensor leave them alone, and are not counted);
afterwards honest devices leave them alone, and so must everyone. What this does not stop:
several devices colluding on an entry the honest replies leave alone (their smaller move
bounds the larger), and a group with a single member (nothing to compare it with).

:class:`ReplyValidator` runs the checks on a round's replies; :func:`sort_replies` first
puts the replies in device order and separates the error replies and the silent devices;
:func:`short_reason` shortens an error reply to its message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Message, MessageType, MetricRecord, RecordDict

from fedmoe.data.partition import local_size
from fedmoe.federated import faults
from fedmoe.federated.local import training_flops_range
from fedmoe.federated.parameters import payload_bits
from fedmoe.federated.protocol import NUM_EXAMPLES_KEY, USAGE_KEY, ReplyError, TrainReply, read_count, read_shares
from fedmoe.federated.selection import round_costs
from fedmoe.flower import to_record
from fedmoe.plugins.validation import (  # the checks any model shares; re-exported for fedmoe's own strategies
    SortedReplies,
    check_arrays,
    check_steps,
    read_arrays,
    short_reason,
    sort_replies,
)

if TYPE_CHECKING:
    from fedmoe.federated.world import ScenarioWorld

__all__ = ["FLOPS_TOLERANCE", "ReplyValidator", "SortedReplies", "Update", "bound_updates", "check_arrays",
           "check_metrics", "check_steps", "read_arrays", "short_reason", "sort_replies"]

FLOPS_TOLERANCE = 1e-9
"""Relative slack of the FLOPs check (the device and the server sum the same products in float64)."""


def check_metrics(metrics: Mapping[str, Any], max_examples: int, num_experts: int | None = None) -> str | None:
    """The reason the sample count or, for a mixture of ``num_experts`` experts, the usage (if present)
    of ``metrics`` is unacceptable, or ``None``."""
    try:
        read_count(metrics, NUM_EXAMPLES_KEY, 1, max_examples, "the device's training samples")
        if num_experts is not None and USAGE_KEY in metrics:
            read_shares(metrics, USAGE_KEY, num_experts)
    except ReplyError as err:
        return str(err)
    return None


@dataclass
class Update:
    """An accepted training reply as the server uses it (module docstring, "What the rules get")."""

    node: int
    """The node that sent it."""
    device: int
    """Its device (partition id)."""
    reply: TrainReply
    """Its metrics, with the server's ``upload-bits``, ``latency-s`` and ``energy-j``."""
    arrays: dict[str, np.ndarray]
    """The checked arrays, by message key (packed groups)."""

    def message(self) -> Message:
        """A TRAIN reply holding exactly this update: arrays written from :attr:`arrays`, metrics from :attr:`reply`."""
        content = RecordDict({"arrays": to_record(self.arrays), "metrics": MetricRecord(self.reply.to_metrics())})
        return Message(content=content, message_type=MessageType.TRAIN, dst_node_id=int(self.node))


class ReplyValidator:
    """Checks a round's training replies against what the round sent (module docstring).

    Call :meth:`expect` with the packed arrays of the round's TRAIN messages and the round's
    allocation, then :meth:`screen` with the replies.

    Parameters
    ----------
    world : ScenarioWorld
        The scenario: each device's training samples and profile, the experts, the model's parameters.
    max_update_ratio : float
        ``r`` of the step check (``federated.max_update_ratio``).
    """

    def __init__(self, world: ScenarioWorld, max_update_ratio: float) -> None:
        self.world = world
        self.max_update_ratio = max_update_ratio
        self.num_experts = len(world.template.experts)
        self.parameter_names = frozenset(n for n, _ in world.template.named_parameters())
        self.sent: dict[str, np.ndarray] = {}
        self.sent_named: dict[str, np.ndarray] = {}
        self.server_round, self.stage = 0, 1
        self.rates: dict[int, float] = {}

    def expect(self, sent: Mapping[str, np.ndarray], server_round: int = 0, stage: int = 1,
               rates: Mapping[int, float] | None = None) -> None:
        """Remember what this round's TRAIN messages carry.

        Parameters
        ----------
        sent : Mapping[str, numpy.ndarray]
            The packed global arrays of the messages.
        server_round, stage : int
            The round and its stage.
        rates : Mapping[int, float], optional
            ``{device: uplink rate R_k}`` of the selected devices, bit/s (a reply from any other
            device is rejected; ``None``: accept any device, at its equal-share rate).
        """
        self.sent = dict(sent)
        self.sent_named = self.world.layout.unpack(self.sent)
        self.expected = self.world.codec.expected(self.sent)
        self.server_round, self.stage = server_round, stage
        self.rates = {int(k): float(v) for k, v in rates.items()} if rates is not None else \
            {k: float(r) for k, r in enumerate(self.world.equal_share_rate)}

    def check(self, msg: Message, device: int) -> tuple[Update | None, str | None]:
        """``(update, None)`` for an acceptable reply of ``device``, else ``(None, reason)``."""
        if device not in self.rates:
            return None, f"device {device} was not selected this round"
        metrics = msg.content.metric_records.get("metrics")
        record = msg.content.array_records.get("arrays")
        if metrics is None or record is None:
            return None, "reply lacks 'metrics' or 'arrays'"
        cfg = self.world.cfg
        try:
            reply = TrainReply.from_metrics(metrics, num_experts=self.num_experts,
                                            max_examples=local_size(cfg.partition, cfg.data.seed, device),
                                            num_devices=self.world.num_devices)
        except ReplyError as err:
            return None, str(err)
        if reply.partition_id != device:
            return None, f"partition-id {reply.partition_id} is not the node's device {device}"
        if reply.stage != self.stage:
            return None, f"stage {reply.stage} is not the round's stage {self.stage}"
        lo, hi = training_flops_range(self.world.expert_flops, reply.expert_usage, reply.num_examples,
                                      cfg.federated.epochs_of_stage(self.stage))
        if not lo * (1 - FLOPS_TOLERANCE) <= reply.flops <= hi * (1 + FLOPS_TOLERANCE):
            return None, (f"flops={reply.flops:g} is outside [{lo:.6g}, {hi:.6g}] (what training on the reported "
                          f"usage costs)")
        received, reason = read_arrays(record, self.expected)
        arrays: dict[str, np.ndarray] = {}
        if reason is None:
            arrays, reason = self.world.codec.decode(received, self.sent)
        if reason is None:
            named = self.world.layout.unpack(arrays)
            reason = check_steps({k: v for k, v in named.items() if k in self.parameter_names}, self.sent_named,
                                 self.max_update_ratio)
        if reason is not None:
            return None, reason
        return Update(int(msg.metadata.src_node_id), device, self.server_costs(reply, received), arrays), None

    def server_costs(self, reply: TrainReply, received: Mapping[str, np.ndarray]) -> TrainReply:
        """``reply`` with the server's ``upload-bits`` (those of the arrays ``received``, compressed as they
        travelled), ``latency-s`` and ``energy-j`` (module docstring)."""
        device = reply.partition_id
        bits = float(payload_bits(received))
        latency, energy = round_costs(self.world.profiles.subset([device]), np.array([reply.flops]),
                                      np.array([bits]), np.array([self.rates[device]]))
        injected = self.world.cfg.federated.faults
        slow = injected.straggler_factor if faults.fate(injected, self.server_round, device) == "straggler" else 1.0
        return dataclasses.replace(reply, upload_bits=bits, latency_s=float(latency[0]) * slow,
                                   energy_j=float(energy[0]) * slow)

    def screen(self, replies: Iterable[Message], device_of: Mapping[int, int]
               ) -> tuple[list[Update], list[tuple[int, str]]]:
        """``(accepted, rejected)``: an :class:`Update` for each reply that passes every check, and
        ``(node, reason)`` of the others."""
        accepted, rejected = [], []
        for msg in replies:
            node = msg.metadata.src_node_id
            if node not in device_of:
                rejected.append((node, "reply from a node that is not a known device"))
                continue
            update, reason = self.check(msg, device_of[node])
            if reason is None:
                accepted.append(update)
            else:
                rejected.append((node, reason))
        return accepted, rejected


def bound_updates(updates: Sequence[Update], sent: Mapping[str, np.ndarray],
                  entries: Mapping[str, Sequence[tuple[str, str, slice]]], members: Mapping[str, Sequence[int]],
                  ratio: float) -> tuple[list[Update], list[str]]:
    """Clip every entry's update to ``ratio`` × the lower median of the round's non-zero updates of it,
    and undo the update of an entry only one reply moves (module docstring, "Clipping").

    Parameters
    ----------
    updates : Sequence[Update]
        The round's accepted updates.
    sent : Mapping[str, numpy.ndarray]
        The packed global arrays the round sent (by message key).
    entries : Mapping[str, Sequence[tuple[str, str, slice]]]
        ``{group: [(entry name, message key, slice)]}``
        (:meth:`fedmoe.federated.parameters.PackedLayout.entries`).
    members : Mapping[str, Sequence[int]]
        ``{group: indices into updates}`` of the updates aggregated for each group.
    ratio : float
        ``c`` (``federated.clip_ratio``).

    Returns
    -------
    tuple[list[Update], list[str]]
        The updates, clipped ones replaced by copies (an update left alone is the same object,
        its arrays untouched), and one line per clipped update and group.
    """
    arrays = [u.arrays for u in updates]
    copied: set[int] = set()
    notes: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for group, idx in members.items():
        if len(idx) < 2:
            continue
        for _, key, where in entries[group]:
            base = sent[key].reshape(-1)[where].astype(np.float64)
            deltas = [arrays[i][key].reshape(-1)[where].astype(np.float64) - base for i in idx]
            norms = np.array([np.linalg.norm(d) for d in deltas])
            moved = np.sort(norms[norms > 0])
            bound = ratio * float(moved[(len(moved) - 1) // 2]) if len(moved) >= 2 else 0.0
            for i, delta, norm in zip(idx, deltas, norms):
                if norm <= bound:
                    continue
                if i not in copied:
                    arrays[i] = {k: v.copy() for k, v in arrays[i].items()}
                    copied.add(i)
                flat = arrays[i][key].reshape(-1)
                flat[where] = (base + delta * (bound / norm)).astype(flat.dtype)
                notes.setdefault((i, group), []).append((float(norm), bound))
    out = [dataclasses.replace(u, arrays=arrays[i]) if i in copied else u for i, u in enumerate(updates)]
    lines = [f"device {updates[i].device}: clipped {len(v)} entries of {group} (largest ‖Δ‖ "
             f"{max(n for n, _ in v):.3g} → {max(v)[1]:.3g})" for (i, group), v in sorted(notes.items())]
    return out, lines
