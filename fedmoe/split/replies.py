"""Checks of a split-learning device's reply before the server reads anything of it
(``docs/security.md``, "Malicious device").

In split learning and SplitFed (:mod:`fedmoe.strategies.split_learning`) a device answers a
``features`` message with its gate inputs and an ``encode`` message with the features of its
selected (sample, expert) pairs and the chunk's labels (:mod:`fedmoe.clients.split`). The server
feeds those arrays to its gate, its task heads and its loss, so a malformed reply would
raise there and end the run, and a crafted one could poison the server's model. A reply is
therefore refused, with a one-line reason (the device is dropped for the rest of the
round, as one whose reply is an error), when

* its ``metrics`` lack ``num-examples`` or hold one that is not an integer in
  ``[1, max_examples]``, or a ``forward-flops`` / ``backward-flops`` that is not a finite
  number ``>= 0``;
* its ``split`` record has a name the phase does not have or lacks one it has; an array's
  metadata declare another dtype than the one the device writes, another trailing shape
  than the scenario's (feature width, gate-input width, modality count, a label's shape),
  more rows than the message's batches hold (``max_rows``), or more pairs than rows × experts;
  all of this is read from the metadata before any value is decoded;
* a blob is not the ``.npy`` of its metadata (:func:`fedmoe.flower.npy_layout`);
* decoded, a float array holds NaN or ±Inf, an expert index is outside ``[0, E)``, a
  row index outside ``[0, R)``, a batch index negative, or a beam label outside
  ``[0, num_beams)``.

:func:`read_split_reply` returns the decoded arrays of an accepted reply; the server uses
those and never decodes the device's bytes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from flwr.app import Message

from fedmoe.config import MODALITIES
from fedmoe.federated.protocol import (
    BACKWARD_FLOPS_KEY,
    FORWARD_FLOPS_KEY,
    NUM_EXAMPLES_KEY,
    SPLIT_LABEL_PREFIX,
    ReplyError,
    read_count,
    read_number,
)
from fedmoe.federated.world import ScenarioWorld
from fedmoe.flower import ArrayFormatError, npy_layout, numpy_of

FLOP_KEYS = (FORWARD_FLOPS_KEY, BACKWARD_FLOPS_KEY)
"""Metrics a split reply may carry: the device's compute for the exchange."""

class SplitReplyError(ValueError):
    """A split-learning reply the server refuses (module docstring); the message is the reason."""


@dataclass(frozen=True)
class ArraySpec:
    """What one array of a reply must be: dtype, and per axis a fixed size, ``"rows"`` (the chunk's
    rows, at most ``max_rows``) or ``"pairs"`` (at most rows × experts)."""

    dtype: str
    axes: tuple[int | str, ...]


@dataclass(frozen=True)
class SplitReplySchema:
    """The arrays of each phase's reply, from the scenario (:meth:`for_world`)."""

    phases: dict[str, dict[str, ArraySpec]]
    num_experts: int
    num_beams: int

    @classmethod
    def for_world(cls, world: ScenarioWorld) -> "SplitReplySchema":
        """The schema the ClientApp's split handlers write for ``world``'s model and data."""
        model = world.template
        probe = world.source(2, np.random.default_rng(0))
        labels = {f"{SPLIT_LABEL_PREFIX}{k}": ArraySpec(str(v.dtype), ("rows", *v.shape[1:]))
                  for k, v in probe.labels.items()}
        gate_width = model.gate_in_dim(world.shapes, model.gate_modalities)
        m = len(MODALITIES)
        features = {"features": ArraySpec("float32", ("rows", gate_width)), "present": ArraySpec("bool", ("rows", m))}
        encode = {"z": ArraySpec("float32", ("pairs", int(model.heads.in_features))),
                  "expert": ArraySpec("int32", ("pairs",)), "row": ArraySpec("int32", ("pairs",)),
                  "batch": ArraySpec("int32", ("rows",)), "present": ArraySpec("bool", ("rows", m)), **labels}
        return cls({"features": features, "encode": encode}, model.num_experts, world.num_beams)


def read_split_metrics(metrics: Mapping[str, Any] | None, max_examples: int) -> dict[str, float]:
    """``num-examples`` and the FLOP counts of a reply's metrics, checked (module docstring)."""
    if metrics is None:
        raise SplitReplyError("no metrics")
    try:
        out = {NUM_EXAMPLES_KEY: float(read_count(metrics, NUM_EXAMPLES_KEY, 1, max_examples,
                                                  "the device's samples"))}
        for key in FLOP_KEYS:
            if key in metrics:
                out[key] = read_number(metrics, key, nonnegative=True)
    except ReplyError as err:
        raise SplitReplyError(str(err)) from None
    return out


