"""Checks of a training reply before any aggregation rule sees it, for any Flower strategy and any model.

:class:`ValidatedStrategy` wraps a Flower strategy (``FedAvg``, ``FedProx``, ``FedAdam``, ``Krum``, your
own): it remembers the arrays each TRAIN message carried and, before the strategy aggregates, rejects
with a logged one-line reason every reply that

* is an error reply, comes from a node that was not sent this round's work, or lacks its array record
  (the strategy's ``arrayrecord_key``, ``"arrays"`` by default) or its single metric record;
* carries an array the server did not send, or leaves one out (``require_all``); an array whose dtype
  or shape in the ``Array`` metadata is not the one sent under that name; a blob that is not the
  ``.npy`` of its metadata (:func:`fedmoe.flower.npy_layout`); NaN or ±Inf — in this order, each step
  before anything of the next is read (:func:`read_arrays`);
* moved a trainable array absurdly far: ``‖θ_k − θ‖₂ > r · max(‖θ‖₂, 1)`` with ``r = max_update_ratio``
  (:func:`check_steps`). Buffers are left out of this one check (:func:`is_buffer`: integer counters
  such as BatchNorm's ``num_batches_tracked``, which moves by the number of local steps, and its
  ``running_mean``/``running_var``, which jump to the data's statistics in the first round), or the
  names you give in ``buffers``;
* has a weight (``weighted_by_key``, ``"num-examples"``) that is not an integer in ``[1, max_examples]``
  (no upper bound unless you give one: a device could otherwise outweigh all others), or a metric
  that is not finite.

With a ``compressor`` the floating arrays travel as its parts (``"<name>#codes"``, ``"<name>#scale"``, …;
:mod:`fedmoe.plugins.compression`): the checks above read those parts against the dtypes and shapes the
compressor fixes, then their values are checked (codes, scales, indices) and decoded to ``θ + Δ̂``.

The strategy then aggregates messages rebuilt from the checked values (:func:`fedmoe.flower.to_record`),
never the device's bytes, with the original metadata (source node, reply id), so that what it
aggregates is exactly what was checked. The aggregate keeps the dtypes the round sent (an averaging rule
turns an integer counter into float64; it is rounded back), so honest devices pass the dtype check next
round.

The helpers (:func:`read_arrays`, :func:`sort_replies`, and, needing only numpy, those of
:mod:`fedmoe.plugins.checks`) are what fedmoe's own strategies validate with
(:mod:`fedmoe.strategies.validation` adds the mixture-of-experts checks: usage shares, FLOPs, stages).
This module loads numpy and Flower, not torch.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmoe.federated.protocol import ReplyError, read_count
from fedmoe.flower import ArrayFormatError, array_of, npy_layout, numpy_of, to_numpy, to_record
from fedmoe.plugins.checks import BUFFER_SUFFIXES, check_arrays, check_steps, is_buffer, short_reason
from fedmoe.plugins.compression import Compressor, decompress_arrays, expected_parts

log = logging.getLogger(__name__)

__all__ = ["BUFFER_SUFFIXES", "SortedReplies", "ValidatedStrategy", "check_arrays", "check_steps", "is_buffer",
           "read_arrays", "short_reason", "sort_replies"]

def read_arrays(record: ArrayRecord, sent: Mapping[str, np.ndarray],
                require_all: bool = False) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(arrays, None)``: the decoded arrays of a reply's ``record``, checked against the arrays the
    server ``sent`` (:func:`check_arrays`); else ``(None, reason)``.

    Names, then every array's metadata, then every blob's header and length are checked before
    any value is decoded (module docstring). With ``require_all`` a name the server sent must be
    in the reply."""
    unknown = sorted(str(k)[:60] for k in record.keys() if k not in sent)
    if unknown:
        return None, f"unexpected arrays {unknown[:3]}{' …' if len(unknown) > 3 else ''}"
    if require_all:
        absent = sorted(k for k in sent if k not in record)
        if absent:
            return None, f"missing arrays {absent[:3]}{' …' if len(absent) > 3 else ''}"
    for name, array in record.items():
        ref = sent[name]
        if array.dtype != str(ref.dtype):
            return None, f"array {name!r} has dtype {str(array.dtype)[:40]!r}, expected {ref.dtype}"
        shape = tuple(array.shape) if isinstance(array.shape, (tuple, list)) else array.shape
        if shape != ref.shape:
            return None, f"array {name!r} has shape {str(shape)[:60]}, expected {ref.shape}"
    for name, array in record.items():
        try:
            npy_layout(array)
        except ArrayFormatError as err:
            return None, f"array {name!r}: {err}"
    arrays = {name: numpy_of(array) for name, array in record.items()}
    reason = check_arrays(arrays, sent)
    return (arrays, None) if reason is None else (None, reason)


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


