"""The per-sample oracle: the best expert choice a gate could make, as a reference policy.

For a mixture whose gate selects one expert per sample (a hard gate over modality or
modality-subset experts, [P001]), the oracle knows for every test sample ``n`` the
true task loss ``ℓ_ni`` of each expert ``i`` alone and its cost ``C_ni`` on the sample's
device, and picks

    i*_n(λ) = argmin_i  ℓ_ni + λ C_ni

the per-sample minimiser of the resource-aware objective ([P001] eq. 9) with the
labels in hand. Sweeping ``λ`` traces the oracle's accuracy–cost curve; the mean cost
of ``i*(λ)`` never increases with ``λ``, so :func:`oracle_at_cost` finds by bisection the
smallest ``λ`` whose mean cost is within a budget — the gate's own mean cost — and
reports the oracle's scores there. The gap between them is how much a gate that reads
only cheap cues leaves on the table. Each choice ``i*(λ)`` also minimises
``Σ_n ℓ_n`` among all choices with the same total cost (Lagrangian relaxation of a
multiple-choice knapsack), which ``tests/models/test_scores_oracle.py`` checks against an
exact MILP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmoe.config import TaskWeights
from fedmoe.data.samples import ISACSamples
from fedmoe.models.heads import task_loss
from fedmoe.models.moe import MoE, batch_tensors
from fedmoe.models.scores import SCORES, beam_scores

BISECTION_STEPS = 60
"""Bisection steps on log λ in :func:`oracle_at_cost` (far below any cost resolution that matters)."""


@dataclass
class ExpertTable:
    """What each expert alone does on each sample: loss, scores and cost, (N, E) each.

    An expert a sample cannot use (a missing modality) has loss ``+inf`` and scores NaN,
    so the oracle never picks it.
    """

    loss: np.ndarray
    scores: dict[str, np.ndarray]
    cost: np.ndarray

    def __post_init__(self) -> None:
        shapes = {self.loss.shape, self.cost.shape, *(v.shape for v in self.scores.values())}
        if len(shapes) != 1 or self.loss.ndim != 2:
            raise ValueError(f"loss, cost and scores must share one (N, E) shape, got {sorted(shapes)}")


@torch.no_grad()
def expert_table(model: MoE, samples: ISACSamples, costs: np.ndarray, tasks: TaskWeights, top_k: int,
                 batch_size: int = 2048) -> ExpertTable:
    """Loss, scores (top-1, top-``top_k``, power ratio) and cost of every expert alone on every sample.

    ``costs`` is the (N, E) cost ``C`` of each sample's device; the loss is the training
    objective of ``tasks`` (:func:`fedmoe.models.heads.task_loss`, per sample).
    """
    n, e = len(samples), model.num_experts
    if costs.shape != (n, e):
        raise ValueError(f"costs must have shape ({n}, {e}), got {costs.shape}")
    model.eval()
    loss = np.full((n, e), np.inf)
    scores = {name: np.full((n, e), np.nan) for name in SCORES}
    power = samples.labels.get("beam_power_db")
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(n, start + batch_size))
        inputs, present, labels = batch_tensors(samples, rows)
        for i, (r, out) in enumerate(_each_expert(model, inputs, present)):
            if r is None:
                continue
            sub = {k: v[r] for k, v in labels.items()}
            idx = rows[r.numpy()]
            loss[idx, i] = task_loss(out, sub, tasks, reduction="none")[0].numpy()
            k = min(top_k, out.beam_logits.shape[1])
            per = beam_scores(out.beam_logits, sub["beam"].numpy(), None if power is None else power[idx], k)
            for name in SCORES:
                scores[name][idx, i] = per[name]
    return ExpertTable(loss, scores, np.asarray(costs, dtype=np.float64))


def _each_expert(model: MoE, inputs, present):
    """``(rows, outputs)`` of every expert in order, ``(None, None)`` for one no row can use."""
    pairs = model.forward_each(inputs, present)
    avail = model.available(present.bool()).any(dim=0).tolist()
    it = iter(pairs)
    return [next(it) if ok else (None, None) for ok in avail]


def oracle_choice(loss: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_i ℓ_ni + λ C_ni`` per sample (N,) int64; ties go to the cheaper, then the lower index."""
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"λ must be finite and >= 0, got {lam}")
    objective = np.asarray(loss, dtype=np.float64) + lam * np.asarray(cost, dtype=np.float64)
    if not np.isfinite(objective.min(axis=1)).all():
        raise ValueError("some sample has no expert it can use (every loss is +inf)")
    best = objective.min(axis=1, keepdims=True)
    tied = objective <= best + 1e-12
    # Among tied experts take the cheapest (lexicographic: cost, then index).
    masked_cost = np.where(tied, cost, np.inf)
    return np.argmin(masked_cost, axis=1).astype(np.int64)


def picked(values: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """``values[n, choice[n]]`` (N,)."""
    return np.take_along_axis(np.asarray(values), choice[:, None], axis=1)[:, 0]


def oracle_at_cost(table: ExpertTable, budget: float, lam_max: float = 1e6) -> dict:
    """The oracle at the smallest ``λ`` whose mean cost ``mean_n C_{n i*_n}`` is ``<= budget``.

    Returns ``lambda``, ``choice`` (N,), ``mean_cost`` and the mean of every score over
    the samples (NaN scores left out). A budget below the cheapest possible mean cost
    gives the oracle at ``lam_max`` (its cheapest choice) and says so in ``within_budget``.
    """
    def mean_cost(lam: float) -> float:
        return float(picked(table.cost, oracle_choice(table.loss, table.cost, lam)).mean())

    if mean_cost(0.0) <= budget:
        lam = 0.0
    else:
        lo, hi = 1e-9, lam_max
        if mean_cost(hi) > budget:
            lo = hi
        else:
            for _ in range(BISECTION_STEPS):
                mid = float(np.sqrt(lo * hi))
                lo, hi = (lo, mid) if mean_cost(mid) <= budget else (mid, hi)
        lam = hi if lo < hi else lo
    choice = oracle_choice(table.loss, table.cost, lam)
    cost = float(picked(table.cost, choice).mean())
    out = {"lambda": lam, "choice": choice, "mean_cost": cost, "within_budget": cost <= budget + 1e-12}
    for name, values in table.scores.items():
        v = picked(values, choice)
        v = v[np.isfinite(v)]
        out[name] = float(v.mean()) if v.size else float("nan")
    return out