def read_split_reply(reply: Message, phase: str, schema: SplitReplySchema, max_rows: int,
                     max_examples: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``(arrays, metrics)`` of an accepted ``features`` or ``encode`` reply; else :class:`SplitReplyError`."""
    specs = schema.phases.get(phase)
    if specs is None:
        raise ValueError(f"unknown split phase {phase!r}")
    content = reply.content
    metrics = read_split_metrics(content.metric_records.get("metrics"), max_examples)
    record = content.array_records.get("split")
    if record is None:
        raise SplitReplyError("no 'split' arrays")
    names = set(record.keys())
    unknown = sorted(str(k)[:40] for k in names - set(specs))
    if unknown:
        raise SplitReplyError(f"unexpected arrays {unknown[:3]}{' …' if len(unknown) > 3 else ''}")
    missing = sorted(set(specs) - names)
    if missing:
        raise SplitReplyError(f"missing arrays {missing[:3]}{' …' if len(missing) > 3 else ''}")
    rows = _rows(record, specs, max_rows)
    for name, spec in specs.items():
        _check_metadata(name, record[name], spec, rows, rows * schema.num_experts)
    for name in specs:
        try:
            npy_layout(record[name])
        except ArrayFormatError as err:
            raise SplitReplyError(f"array {name!r}: {err}") from None
    arrays = {name: numpy_of(record[name]) for name in specs}
    _check_values(arrays, schema, rows)
    return arrays, metrics


def _rows(record, specs: Mapping[str, ArraySpec], max_rows: int) -> int:
    """The chunk's row count, from the first per-row array's metadata (every other must agree)."""
    name = next(n for n, s in specs.items() if s.axes[0] == "rows")
    shape = record[name].shape
    if not isinstance(shape, (tuple, list)) or not shape or not isinstance(shape[0], int) or isinstance(shape[0], bool):
        raise SplitReplyError(f"array {name!r} has shape {str(shape)[:60]}")
    if not 0 <= shape[0] <= max_rows:
        raise SplitReplyError(f"array {name!r} has {shape[0]} rows; the message's batches hold at most {max_rows}")
    return int(shape[0])


def _check_metadata(name: str, array, spec: ArraySpec, rows: int, max_pairs: int) -> None:
    if array.dtype != spec.dtype:
        raise SplitReplyError(f"array {name!r} has dtype {str(array.dtype)[:40]!r}, expected {spec.dtype}")
    shape = array.shape
    if not isinstance(shape, (tuple, list)) or len(shape) != len(spec.axes) \
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise SplitReplyError(f"array {name!r} has shape {str(shape)[:60]}, expected {len(spec.axes)} axes")
    for axis, (size, want) in enumerate(zip(shape, spec.axes)):
        ok = size == rows if want == "rows" else 0 <= size <= max_pairs if want == "pairs" else size == want
        if not ok:
            expected = f"{rows} rows" if want == "rows" else f"at most {max_pairs} pairs" if want == "pairs" else want
            raise SplitReplyError(f"array {name!r} has size {size} on axis {axis}, expected {expected}")


def _check_values(arrays: Mapping[str, np.ndarray], schema: SplitReplySchema, rows: int) -> None:
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise SplitReplyError(f"array {name!r} holds NaN or Inf")
    if "expert" in arrays:
        pairs = {len(arrays[k]) for k in ("z", "expert", "row")}
        if len(pairs) != 1:
            raise SplitReplyError("arrays 'z', 'expert' and 'row' differ in length")
        _in_range(arrays, "expert", 0, schema.num_experts)
        _in_range(arrays, "row", 0, rows)
        if (arrays["batch"] < 0).any():
            raise SplitReplyError("array 'batch' has a negative batch index")
    beam = arrays.get(f"{SPLIT_LABEL_PREFIX}beam")
    if beam is not None:
        _in_range(arrays, f"{SPLIT_LABEL_PREFIX}beam", 0, schema.num_beams)


def _in_range(arrays: Mapping[str, np.ndarray], name: str, lo: int, hi: int) -> None:
    value = arrays[name]
    if value.size and (value.min() < lo or value.max() >= hi):
        raise SplitReplyError(f"array {name!r} has a value outside [{lo}, {hi})")
