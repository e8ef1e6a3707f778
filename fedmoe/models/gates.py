"""Gates of the mixture, registered by name in :data:`GATES`, behind one interface.

A gate maps a sample's gate features — plus, optionally, per-expert side inputs — to
logits over the ``E`` experts with a backbone from
:data:`~fedmoe.models.gate_backbones.GATE_BACKBONES` (``mlp``: 3 layers, 128 hidden,
[P000]; ``transformer``: one token per expert, [P001]). The side inputs are

* the sample's **cost vector** ``C`` (``use_costs=True``): the normalised cost of every
  expert on the sample's own device ([P001] eq. 9), so one gate serves devices with
  different channels and compute;
* the per-expert **link quality** (``use_link_quality=True``; always for
  ``channel_aware``): e.g. SNR in dB, or the log of the analog distortion variance
  ``σ²/(p|h|²)`` of [P004] — pass a quantity of order one (or set ``link_scale``).

Experts a sample cannot use (``available`` false: a missing modality) get logit ``-inf``,
weight 0 and are never selected; a sample with no available expert is a ``ValueError``.

Every gate returns a :class:`GateOutput`: fusion ``weights`` (exactly 0 outside
``selected``), the boolean ``selected`` mask of experts that must be computed, ``logits``,
``probs = softmax(logits / τ)`` — the ``g_i`` of the resource-aware loss
``λ Σ_i g_i C_i`` ([P001] eq. 9) — and the auxiliary losses of [P003]
(:mod:`fedmoe.models.aux_losses`). ``τ`` is :attr:`Gate.temperature`, set by the trainer
(see :class:`TemperatureSchedule`); it only changes ``probs`` and the straight-through
gradients, never which experts are selected.

* ``dense``: ``w = softmax(l / τ)``; every available expert selected.
* ``topn``: the ``N`` largest logits ([P000]: N = 5 of 15), weights renormalised over
  them; straight-through — the forward value is the renormalised sparse vector, the
  gradient that of the dense softmax, so the logits of unselected experts learn too.
  Fewer than ``N`` are selected only when fewer are available.
* ``gumbel_hard``: one-hot ``g = onehot(argmax_j (l_j + e_j))`` with Gumbel(0, 1) noise
  ``e`` in training, straight-through with the gradient of
  ``ĝ = softmax((l + e) / τ)`` ([P001] eq. 10–11; the paper writes ``log G(x)_j``,
  which differs from ``l_j`` by a per-sample constant that cancels). No noise in
  evaluation: plain argmax.
* ``gumbel_topn``: ``topn`` whose ``N`` experts are drawn without replacement from
  ``softmax(l)`` in training (Gumbel-top-k), deterministic top-N in evaluation.
* ``softmax_hard``: the same without noise (temperature softmax + straight-through
  one-hot, DynMM-style), deterministic in training too.
* ``channel_aware`` ([P004]): the backbone also reads each expert's link quality;
  selection is top-``N`` as in ``topn`` with **N = 1 by default** — [P004] routes each
  sample to the single expert ``k*`` — so its weights are exactly one-hot; pass
  ``top_n`` for more.

New gates subclass :class:`Gate` and implement :meth:`Gate.select`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fedmoe.models.aux_losses import load_balancing_loss, router_z_loss
from fedmoe.models.gate_backbones import GATE_BACKBONES, build_backbone
from fedmoe.registry import Registry

__all__ = ["GATES", "GATE_BACKBONES", "ChannelAwareGate", "DenseGate", "Gate", "GateOutput", "GumbelHardGate",
           "GumbelTopNGate", "HardGate", "TemperatureSchedule", "TopNGate", "build_gate", "load_balancing_loss",
           "router_z_loss"]


@dataclass
class GateOutput:
    """What a gate decided for a batch of ``B`` samples and ``E`` experts.

    Attributes
    ----------
    weights
        (B, E) fusion weights; exactly 0 where not ``selected``; straight-through
        gradients where the selection is discrete.
    selected
        (B, E) bool: exactly the (sample, expert) pairs that must be computed.
    logits
        (B, E) backbone logits, ``-inf`` at unavailable experts.
    probs
        (B, E) ``softmax(logits / τ)`` (0 at unavailable experts).
    aux
        Auxiliary losses: ``z_loss`` (router z-loss) and ``load_balance``.
    sample_log_prob
        (B,) ``log P(selected)`` under the gate's sampling distribution when the
        selection was *sampled* (noisy gates in training), else ``None``. With it the
        trainer can use the score-function estimator (:mod:`fedmoe.training`), which
        needs no output of an unselected expert.
    """

    weights: torch.Tensor
    selected: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    aux: dict[str, torch.Tensor]
    sample_log_prob: torch.Tensor | None = None


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value exactly ``hard``, gradient that of ``soft`` (``soft - soft.detach()`` is exactly 0)."""
    return hard + (soft - soft.detach())


