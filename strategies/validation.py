"""Checks of a device's training reply before it may reach any aggregation rule.

A reply is rejected, with a one-line reason, if

* it comes from a node that is not a known device, or lacks its ``"metrics"`` or ``"arrays"``;
* its metrics do not read as a :class:`~fedmoe.federated.protocol.TrainReply`: in particular
  ``num-examples`` is missing, not a finite integer, below 1, or above the number of
  training samples the scenario gives that device (the server computes it itself, so a
  device cannot inflate its weight); ``expert-usage`` does not have one finite entry in
  ``[0, 1]`` per expert; a cost (``flops``, ``upload-bits``, ``latency-s``, ``energy-j``)
  is negative or not finite; ``stage`` is not 1 or 2;
* its ``partition-id`` is not the device of the node that sent it;
* an array has a name the server did not send (``wrong keys``);
* an array's dtype or shape differs from the one the server sent under that name;
* an array holds NaN or ±Inf;
* a trainable parameter moved absurdly far: ``‖θ_k − θ‖₂ > r · max(‖θ‖₂, 1)`` for the
  parameter ``θ`` the server sent, with ``r = federated.max_update_ratio`` (ten times the
  global parameter's own norm by default; a legitimate round of local SGD moves it by a
  fraction of that). Buffers are left out of this check: the standardiser's statistics
  jump from their initial values to the data's in the first round.

Only complete groups matter to the aggregation, so a reply may leave arrays out; it may not
add, reshape or poison any.

:class:`ReplyValidator` runs these checks on a round's replies; :func:`sort_replies` first
puts the replies in device order and separates the error replies and the silent devices;
:func:`short_reason` shortens an error reply to its message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Message

from fedmoe.data.partition import local_size
from fedmoe.federated.protocol import NUM_EXAMPLES_KEY, USAGE_KEY, ReplyError, TrainReply, read_count, read_shares
from fedmoe.flower import to_numpy

if TYPE_CHECKING:
    from fedmoe.federated.world import ScenarioWorld


def check_metrics(metrics: Mapping[str, Any], max_examples: int, num_experts: int) -> str | None:
    """The reason the sample count or the usage (if present) of ``metrics`` is unacceptable, or ``None``."""
    try:
        read_count(metrics, NUM_EXAMPLES_KEY, 1, max_examples, "the device's training samples")
        if USAGE_KEY in metrics:
            read_shares(metrics, USAGE_KEY, num_experts)
    except ReplyError as err:
        return str(err)
    return None


def check_arrays(arrays: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> str | None:
    """The reason ``arrays`` (as they travel) are unacceptable against the arrays the server ``sent``, or ``None``."""
    unknown = sorted(set(arrays) - set(sent))
    if unknown:
        return f"unexpected arrays {unknown[:3]}{' …' if len(unknown) > 3 else ''}"
    for name, value in arrays.items():
        ref = sent[name]
        if value.dtype != ref.dtype:
            return f"array {name!r} has dtype {value.dtype}, expected {ref.dtype}"
        if value.shape != ref.shape:
            return f"array {name!r} has shape {value.shape}, expected {ref.shape}"
        if not np.isfinite(value).all():
            return f"array {name!r} holds NaN or Inf"
    return None


def check_steps(params: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray], max_update_ratio: float) -> str | None:
    """The reason a parameter of ``params`` moved too far from ``sent`` (same names), or ``None``."""
    for name, value in params.items():
        ref = sent[name].astype(np.float64)
        step = float(np.linalg.norm(value.astype(np.float64) - ref))
        limit = max_update_ratio * max(float(np.linalg.norm(ref)), 1.0)
        if step > limit:
            return f"parameter {name!r} moved by {step:.3g}, more than {max_update_ratio:g} × max(‖global‖, 1) = {limit:.3g}"
    return None


def short_reason(reason: str) -> str:
    """The message of an error reply without the Ray/Flower wrapping around it: the simulation's
    ``<class '...RayTaskError(ClientAppException)'>:<ray::... traceback ... Message: MSG'>`` and a
    SuperNode's ``<class 'ValueError'>:<'MSG'>`` both give ``MSG`` (its last line)."""
    text = str(reason).strip().removesuffix("'>")
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1]
    else:
        text = re.sub(r"^<class '[^']*'>:<'?", "", text)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text.strip()


