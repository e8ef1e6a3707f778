"""Gates of the mixture, registered by name, behind one interface.

A gate maps a sample's gate features (and, optionally, its per-expert cost vector ``C``,
paper 001 eq. 9) to logits over the ``E`` experts with a 3-layer MLP of 128 hidden units
(paper 000). Experts a sample cannot use (a missing modality) get logit ``-inf``. Every
gate returns a :class:`GateOutput`: fusion ``weights``, the boolean ``selected`` mask of
experts that must be computed (weights are exactly 0 elsewhere), ``logits``, the softmax
``probs`` at the current temperature, and auxiliary losses.

* ``dense``: ``w = softmax(l)``, all available experts selected.
* ``topn``: the ``N`` largest logits (paper 000, N = 5 of 15), weights renormalised over
  them; straight-through: the forward value is the renormalised sparse vector, the
  gradient is that of the dense softmax, so unselected experts still learn.
* ``gumbel_hard``: one-hot ``argmax(l + g)`` with Gumbel noise ``g`` in training,
  straight-through with the gradient of ``softmax((l + g) / τ)`` (paper 001, eq. 10–11);
  no noise in evaluation. ``τ`` is :attr:`Gate.temperature`, annealed by the trainer.
* ``softmax_hard``: the same without noise (temperature softmax + straight-through one-hot).

Auxiliary losses (paper 003): router z-loss ``mean_b (logsumexp_i l_bi)²`` and the
load-balancing loss ``E Σ_i f_i P_i`` (``f_i`` share of samples selecting ``i``, ``P_i``
mean probability).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmoe.registry import Registry


@dataclass
class GateOutput:
    weights: torch.Tensor  # (B, E) fusion weights (straight-through where discrete)
    selected: torch.Tensor  # (B, E) bool: experts to compute
    logits: torch.Tensor  # (B, E), -inf where unavailable
    probs: torch.Tensor  # (B, E) softmax(logits / temperature)
    aux: dict[str, torch.Tensor]


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """``mean_b (logsumexp_i l_bi)²`` over available experts (paper 003)."""
    return torch.logsumexp(logits, dim=1).pow(2).mean()


def load_balancing_loss(probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """``E Σ_i f_i P_i``; equals 1 when selections and probabilities are uniform (paper 003)."""
    e = probs.shape[1]
    f = selected.float().mean(0)
    f = f / f.sum().clamp_min(1e-12)
    return e * (f * torch.nan_to_num(probs).mean(0)).sum()


class Gate(nn.Module):
    """Base gate: MLP backbone on ``[features, costs]`` and the availability mask.

    Parameters
    ----------
    in_dim
        Width of the gate features.
    num_experts
        ``E``.
    use_costs
        Whether the per-sample cost vector (E values) is appended to the features; then
        every call must pass ``costs``.
    hidden
        Hidden width of the 3-layer MLP (paper 000: 128).
    """

    def __init__(self, in_dim: int, num_experts: int, use_costs: bool = False, hidden: int = 128) -> None:
        super().__init__()
        if in_dim < 1 or num_experts < 1:
            raise ValueError(f"in_dim and num_experts must be >= 1, got {in_dim}, {num_experts}")
        self.in_dim, self.num_experts, self.use_costs = in_dim, num_experts, use_costs
        width = in_dim + (num_experts if use_costs else 0)
        self.backbone = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, num_experts))
        self.temperature = 1.0

    def logits(self, features: torch.Tensor, costs: torch.Tensor | None, available: torch.Tensor | None) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"gate features must have shape (B, {self.in_dim}), got {tuple(features.shape)}")
        batch = features.shape[0]
        if self.use_costs:
            if costs is None or tuple(costs.shape) != (batch, self.num_experts):
                got = None if costs is None else tuple(costs.shape)
                raise ValueError(f"this gate needs costs of shape ({batch}, {self.num_experts}), got {got}")
            features = torch.cat([features, costs.float()], dim=1)
        logits = self.backbone(features)
        if available is not None:
            if tuple(available.shape) != (batch, self.num_experts):
                raise ValueError(f"available must have shape ({batch}, {self.num_experts}), got {tuple(available.shape)}")
            if not available.any(dim=1).all():
                raise ValueError("a sample has no available expert (all its modalities are missing)")
            logits = logits.masked_fill(~available.bool(), float("-inf"))
        return logits

    def forward(self, features: torch.Tensor, costs: torch.Tensor | None = None,
                available: torch.Tensor | None = None, link_quality: torch.Tensor | None = None) -> GateOutput:
        logits = self.logits(features, costs, available)
        probs = torch.softmax(logits / self.temperature, dim=1)
        weights, selected = self.select(logits, probs)
        aux = {"z_loss": router_z_loss(logits), "load_balance": load_balancing_loss(probs, selected)}
        return GateOutput(weights, selected, logits, probs, aux)

    def select(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


GATES: Registry[type[Gate]] = Registry("gate")


@GATES.register("dense")
class DenseGate(Gate):
    def select(self, logits, probs):
        return probs, torch.isfinite(logits)


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value ``hard``, gradient of ``soft``."""
    return hard + (soft - soft.detach())  # the bracket is exactly 0: the forward value is exactly `hard`


@GATES.register("topn")
class TopNGate(Gate):
    def __init__(self, in_dim: int, num_experts: int, use_costs: bool = False, hidden: int = 128, top_n: int = 5) -> None:
        super().__init__(in_dim, num_experts, use_costs, hidden)
        if not 1 <= top_n <= num_experts:
            raise ValueError(f"top_n must be in [1, {num_experts}], got {top_n}")
        self.top_n = top_n

    def select(self, logits, probs):
        k = self.top_n
        idx = logits.topk(k, dim=1).indices
        selected = torch.zeros_like(probs, dtype=torch.bool).scatter(1, idx, True) & torch.isfinite(logits)
        sparse = probs * selected
        sparse = sparse / sparse.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return _straight_through(sparse.detach(), probs), selected


@GATES.register("softmax_hard")
class HardGate(Gate):
    gumbel = False

    def select(self, logits, probs):
        scores = logits
        if self.gumbel and self.training:
            u = torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)
            scores = logits - torch.log(-torch.log(u))
        soft = torch.softmax(scores / self.temperature, dim=1)
        hard = torch.zeros_like(soft).scatter(1, scores.argmax(dim=1, keepdim=True), 1.0)
        return _straight_through(hard, soft), hard.bool()


@GATES.register("gumbel_hard")
class GumbelHardGate(HardGate):
    gumbel = True