class Gate(nn.Module):
    """Base gate: backbone on ``[features, side inputs]``, availability mask, selection.

    Parameters
    ----------
    in_dim
        ``F``, width of the gate features.
    num_experts
        ``E``.
    backbone
        Name in :data:`~fedmoe.models.gate_backbones.GATE_BACKBONES` (``mlp`` or
        ``transformer``).
    use_costs
        Feed the per-sample cost vector (E values) to the backbone; every call must then
        pass ``costs``. Without it, ``costs`` passed to :meth:`forward` (for the loss) are
        only shape-checked.
    use_link_quality
        Feed the per-expert link quality (E values) to the backbone; every call must then
        pass ``link_quality``.
    link_scale
        Factor applied to ``link_quality`` before the backbone (e.g. 0.1 for SNR in dB).
    **backbone_options
        Passed to the backbone (``hidden`` for ``mlp``; ``d_model``, ``num_layers``,
        ``num_heads``, ``dim_feedforward`` for ``transformer``).
    """

    def __init__(self, in_dim: int, num_experts: int, backbone: str = "mlp", *, use_costs: bool = False,
                 use_link_quality: bool = False, link_scale: float = 1.0, **backbone_options: object) -> None:
        super().__init__()
        if in_dim < 1 or num_experts < 1:
            raise ValueError(f"in_dim and num_experts must be >= 1, got {in_dim}, {num_experts}")
        if not math.isfinite(link_scale) or link_scale <= 0:
            raise ValueError(f"link_scale must be a positive number, got {link_scale}")
        self.in_dim, self.num_experts = int(in_dim), int(num_experts)
        self.use_costs, self.use_link_quality, self.link_scale = bool(use_costs), bool(use_link_quality), link_scale
        self.side_dim = int(self.use_costs) + int(self.use_link_quality)
        self.backbone_name = backbone
        self.backbone = build_backbone(backbone, self.in_dim, self.num_experts, self.side_dim, **backbone_options)
        # a buffer, not an attribute: τ travels with the state_dict (federated updates, checkpoints), so a
        # model evaluated elsewhere uses the temperature it was trained at
        self.register_buffer("tau", torch.tensor(1.0))
        # λ of supervised routing (fedmoe.training.oracle_routing_loss): the backbone predicts each expert's
        # loss and the gate subtracts λ·C exactly; 0 for every other training. A buffer, so it travels too.
        self.register_buffer("routing_cost_weight", torch.tensor(0.0))

    @property
    def input_dim(self) -> int:
        """Width of everything the backbone reads: ``F + E · (#side inputs)``."""
        return self.in_dim + self.num_experts * self.side_dim

    @property
    def temperature(self) -> float:
        """Softmax temperature ``τ > 0`` of ``probs`` and of the straight-through gradients."""
        return float(self.tau)

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"gate temperature must be a positive number, got {value}")
        self.tau.fill_(value)

    # -- input checks ------------------------------------------------------------------
    def _per_expert(self, name: str, x: torch.Tensor | None, batch: int, required: bool,
                    available: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """Check a (B, E) per-expert input; zero it at unavailable experts; reject non-finite values."""
        shape = (batch, self.num_experts)
        if x is None:
            if required:
                raise ValueError(f"this gate needs {name} of shape {shape}, got None")
            return None
        if tuple(x.shape) != shape:
            raise ValueError(f"this gate needs {name} of shape {shape} (B, num_experts), got {tuple(x.shape)}")
        x = x.to(dtype=like.dtype, device=like.device)
        if available is not None:
            x = torch.where(available, x, torch.zeros_like(x))
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} must be finite for every available expert")
        return x

    def compute_logits(self, features: torch.Tensor, costs: torch.Tensor | None = None,
                       available: torch.Tensor | None = None,
                       link_quality: torch.Tensor | None = None) -> torch.Tensor:
        """(B, E) logits of the backbone, ``-inf`` where not ``available`` (arguments as :meth:`forward`)."""
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"gate features must have shape (B, {self.in_dim}), got {tuple(features.shape)}")
        if not features.is_floating_point():
            features = features.float()
        batch = features.shape[0]
        if available is not None:
            if tuple(available.shape) != (batch, self.num_experts):
                raise ValueError(f"available must have shape ({batch}, {self.num_experts}), got "
                                 f"{tuple(available.shape)}")
            available = available.to(device=features.device).bool()
            empty = (~available.any(dim=1)).nonzero().flatten()
            if empty.numel():
                rows = empty[:10].tolist()
                raise ValueError(f"{empty.numel()} sample(s) have no available expert (all the modalities their "
                                 f"experts need are missing), e.g. rows {rows}")
        c = self._per_expert("costs", costs, batch, self.use_costs, available, features)
        q = self._per_expert("link_quality", link_quality, batch, self.use_link_quality, available, features)
        side = []
        if self.use_costs:
            side.append(c)
        if self.use_link_quality:
            side.append(q * self.link_scale)
        logits = self.backbone(features, torch.stack(side, dim=2) if side else None)
        if costs is not None and float(self.routing_cost_weight) != 0.0:
            logits = logits - self.routing_cost_weight * c
        if available is not None:
            logits = logits.masked_fill(~available, float("-inf"))
        return logits

    def forward(self, features: torch.Tensor, costs: torch.Tensor | None = None,
                available: torch.Tensor | None = None, link_quality: torch.Tensor | None = None) -> GateOutput:
        """Gate a batch.

        Parameters
        ----------
        features
            (B, F) gate features.
        costs
            (B, E) per-sample normalised expert costs; read by the backbone when
            ``use_costs``, otherwise only checked.
        available
            (B, E) bool, false where the sample lacks an input of the expert.
        link_quality
            (B, E) per-expert link quality; read when ``use_link_quality``.

        Returns
        -------
        GateOutput
        """
        logits = self.compute_logits(features, costs, available, link_quality)
        probs = torch.softmax(logits / self.temperature, dim=1)
        chosen = self.select(logits, probs)
        weights, selected = chosen[0], chosen[1]
        log_prob = chosen[2] if len(chosen) > 2 else None
        aux = {"z_loss": router_z_loss(logits), "load_balance": load_balancing_loss(probs, selected)}
        return GateOutput(weights, selected, logits, probs, aux, log_prob)

    @property
    def samples_in_training(self) -> bool:
        """True when :meth:`select` draws its selection in training and returns its log-probability."""
        return False

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Fusion weights (B, E) and selection mask (B, E) from logits and ``probs``; per gate.

        A gate that *samples* its selection may return a third item, the (B,)
        log-probability of what it sampled (:attr:`GateOutput.sample_log_prob`).
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, num_experts={self.num_experts}, backbone={self.backbone_name!r}, "
                f"use_costs={self.use_costs}, use_link_quality={self.use_link_quality}")


