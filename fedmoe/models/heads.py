"""Task heads on the fused representation ``z`` and their multi-task loss.

Three tasks share ``z = Σ_d w_d z_d`` (DESIGN.md, "The model"): best-beam classification
over the DFT codebook (cross-entropy), path-loss regression (dB, Huber) and next-position
regression (m, Huber). The task loss is ``L_task = Σ_t α_t L_t`` with configurable
weights ``α`` (:class:`TaskWeights`); a task with weight 0 is not computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmoe.config import TaskWeights


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
        ce = nn.functional.cross_entropy(out.beam_logits, labels["beam"], reduction="none")
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
        raise ValueError("all task weights are 0: nothing to learn")
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
