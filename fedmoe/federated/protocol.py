"""What the server and a device say to each other in a federated round, typed.

Flower carries a round as flat records: the server's TRAIN message has a ``ConfigRecord``,
the device's reply a ``MetricRecord`` (and the arrays). Their keys are kebab case, as
Flower's own strategies spell them (``"num-examples"``, ``"proximal-mu"``). This module
defines them once:

* :class:`RoundInstructions` — the request: what a selected device is told to do this round;
* :class:`TrainReply` — the reply: what the device says it did and what it cost;
* :class:`QueryReply` and :class:`EvaluateReply` — the answers to the device query and to
  an evaluation request;
* the metric names (``*_KEY``) of every reply the federated ClientApp sends (query, train,
  evaluate) and of the round metrics the strategy returns. The ClientApp, the strategies,
  the fault injection and the tests use these names, never the literals.

It imports neither torch nor Flower, so that the ClientApp's query handler can use it
without loading the model zoo.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

from fedmoe.config import MODALITIES

# ------------------------------------------------------------------ metric names

NUM_EXAMPLES_KEY = "num-examples"
"""Samples the reply is about (training or held-out); the weight ``n_k`` of FedAvg (Flower's ``weighted_by_key``)."""
USAGE_KEY = "expert-usage"
"""Per expert, the share ``u_ki`` of the device's training rows on which it computed expert ``i``
(E floats in [0, 1])."""
TRAIN_LOSS_KEY = "train-loss"
"""Mean training loss of the round."""
FLOPS_KEY = "flops"
"""Training FLOPs ``F_k`` of the round."""
UPLOAD_BITS_KEY = "upload-bits"
"""Bits ``b_k`` of the update sent back."""
LATENCY_KEY = "latency-s"
"""The round's latency ``T_k`` on the device (compute and uplink), s."""
ENERGY_KEY = "energy-j"
"""The round's energy ``E_k`` on the device, J."""
PARTITION_KEY = "partition-id"
"""The device (its partition of the data) that replies."""
STAGE_KEY = "stage"
"""The training stage of the round (1: experts, 2: gate and experts)."""
MODALITIES_KEY = "modalities"
"""Query reply: the device's sensors, one 0/1 per name of :data:`fedmoe.config.MODALITIES`."""
ACCURACY_KEY = "accuracy"
"""Evaluate reply (and the strategy's evaluation metrics): beam accuracy on the held-out samples."""
MEAN_COST_KEY = "mean-cost"
"""Evaluate reply: mean cost ``Σ_i g_i C_i`` of the gate's selections."""
CLOCK_KEY = "clock-s"
"""Round metrics of the strategy: the virtual clock after the round, s."""
COMPLETED_KEY = "completed"
"""Round metrics of the strategy: replies aggregated."""
FAILED_KEY = "failed"
"""Round metrics of the strategy: devices that failed, were silent or were rejected."""
FORWARD_FLOPS_KEY = "forward-flops"
"""Split-learning reply: the device's forward FLOPs for the exchange (its experts on the chunk)."""
BACKWARD_FLOPS_KEY = "backward-flops"
"""Split-learning reply: the device's backward FLOPs (applying the gradient of its previous chunk)."""
SPLIT_LABEL_PREFIX = "label."
"""Split-learning ``encode`` reply: prefix of its label arrays (``label.beam``, …)."""


class ReplyError(ValueError):
    """A reply's metric is missing or malformed; :attr:`key` names it, and so does the message."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


# ------------------------------------------------------------------ checks of one metric


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_count(metrics: Mapping[str, Any], key: str, lo: int, hi: int | None = None, what: str = "") -> int:
    """``metrics[key]`` as an integer in ``[lo, hi]`` (``hi=None``: no upper bound); else a
    :class:`ReplyError` naming ``key`` (``what`` says what ``hi`` is)."""
    if key not in metrics:
        raise ReplyError(key, f"no {key!r}")
    n = metrics[key]
    if not _is_number(n) or not math.isfinite(float(n)) or float(n) != int(n):
        raise ReplyError(key, f"{key}={n!r} is not a finite integer")
    if int(n) < lo or (hi is not None and int(n) > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f"[{lo}, ∞)"
        raise ReplyError(key, f"{key}={int(n)} is outside {bound}{f' ({what})' if what else ''}")
    return int(n)


def read_number(metrics: Mapping[str, Any], key: str, nonnegative: bool = False) -> float:
    """``metrics[key]`` as a finite float (``>= 0`` if ``nonnegative``); else a :class:`ReplyError` naming ``key``."""
    if key not in metrics:
        raise ReplyError(key, f"no {key!r}")
    v = metrics[key]
    if not _is_number(v) or not math.isfinite(float(v)):
        raise ReplyError(key, f"{key}={v!r} is not a finite number")
    if nonnegative and float(v) < 0:
        raise ReplyError(key, f"{key}={float(v):g} is negative")
    return float(v)


def read_fraction(metrics: Mapping[str, Any], key: str) -> float:
    """``metrics[key]`` as a finite float in ``[0, 1]``; else a :class:`ReplyError` naming ``key``."""
    v = read_number(metrics, key)
    if not 0.0 <= v <= 1.0:
        raise ReplyError(key, f"{key}={v:g} is outside [0, 1]")
    return v


def read_shares(metrics: Mapping[str, Any], key: str, length: int | None = None) -> tuple[float, ...]:
    """``metrics[key]`` as a list of ``length`` finite floats in ``[0, 1]`` (any length if ``None``);
    else a :class:`ReplyError` naming ``key``."""
    if key not in metrics:
        raise ReplyError(key, f"no {key!r}")
    values = metrics[key]
    if not isinstance(values, (list, tuple)) or not all(_is_number(u) for u in values):
        raise ReplyError(key, f"{key} is not a list of numbers")
    if length is not None and len(values) != length:
        raise ReplyError(key, f"{key} has {len(values)} entries, the model has {length} experts")
    if not all(math.isfinite(float(u)) and 0.0 <= float(u) <= 1.0 for u in values):
        raise ReplyError(key, f"{key} has entries outside [0, 1]")
    return tuple(float(u) for u in values)


def read_flags(metrics: Mapping[str, Any], key: str, length: int) -> tuple[bool, ...]:
    """``metrics[key]`` as a list of ``length`` values, each 0 or 1 (``False``/``True``); else a
    :class:`ReplyError` naming ``key``."""
    values = read_shares(metrics, key, length)
    if not all(u in (0.0, 1.0) for u in values):
        raise ReplyError(key, f"{key} has entries other than 0 and 1")
    return tuple(u == 1.0 for u in values)


# ------------------------------------------------------------------ request


@dataclass
class RoundInstructions:
    """What the server tells a selected device for one round (the ``config`` of its message)."""

    server_round: int
    stage: int
    local_epochs: int
    lr: float
    tau: float
    cost_weight: float
    rate_bps: float
    num_rb: int
    deadline_s: float
    modalities: tuple[str, ...] = MODALITIES
    proximal_mu: float = 0.0
    fit_standardiser: bool = False

    @staticmethod
    def config_key(name: str) -> str:
        """The config key of a field: its name in kebab case, as Flower's own strategies spell keys."""
        return name.replace("_", "-")

    def to_config(self) -> dict[str, Any]:
        """Flower ``ConfigRecord`` values (kebab-case keys, :meth:`config_key`)."""
        out = {self.config_key(k): v for k, v in asdict(self).items()}
        out["modalities"] = list(self.modalities)
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RoundInstructions":
        """Read the instructions back; a missing or malformed key is a ``ValueError`` naming it."""
        values = {}
        for f in fields(cls):
            key = cls.config_key(f.name)
            if key not in config:
                if f.name in ("modalities", "proximal_mu", "fit_standardiser"):
                    continue
                raise ValueError(f"round config lacks {key!r}")
            values[f.name] = config[key]
        if "modalities" in values:
            unknown = set(values["modalities"]) - set(MODALITIES)
            if unknown:
                raise ValueError(f"round config 'modalities' has unknown names {sorted(unknown)}")
            values["modalities"] = tuple(values["modalities"])
        if int(values["stage"]) not in (1, 2):
            raise ValueError(f"round config 'stage' must be 1 or 2, got {values['stage']}")
        return cls(**values)


# ------------------------------------------------------------------ reply


@dataclass(frozen=True)
class TrainReply:
    """What a device reports after its round of local training (the ``metrics`` of its reply).

    The arrays travel beside it (the shared group and the groups of the experts it computed).
    :meth:`to_metrics` gives the ``MetricRecord`` values, :meth:`from_metrics` reads and
    checks them back.
    """

    num_examples: int
    expert_usage: tuple[float, ...]
    train_loss: float
    flops: float
    upload_bits: float
    latency_s: float
    energy_j: float
    partition_id: int
    stage: int

    def to_metrics(self) -> dict[str, Any]:
        """Flower ``MetricRecord`` values under the ``*_KEY`` names."""
        return {
            NUM_EXAMPLES_KEY: int(self.num_examples),
            USAGE_KEY: [float(u) for u in self.expert_usage],
            TRAIN_LOSS_KEY: float(self.train_loss),
            FLOPS_KEY: float(self.flops),
            UPLOAD_BITS_KEY: float(self.upload_bits),
            LATENCY_KEY: float(self.latency_s),
            ENERGY_KEY: float(self.energy_j),
            PARTITION_KEY: int(self.partition_id),
            STAGE_KEY: int(self.stage),
        }

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], *, num_experts: int | None = None,
                     max_examples: int | None = None, num_devices: int | None = None) -> "TrainReply":
        """Read a reply's metrics, checking each: a :class:`ReplyError` (a ``ValueError``) naming the
        first key that is missing, of the wrong type, not finite or out of range.

        Parameters
        ----------
        metrics : Mapping
            The reply's ``MetricRecord`` (or a dict of its values).
        num_experts : int, optional
            The length ``expert-usage`` must have (any, if ``None``).
        max_examples : int, optional
            The most ``num-examples`` the device may claim: its training samples (no bound if ``None``).
        num_devices : int, optional
            ``partition-id`` must be in ``[0, num_devices)`` (``>= 0`` if ``None``).
        """
        return cls(
            num_examples=read_count(metrics, NUM_EXAMPLES_KEY, 1, max_examples, "the device's training samples"),
            expert_usage=read_shares(metrics, USAGE_KEY, num_experts),
            train_loss=read_number(metrics, TRAIN_LOSS_KEY),
            flops=read_number(metrics, FLOPS_KEY, nonnegative=True),
            upload_bits=read_number(metrics, UPLOAD_BITS_KEY, nonnegative=True),
            latency_s=read_number(metrics, LATENCY_KEY, nonnegative=True),
            energy_j=read_number(metrics, ENERGY_KEY, nonnegative=True),
            partition_id=read_count(metrics, PARTITION_KEY, 0, None if num_devices is None else num_devices - 1,
                                    "the scenario's devices"),
            stage=read_count(metrics, STAGE_KEY, 1, 2, "stage I or II"),
        )