GATES: Registry[type[Gate]] = Registry("gate")


def build_gate(name: str, in_dim: int, num_experts: int, **options: object) -> Gate:
    """Instantiate the gate registered as ``name`` (``options`` as for :class:`Gate` and the gate)."""
    return GATES.get(name)(in_dim, num_experts, **options)


@GATES.register("dense")
class DenseGate(Gate):
    """Dense softmax gate: all available experts computed, ``w = softmax(l / τ)`` ([P000], dense MoE)."""

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return probs, torch.isfinite(logits)


def _gumbel_perturbed(logits: torch.Tensor) -> torch.Tensor:
    """``l + e`` with ``e ~ Gumbel(0, 1)`` i.i.d.; stays ``-inf`` where ``l`` is."""
    u = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-7)
    return logits - torch.log(-torch.log(u))


def _top_n_select(logits: torch.Tensor, probs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``n`` available experts, weights renormalised over them, straight-through to ``probs``."""
    idx = logits.topk(min(n, logits.shape[1]), dim=1).indices
    return _renormalised_over(idx, logits, probs)


def _renormalised_over(idx: torch.Tensor, logits: torch.Tensor,
                       probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Select the experts ``idx`` (B, n) that are available; weights ``probs`` renormalised over
    them, straight-through to ``probs``. Returns ``(weights, selected)``."""
    selected = torch.zeros_like(logits, dtype=torch.bool).scatter(1, idx, True) & torch.isfinite(logits)
    sparse = probs.detach() * selected
    sparse = sparse / sparse.sum(dim=1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    return _straight_through(sparse, probs), selected


def _check_top_n(top_n: int, num_experts: int) -> int:
    if not 1 <= int(top_n) <= num_experts:
        raise ValueError(f"top_n must be in [1, {num_experts}] (the number of experts), got {top_n}")
    return int(top_n)


@GATES.register("topn")
class TopNGate(Gate):
    """Sparse top-N gate with renormalised weights and straight-through gradients ([P000]).

    Parameters
    ----------
    top_n
        ``N``, experts computed per sample ([P000]: 5 of 15).
    **options
        As for :class:`Gate`.
    """

    def __init__(self, in_dim: int, num_experts: int, backbone: str = "mlp", *, top_n: int = 5,
                 **options: object) -> None:
        super().__init__(in_dim, num_experts, backbone, **options)
        self.top_n = _check_top_n(top_n, num_experts)

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _top_n_select(logits, probs, self.top_n)


@GATES.register("softmax_hard")
class HardGate(Gate):
    """Hard one-hot gate, straight-through with a temperature softmax (DynMM-style, no noise).

    Forward: ``g = onehot(argmax_j s_j)``; backward: gradient of ``softmax(s / τ)``, with
    ``s = l`` here and ``s = l + e`` (Gumbel noise, training only) in
    :class:`GumbelHardGate` ([P001] eq. 10–11).
    """

    gumbel: bool = False

    @property
    def samples_in_training(self) -> bool:
        return self.gumbel

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sampled = self.gumbel and self.training
        scores = _gumbel_perturbed(logits) if sampled else logits
        soft = torch.softmax(scores / self.temperature, dim=1)
        choice = scores.argmax(dim=1, keepdim=True)
        hard = torch.zeros_like(soft).scatter(1, choice, 1.0)
        if not sampled:
            return _straight_through(hard, soft), hard.bool()
        # Gumbel-max: argmax_j (l_j + e_j) is distributed as softmax(l), whatever τ.
        log_prob = torch.log_softmax(logits, dim=1).gather(1, choice).squeeze(1)
        return _straight_through(hard, soft), hard.bool(), log_prob


@GATES.register("gumbel_hard")
class GumbelHardGate(HardGate):
    """Hard one-hot Gumbel-softmax gate with straight-through gradients ([P001] eq. 10–11).

    In training the choice is a sample of ``softmax(l)`` (Gumbel-max), and its
    log-probability is returned for the score-function estimator.
    """

    gumbel = True


@GATES.register("gumbel_topn")
class GumbelTopNGate(TopNGate):
    """Sparse top-N gate that *samples* its N experts in training (Gumbel-top-k).

    Training: the ``N`` largest ``l_j + e_j`` (Gumbel noise), i.e. ``N`` draws without
    replacement from ``softmax(l)`` (Kool et al., 2019); the returned log-probability is
    the Plackett–Luce probability of the drawn order,
    ``Σ_k [l_{i_k} − log Σ_{j ∉ {i_1..i_{k-1}}} exp l_j]``. Evaluation: the
    deterministic top-N of :class:`TopNGate`. Weights are renormalised over the selected
    experts with straight-through gradients, as in ``topn``.
    """

    @property
    def samples_in_training(self) -> bool:
        return True

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.training:
            return _top_n_select(logits, probs, self.top_n)
        order = _gumbel_perturbed(logits).topk(min(self.top_n, logits.shape[1]), dim=1).indices
        weights, selected = _renormalised_over(order, logits, probs)
        remaining = logits
        log_prob = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
        for k in range(order.shape[1]):
            pick = remaining.gather(1, order[:, k:k + 1]).squeeze(1)
            ok = torch.isfinite(pick)  # fewer than N available: the rest are not draws
            step = pick - torch.logsumexp(remaining, dim=1)
            log_prob = log_prob + torch.where(ok, step, torch.zeros_like(step))
            remaining = remaining.scatter(1, order[:, k:k + 1], float("-inf"))
        return weights, selected, log_prob


@GATES.register("channel_aware")
class ChannelAwareGate(Gate):
    """Channel-aware gate ([P004]): the backbone reads each expert's link quality too.

    Selection is top-``N`` with renormalised weights and straight-through gradients as in
    :class:`TopNGate`, with ``N = 1`` by default ([P004] sends each sample to the single
    expert ``k*``). Every call must pass ``link_quality`` (B, E).

    Parameters
    ----------
    top_n
        ``N``, experts computed per sample.
    **options
        As for :class:`Gate` (``use_link_quality`` is always on).
    """

    def __init__(self, in_dim: int, num_experts: int, backbone: str = "mlp", *, top_n: int = 1,
                 **options: object) -> None:
        options.pop("use_link_quality", None)
        super().__init__(in_dim, num_experts, backbone, use_link_quality=True, **options)
        self.top_n = _check_top_n(top_n, num_experts)

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _top_n_select(logits, probs, self.top_n)


@dataclass(frozen=True)
class TemperatureSchedule:
    """Annealing of the gate temperature from ``tau_start`` to ``tau_end`` over ``steps`` steps.

    [P001] (§III-D) anneals ``τ`` of eq. 11 so that ``ĝ`` approaches the one-hot ``g``;
    it gives no formula, so we offer the usual exponential decay
    ``τ(t) = τ₀ (τ₁/τ₀)^{min(t/T, 1)}`` and, as an option, linear interpolation
    ``τ(t) = τ₀ + (τ₁ − τ₀) min(t/T, 1)``. After ``steps`` the temperature stays at
    ``tau_end``. Set it with ``gate.temperature = schedule(step)``.

    Parameters
    ----------
    tau_start, tau_end
        Positive finite temperatures (``tau_end`` may exceed ``tau_start``).
    steps
        ``T >= 1``, the number of steps to reach ``tau_end``.
    kind
        ``"exponential"`` or ``"linear"``.
    """

    tau_start: float = 2.0
    tau_end: float = 0.2
    steps: int = 1000
    kind: Literal["exponential", "linear"] = "exponential"

    def __post_init__(self) -> None:
        for name in ("tau_start", "tau_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.kind not in ("exponential", "linear"):
            raise ValueError(f"kind must be 'exponential' or 'linear', got {self.kind!r}")

    def __call__(self, step: int) -> float:
        """Temperature at ``step`` (``>= 0``)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        t = min(float(step) / self.steps, 1.0)
        if t >= 1.0:
            return float(self.tau_end)
        if self.kind == "exponential":
            return float(self.tau_start * (self.tau_end / self.tau_start) ** t)
        return float(self.tau_start + (self.tau_end - self.tau_start) * t)