MaxExamples = int | Mapping[int, int] | Callable[[int], int] | None
"""The largest weight a node may claim: one bound, ``{node id: bound}``, ``bound(node id)``, or ``None``."""


class ValidatedStrategy(Strategy):
    r"""Any Flower strategy, aggregating only replies that pass the checks of this module.

    Every round: ``configure_train`` of the wrapped strategy, remembering the arrays each message
    carries per destination node; then ``aggregate_train`` of the wrapped strategy on the accepted
    replies only, each rebuilt from its checked values (module docstring). Evaluation, ``summary``
    and every other attribute are the wrapped strategy's.

    A rejected reply is logged (``round R: rejected the update of node N: reason``), counted in
    :attr:`rejected` and left out; if no reply is accepted the round keeps the global arrays
    (``aggregate_train`` returns ``(None, None)``, as Flower's strategies do without replies).

    Config keys the clients must honour: those of the wrapped strategy. Replies must carry the
    arrays they were sent, under the same names, dtypes and shapes (``require_all``: all of them),
    and one metric record with the weight ``weighted_by_key``.

    Parameters
    ----------
    base : Strategy
        The strategy that selects and aggregates (any ``flwr.serverapp.strategy.Strategy``).
    max_update_ratio : float, default 10.0
        ``r`` of the step check ``‖θ_k − θ‖₂ ≤ r · max(‖θ‖₂, 1)``; ``math.inf`` turns it off.
    max_examples : int, mapping or callable, optional
        The largest weight a node may report: one bound for all, ``{node id: bound}`` or
        ``bound(node id)``. Default: no upper bound (the weight must still be an integer ``>= 1``).
    buffers : iterable of str, optional
        Array names left out of the step check. Default: :func:`is_buffer` (counters and torch's
        normalisation statistics).
    require_all : bool, default True
        A reply must return every array it was sent (Flower's averaging rules need them all).
    compressor : Compressor, optional
        The devices send their floating arrays compressed by it
        (:func:`fedmoe.plugins.compression.compress_arrays`): the parts are checked as above against the
        dtypes and shapes the compressor fixes, then their values
        (:func:`~fedmoe.plugins.compression.decompress_arrays`), then decoded; the step check and the
        strategy see the decoded arrays.
    """

    def __init__(self, base: Strategy, max_update_ratio: float = 10.0, max_examples: MaxExamples = None,
                 buffers: Iterable[str] | None = None, require_all: bool = True,
                 compressor: Compressor | None = None) -> None:
        if not isinstance(base, Strategy):
            raise TypeError(f"ValidatedStrategy needs a flwr.serverapp.strategy.Strategy to wrap, got "
                            f"{type(base).__name__}")
        if not (max_update_ratio > 0):
            raise ValueError(f"ValidatedStrategy: max_update_ratio must be > 0, got {max_update_ratio!r}")
        self.base = base
        self.max_update_ratio = float(max_update_ratio)
        self.max_examples = max_examples
        self.buffers = None if buffers is None else frozenset(buffers)
        self.require_all = require_all
        self.compressor = compressor
        self.rejected: list[tuple[int, int, str]] = []
        """``(round, node, reason)`` of every rejected reply so far."""
        self._sent: dict[int, dict[str, np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:
        # only called for names this wrapper does not have: the wrapped strategy's settings
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def arrayrecord_key(self) -> str:
        """The key of the array record in messages (the wrapped strategy's, ``"arrays"`` by default)."""
        return str(getattr(self.base, "arrayrecord_key", "arrays"))

    @property
    def weighted_by_key(self) -> str:
        """The metric holding a reply's weight (the wrapped strategy's, ``"num-examples"`` by default)."""
        return str(getattr(self.base, "weighted_by_key", "num-examples"))

    def summary(self) -> None:
        """The wrapped strategy's summary, then the checks."""
        self.base.summary()
        log.info("ValidatedStrategy: step ratio %g, weight %r bounded by %s", self.max_update_ratio,
                 self.weighted_by_key, "nothing" if self.max_examples is None else "max_examples")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's messages, remembering what each node is sent."""
        messages = list(self.base.configure_train(server_round, arrays, config, grid))
        decoded: dict[int, dict[str, np.ndarray]] = {}
        self._sent = {}
        for msg in messages:
            record = msg.content.array_records.get(self.arrayrecord_key)
            if record is None:
                continue
            if id(record) not in decoded:
                decoded[id(record)] = to_numpy(record)
            self._sent[int(msg.metadata.dst_node_id)] = decoded[id(record)]
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapped strategy's aggregation of the accepted replies (class docstring)."""
        accepted = []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            checked, reason = self.check(msg)
            if reason is None:
                accepted.append(checked)
            else:
                log.warning("round %d: rejected the update of node %s: %s", server_round, node, reason)
                self.rejected.append((server_round, node, reason))
        if not accepted:
            return None, None
        arrays, metrics = self.base.aggregate_train(server_round, accepted)
        return (None if arrays is None else self._keep_dtypes(arrays)), metrics

    def _keep_dtypes(self, arrays: ArrayRecord) -> ArrayRecord:
        """The aggregate with the dtypes the round sent: an averaging rule turns an integer buffer (BatchNorm's
        ``num_batches_tracked``) into float64, and the devices would send it back as an integer (rounded)."""
        sent = next(iter(self._sent.values()), {})
        changed = {k: v for k, v in arrays.items() if k in sent and v.dtype != str(sent[k].dtype)}
        if not changed:
            return arrays
        out = {k: arrays[k] for k in arrays.keys()}
        for name, array in changed.items():
            value, dtype = numpy_of(array), sent[name].dtype
            out[name] = array_of((np.rint(value) if dtype.kind in "biu" else value).astype(dtype))
        return ArrayRecord(out)

    def check(self, msg: Message) -> tuple[Message | None, str | None]:
        """``(rebuilt reply, None)`` for an acceptable reply, else ``(None, reason)`` (module docstring)."""
        if msg.has_error():
            return None, f"error reply: {short_reason(msg.error.reason)}"
        node = int(msg.metadata.src_node_id)
        sent = self._sent.get(node)
        if sent is None:
            return None, "the node was not sent work this round"
        record = msg.content.array_records.get(self.arrayrecord_key)
        metric_records = list(msg.content.metric_records.values())
        if record is None:
            return None, f"reply lacks the array record {self.arrayrecord_key!r}"
        if len(metric_records) != 1:
            return None, f"reply has {len(metric_records)} metric records, expected 1"
        metrics = metric_records[0]
        try:
            read_count(metrics, self.weighted_by_key, 1, self._bound(node), "the node's largest weight")
        except ReplyError as err:
            return None, str(err)
        for key, value in metrics.items():
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in values):
                return None, f"metric {key!r} is not finite"
        received, reason = read_arrays(record, expected_parts(self.compressor, sent), require_all=self.require_all)
        if reason is not None:
            return None, reason
        arrays, reason = decompress_arrays(received, sent, self.compressor)
        if reason is not None:
            return None, reason
        skip = (lambda name, v: name in self.buffers) if self.buffers is not None else is_buffer
        reason = check_steps({k: v for k, v in arrays.items() if not skip(k, v)}, sent, self.max_update_ratio)
        if reason is not None:
            return None, reason
        content = RecordDict({self.arrayrecord_key: to_record(arrays), "metrics": MetricRecord(dict(metrics))})
        # the original metadata (source node, reply id): a rule or wrapper may read them
        return Message(content=content, metadata=copy.copy(msg.metadata)), None

    def _bound(self, node: int) -> int | None:
        bound = self.max_examples
        if bound is None:
            return None
        if isinstance(bound, Mapping):
            return int(bound[node]) if node in bound else None
        if callable(bound):
            return int(bound(node))
        return int(bound)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's."""
        return self.base.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The wrapped strategy's."""
        return self.base.aggregate_evaluate(server_round, replies)

