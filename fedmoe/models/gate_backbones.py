"""Gate backbones: the networks that map a sample's gate input to one logit per expert.

Every backbone is an ``nn.Module`` built as ``Backbone(feature_dim, num_experts,
side_dim=0, **options)`` and called as ``backbone(features, side)`` with

* ``features`` (B, F): the sample's gate features,
* ``side`` (B, E, S) or ``None``: ``S = side_dim`` per-expert side inputs — the expert's
  cost on the sample's device ([P001] eq. 9) and/or its link quality ([P004]) —
  already cleaned by the gate (finite, zero at unavailable experts),

returning logits (B, E). Backbones are registered by name in :data:`GATE_BACKBONES`, so a
new architecture needs no change to the gates.

* ``mlp``: the 3-layer MLP with 128 hidden units of [P000] on the flat input
  ``[features, side.flatten()]`` (width ``F + E·S``).
* ``transformer``: a small transformer encoder ([P001] §IV uses a lightweight
  transformer gate with 2 heads; we keep it much smaller, ``d_model`` 32 by default).
  Tokenisation: **one token per expert**. Token ``e`` is
  ``W_x x + u_e + W_s s_e`` — the projected features (shared by all tokens), a learned
  embedding of expert ``e`` and the projection of that expert's side inputs — so the cost
  and link quality of expert ``e`` enter exactly its token, and self-attention lets the
  experts' tokens compare with one another. A linear read-out maps each output token to
  that expert's logit. The expert count is fixed at construction (the embeddings).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from fedmoe.registry import Registry

GATE_BACKBONES: Registry[type[nn.Module]] = Registry("gate backbone")


def _check_dims(feature_dim: int, num_experts: int, side_dim: int) -> None:
    if feature_dim < 1 or num_experts < 1 or side_dim < 0:
        raise ValueError("gate backbone needs feature_dim >= 1, num_experts >= 1 and side_dim >= 0, got "
                         f"{feature_dim}, {num_experts}, {side_dim}")


@GATE_BACKBONES.register("mlp")
class MLPBackbone(nn.Module):
    """Three linear layers with ReLU between them ([P000]: 128 hidden units).

    Parameters
    ----------
    feature_dim
        ``F``, width of the gate features.
    num_experts
        ``E``, number of logits.
    side_dim
        ``S``, per-expert side inputs appended (flattened) to the features.
    hidden
        Width of the two hidden layers.
    """

    def __init__(self, feature_dim: int, num_experts: int, side_dim: int = 0, hidden: int = 128) -> None:
        super().__init__()
        _check_dims(feature_dim, num_experts, side_dim)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.input_dim = feature_dim + num_experts * side_dim
        self.net = nn.Sequential(nn.Linear(self.input_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_experts))

    def forward(self, features: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        x = features if side is None else torch.cat([features, side.flatten(1)], dim=1)
        return self.net(x)


@GATE_BACKBONES.register("transformer")
class TransformerBackbone(nn.Module):
    """A small transformer encoder over one token per expert (module docstring).

    Parameters
    ----------
    feature_dim
        ``F``, width of the gate features.
    num_experts
        ``E``, number of tokens and of logits.
    side_dim
        ``S``, per-expert side inputs added to each expert's token.
    d_model
        Token width (32–64 keeps the gate small).
    num_layers
        Encoder layers (1–2).
    num_heads
        Attention heads; must divide ``d_model``.
    dim_feedforward
        Hidden width of each layer's feed-forward block (default ``2 · d_model``).
    """

    def __init__(self, feature_dim: int, num_experts: int, side_dim: int = 0, d_model: int = 32,
                 num_layers: int = 1, num_heads: int = 2, dim_feedforward: int | None = None) -> None:
        super().__init__()
        _check_dims(feature_dim, num_experts, side_dim)
        if d_model < 1 or num_layers < 1 or num_heads < 1 or d_model % num_heads:
            raise ValueError("transformer gate needs d_model, num_layers, num_heads >= 1 with num_heads dividing "
                             f"d_model, got d_model={d_model}, num_layers={num_layers}, num_heads={num_heads}")
        self.input_dim = feature_dim + num_experts * side_dim
        self.feature_proj = nn.Linear(feature_dim, d_model)
        self.expert_embedding = nn.Parameter(0.02 * torch.randn(num_experts, d_model))
        self.side_proj = nn.Linear(side_dim, d_model, bias=False) if side_dim else None
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward or 2 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, 1)

    def forward(self, features: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.feature_proj(features)[:, None, :] + self.expert_embedding[None]  # (B, E, d)
        if self.side_proj is not None and side is not None:
            tokens = tokens + self.side_proj(side)
        return self.readout(self.norm(self.encoder(tokens))).squeeze(-1)  # (B, E)


def build_backbone(name: str, feature_dim: int, num_experts: int, side_dim: int = 0, **options: object) -> nn.Module:
    """Instantiate the backbone registered as ``name``; unknown options are a clear ``TypeError``."""
    cls = GATE_BACKBONES.get(name)
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "feature_dim", "num_experts", "side_dim")]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"gate backbone {name!r} got unknown options {unknown}; it accepts {accepted}")
    return cls(feature_dim, num_experts, side_dim, **options)