@dataclass(frozen=True)
class QueryReply:
    """A node's answer to the device query (:func:`fedmoe.strategies.discovery.discover_devices`): the device
    it is, its training samples and its sensors (one flag per name of :data:`~fedmoe.config.MODALITIES`)."""

    partition_id: int
    num_examples: int
    modalities: tuple[bool, ...]

    def to_metrics(self) -> dict[str, Any]:
        """Flower ``MetricRecord`` values under the ``*_KEY`` names."""
        return {PARTITION_KEY: int(self.partition_id), NUM_EXAMPLES_KEY: int(self.num_examples),
                MODALITIES_KEY: [int(m) for m in self.modalities]}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], *, num_devices: int,
                     max_examples: Callable[[int], int] | None = None) -> "QueryReply":
        """Read and check a query reply: ``partition-id`` in ``[0, num_devices)``, ``num-examples`` in
        ``[1, max_examples(partition-id)]`` (no upper bound if ``None``), ``modalities`` one 0/1 per
        modality; a :class:`ReplyError` naming the first key that is not."""
        pid = read_count(metrics, PARTITION_KEY, 0, num_devices - 1, "the scenario's devices")
        return cls(partition_id=pid,
                   num_examples=read_count(metrics, NUM_EXAMPLES_KEY, 1, None if max_examples is None
                                           else max_examples(pid), "the device's training samples"),
                   modalities=read_flags(metrics, MODALITIES_KEY, len(MODALITIES)))


