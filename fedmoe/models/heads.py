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
    """Linear heads: beam logits, path loss (dB), next position (m)."""

    def __init__(self, in_dim: int, num_beams: int, pathloss_offset_db: float = 100.0) -> None:
        super().__init__()
        if in_dim < 1 or num_beams < 1:
            raise ValueError(f"in_dim and num_beams must be >= 1, got {in_dim}, {num_beams}")
        self.beam = nn.Linear(in_dim, num_beams)
        self.pathloss = nn.Linear(in_dim, 1)
        self.next_position = nn.Linear(in_dim, 3)
        self.pathloss_offset_db = pathloss_offset_db

    def forward(self, z: torch.Tensor) -> TaskOutputs:
        return TaskOutputs(self.beam(z), self.pathloss(z).squeeze(-1) * 10.0 + self.pathloss_offset_db,
                           self.next_position(z))


def task_loss(out: TaskOutputs, labels: dict[str, torch.Tensor], weights: TaskWeights) -> tuple[torch.Tensor, dict]:
    """``Σ_t α_t L_t`` and the per-task values (floats) for logging.

    Labels that are NaN (e.g. path loss in real data) are left out of their task's mean.
    """
    parts: dict[str, torch.Tensor] = {}
    if weights.beam > 0:
        parts["beam"] = nn.functional.cross_entropy(out.beam_logits, labels["beam"])
    if weights.pathloss > 0:
        y = labels["pathloss_db"]
        ok = torch.isfinite(y)
        parts["pathloss"] = nn.functional.huber_loss(out.pathloss_db[ok] / 10.0, y[ok] / 10.0) if ok.any() \
            else out.pathloss_db.sum() * 0.0
    if weights.next_position > 0:
        y = labels["next_position"]
        ok = torch.isfinite(y).all(dim=1)
        parts["next_position"] = nn.functional.huber_loss(out.next_position[ok], y[ok]) if ok.any() \
            else out.next_position.sum() * 0.0
    if not parts:
        raise ValueError("all task weights are 0: nothing to learn")
    alpha = {"beam": weights.beam, "pathloss": weights.pathloss, "next_position": weights.next_position}
    total = sum(alpha[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
