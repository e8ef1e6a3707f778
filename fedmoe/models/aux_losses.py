"""Auxiliary router losses ([P003] §II): router z-loss and Switch-style load balancing.

Both accept logits that are ``-inf`` at experts a sample cannot use (a missing modality):
such entries contribute nothing and produce no NaN, in value or gradient.
"""

from __future__ import annotations

import torch


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss ``L_Z = (1/B) Σ_b (log Σ_n exp l_bn)²`` ([P003] eq. 6).

    Parameters
    ----------
    logits
        (B, E) gate logits; ``-inf`` marks unavailable experts and drops out of the sum.
        A row that is ``-inf`` everywhere contributes 0 (the gates never produce one: they
        raise instead).

    Returns
    -------
    torch.Tensor
        Scalar loss; penalises large logits, which keeps the router numerically stable.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, E), got {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    empty = ~torch.isfinite(logits).any(dim=1, keepdim=True)  # rows with no usable expert
    safe = logits.masked_fill(empty, 0.0)  # keeps logsumexp (and its gradient) finite there
    lse = torch.logsumexp(safe, dim=1).masked_fill(empty.squeeze(1), 0.0)
    return lse.pow(2).mean()


def load_balancing_loss(probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``E Σ_i f_i P_i`` (cited by [P003] §II).

    Parameters
    ----------
    probs
        (B, E) gate probabilities; ``P_i`` is their batch mean (0 at unavailable experts;
        NaN entries are treated as 0).
    selected
        (B, E) bool selections; ``f_i`` is expert ``i``'s share of all selections in the
        batch, i.e. the fraction of samples selecting ``i`` divided by the experts selected
        per sample — identical to Switch's ``f_i`` for one-hot gates, and normalised so
        that for top-N gates too the loss is 1 when selections and probabilities are
        uniform, and ``E`` when everything goes to one expert.

    Returns
    -------
    torch.Tensor
        Scalar loss; differentiable through ``probs`` only (``f`` is a count).
    """
    if probs.dim() != 2 or tuple(selected.shape) != tuple(probs.shape):
        raise ValueError(f"probs and selected must both have shape (B, E), got {tuple(probs.shape)} and "
                         f"{tuple(selected.shape)}")
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    e = probs.shape[1]
    f = selected.to(probs.dtype).mean(dim=0)
    f = f / f.sum().clamp_min(1e-12)
    p = torch.nan_to_num(probs, nan=0.0).mean(dim=0)
    return e * (f * p).sum()