@dataclass(frozen=True)
class EvaluateReply:
    """A device's answer to an evaluation request: its held-out samples, the global model's
    accuracy and mean cost on them, and the device it is."""

    num_examples: int
    accuracy: float
    mean_cost: float
    partition_id: int

    def to_metrics(self) -> dict[str, Any]:
        """Flower ``MetricRecord`` values under the ``*_KEY`` names."""
        return {NUM_EXAMPLES_KEY: int(self.num_examples), ACCURACY_KEY: float(self.accuracy),
                MEAN_COST_KEY: float(self.mean_cost), PARTITION_KEY: int(self.partition_id)}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], *, max_examples: int | None = None,
                     num_devices: int | None = None) -> "EvaluateReply":
        """Read and check an evaluate reply: ``num-examples`` in ``[1, max_examples]`` (the held-out
        samples the server knows the device has), ``accuracy`` in ``[0, 1]``, ``mean-cost`` finite and
        non-negative, ``partition-id`` in ``[0, num_devices)``; a :class:`ReplyError` naming the first
        key that is not."""
        return cls(
            num_examples=read_count(metrics, NUM_EXAMPLES_KEY, 1, max_examples, "the device's held-out samples"),
            accuracy=read_fraction(metrics, ACCURACY_KEY),
            mean_cost=read_number(metrics, MEAN_COST_KEY, nonnegative=True),
            partition_id=read_count(metrics, PARTITION_KEY, 0, None if num_devices is None else num_devices - 1,
                                    "the scenario's devices"),
        )