@dataclass
class SortedReplies:
    """A round's replies sorted out (:func:`sort_replies`)."""

    ok: list[Message]
    """Replies without an error, in device order."""
    errors: list[str] = field(default_factory=list)
    """``"device D (node N): message"`` of each error reply."""
    missing: int = 0
    """Selected devices minus replies received."""
    silent: list[int] = field(default_factory=list)
    """The selected devices that did not reply."""


def sort_replies(replies: Iterable[Message], device_of: Mapping[int, int], selected: Sequence[int]) -> SortedReplies:
    """Order ``replies`` by device and separate the error replies and the silent devices.

    Replies arrive in whatever order the devices finish; sums of floats depend on the order,
    so the rules see them by device: the same seed gives the same global arrays, bit for bit.

    Parameters
    ----------
    replies : Iterable[Message]
        What ``Grid.send_and_receive`` returned for the round's TRAIN messages.
    device_of : Mapping[int, int]
        ``{node id: device id}`` of the devices discovered.
    selected : Sequence[int]
        The devices the round's messages went to.
    """
    replies = sorted(replies, key=lambda m: (device_of.get(m.metadata.src_node_id, 1 << 62), m.metadata.src_node_id))
    out = SortedReplies(ok=[m for m in replies if not m.has_error()])
    out.errors = [f"device {device_of.get(m.metadata.src_node_id, '?')} (node {m.metadata.src_node_id}): "
                  f"{short_reason(m.error.reason)}" for m in replies if m.has_error()]
    if len(replies) < len(selected):
        answered = {device_of.get(m.metadata.src_node_id) for m in replies}
        out.missing = len(selected) - len(replies)
        out.silent = [int(k) for k in selected if int(k) not in answered]
    return out


class ReplyValidator:
    """Checks a round's training replies against what the round sent (module docstring).

    Call :meth:`expect` with the packed arrays of the round's TRAIN messages, then
    :meth:`screen` with the replies.

    Parameters
    ----------
    world : ScenarioWorld
        The scenario: each device's training samples, the experts, the model's parameters.
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

    def expect(self, sent: Mapping[str, np.ndarray]) -> None:
        """Remember the packed arrays this round's TRAIN messages carry (and the same by state-dict name)."""
        self.sent = dict(sent)
        self.sent_named = self.world.layout.unpack(self.sent)

    def check(self, msg: Message, device: int) -> tuple[TrainReply | None, str | None]:
        """``(reply, None)`` for an acceptable reply of ``device``, else ``(None, reason)``."""
        metrics = msg.content.metric_records.get("metrics")
        if metrics is None or "arrays" not in msg.content.array_records:
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
        received = to_numpy(msg.content["arrays"])
        reason = check_arrays(received, self.sent)
        if reason is None:
            named = self.world.layout.unpack(received)
            reason = check_steps({k: v for k, v in named.items() if k in self.parameter_names}, self.sent_named,
                                 self.max_update_ratio)
        return (reply, None) if reason is None else (None, reason)

    def screen(self, replies: Iterable[Message], device_of: Mapping[int, int]
               ) -> tuple[list[tuple[Message, TrainReply]], list[tuple[int, str]]]:
        """``(accepted, rejected)``: the replies that pass every check, each with its
        :class:`TrainReply`, and ``(node, reason)`` of the others."""
        accepted, rejected = [], []
        for msg in replies:
            node = msg.metadata.src_node_id
            if node not in device_of:
                rejected.append((node, "reply from a node that is not a known device"))
                continue
            reply, reason = self.check(msg, device_of[node])
            if reason is None:
                accepted.append((msg, reply))
            else:
                rejected.append((node, reason))
        return accepted, rejected
