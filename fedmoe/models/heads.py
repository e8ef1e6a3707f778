"""Task heads on the fused representation ``z`` and their multi-task loss.

Three tasks share ``z = Σ_d w_d z_d`` (``docs/architecture.md``, "The model"): best-beam classification
over the DFT codebook (cross-entropy, or one of the objectives of :func:`beam_loss`), path-loss regression
(dB, Huber) and next-position regression (m, Huber). The task loss is ``L_task = Σ_t α_t L_t`` with configurable
weights ``α`` (:class:`TaskWeights`); a task with weight 0 is not computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedmoe.config import ConfigError, TaskWeights


@dataclass
class TaskOutputs:
    beam_logits: torch.Tensor  # (B, num_beams)
    pathloss_db: torch.Tensor  # (B,)
    next_position: torch.Tensor  # (B, 3)


class TaskHeads(nn.Module):
    """Beam logits, path loss (dB) and next position (m) from ``z``.

    With ``hidden > 0`` the three heads share a trunk ``relu(W z + b)`` of that width
    (the fused ``z`` is a weighted *sum* of expert features, so a linear read-out alone
    cannot combine them non-linearly); ``hidden = 0`` gives linear heads on ``z``.
    """

    def __init__(self, in_dim: int, num_beams: int, pathloss_offset_db: float = 100.0, hidden: int = 0) -> None:
        super().__init__()
        if in_dim < 1 or num_beams < 1 or hidden < 0:
            raise ValueError(f"in_dim and num_beams must be >= 1 and hidden >= 0, got {in_dim}, {num_beams}, {hidden}")
        self.in_features = int(in_dim)
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU()) if hidden else nn.Identity()
        width = hidden or in_dim
        self.beam = nn.Linear(width, num_beams)
        self.pathloss = nn.Linear(width, 1)
        self.next_position = nn.Linear(width, 3)
        self.pathloss_offset_db = pathloss_offset_db

    def forward(self, z: torch.Tensor) -> TaskOutputs:
        h = self.trunk(z)
        return TaskOutputs(self.beam(h), self.pathloss(h).squeeze(-1) * 10.0 + self.pathloss_offset_db,
                           self.next_position(h))


def beam_loss(logits: torch.Tensor, labels: dict[str, torch.Tensor], weights: TaskWeights) -> torch.Tensor:
    """Per-sample loss of the beam task, by ``weights.beam_objective`` (p = softmax(logits)):

    * ``cross_entropy``: ``−log p_{b*}`` on the best beam ``b*``;
    * ``soft_power``: ``−Σ_b q_b log p_b`` with soft targets ``q_b ∝ 10^{P_b / T}`` from the
      beams' relative powers ``P_b`` (dB, label ``beam_power_db``) and ``T = soft_power_db``:
      a beam ``T`` dB weaker than the best gets ``1/10`` of its target mass, so a miss by a
      near-equal beam costs little and a miss onto a wrong path costs a lot — the way a
      beam sweep values predictions (:mod:`fedmoe.models.scores`);
    * ``topk_set``: ``−log Σ_{b ∈ K} p_b`` with ``K`` the ``objective_k`` strongest beams:
      the probability that a sweep of the predicted ranking finds one of them.

    Rows whose ``beam_power_db`` is NaN (no measured powers) fall back to cross-entropy.
    """
    objective = weights.beam_objective
    if objective == "cross_entropy":
        return nn.functional.cross_entropy(logits, labels["beam"], reduction="none")
    if "beam_power_db" not in labels:
        raise ValueError(f"beam objective {objective!r} needs the beam_power_db label, which the data lacks")
    power = labels["beam_power_db"].to(logits.dtype)
    if power.shape != logits.shape:
        raise ValueError(f"beam_power_db has shape {tuple(power.shape)}, the beam logits {tuple(logits.shape)}")
    known = torch.isfinite(power).all(dim=1, keepdim=True)
    onehot = nn.functional.one_hot(labels["beam"], logits.shape[1]).to(logits.dtype)
    logp = torch.log_softmax(logits, dim=1)
    safe = torch.where(known, power, torch.zeros_like(power))
    if objective == "soft_power":
        target = torch.softmax(safe * (math.log(10.0) / weights.soft_power_db), dim=1)
        return -(torch.where(known, target, onehot) * logp).sum(dim=1)
    k = min(weights.objective_k, logits.shape[1])
    best = torch.zeros_like(power, dtype=torch.bool).scatter_(1, safe.topk(k, dim=1).indices, True)
    member = torch.where(known, best, onehot.bool())
    return -torch.logsumexp(logp.masked_fill(~member, float("-inf")), dim=1)


def task_loss(out: TaskOutputs, labels: dict[str, torch.Tensor], weights: TaskWeights,
              reduction: str = "mean") -> tuple[torch.Tensor, dict]:
    """``Σ_t α_t L_t`` and the per-task values (floats, batch means) for logging.

    ``reduction="none"`` returns the (B,) per-sample loss instead of its mean. Labels that
    are NaN (e.g. path loss in real data) are left out of their task's mean (and add 0
    to that sample's loss).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    per: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # task -> (per-sample loss, 0 where no label; valid)
    if weights.beam > 0:
        ce = beam_loss(out.beam_logits, labels, weights)
        per["beam"] = (ce, torch.ones_like(ce, dtype=torch.bool))
    if weights.pathloss > 0:
        y = labels["pathloss_db"]
        ok = torch.isfinite(y)
        err = nn.functional.huber_loss(out.pathloss_db / 10.0, torch.where(ok, y, out.pathloss_db.detach()) / 10.0,
                                       reduction="none")
        per["pathloss"] = (err * ok, ok)
    if weights.next_position > 0:
        y = labels["next_position"]
        ok = torch.isfinite(y).all(dim=1)
        safe = torch.where(ok[:, None], y, out.next_position.detach())
        err = nn.functional.huber_loss(out.next_position, safe, reduction="none").mean(dim=1)
        per["next_position"] = (err * ok, ok)
    if not per:
        raise ConfigError("all task weights are 0: nothing to learn")
    alpha = {"beam": weights.beam, "pathloss": weights.pathloss, "next_position": weights.next_position}
    batch = out.beam_logits.shape[0]
    sample = torch.zeros(batch, dtype=out.beam_logits.dtype, device=out.beam_logits.device)
    means: dict[str, torch.Tensor] = {}
    for k, (err, ok) in per.items():
        n_ok = int(ok.sum())
        means[k] = err.sum() / n_ok if n_ok else err.sum() * 0.0
        # per sample, weighted so that the batch mean equals the task's mean over valid rows
        sample = sample + alpha[k] * err * (batch / max(n_ok, 1))
    total = sum(alpha[k] * v for k, v in means.items())
    logs = {k: float(v.detach()) for k, v in means.items()}
    return (total if reduction == "mean" else sample), logs
