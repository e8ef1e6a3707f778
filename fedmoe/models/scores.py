"""Scores of a beam prediction as beam management uses it: top-1, top-k and the power ratio.

A base station does not need the single best beam from a predictor: it sweeps the ``k``
most likely beams the predictor ranks (a few reference-signal measurements, as in the
beam refinement of 5G NR) and keeps the strongest. Three scores follow from that, per
sample ``n`` with predicted ranking ``π_n`` (beams by decreasing logit), best beam
``b*_n`` and relative beam powers ``P_nb = 10 log10(|w_bᴴ h_n|² / |w_b*ᴴ h_n|²) ≤ 0`` dB:

* **top-1** ``1[π_n(1) = b*_n]``: the predictor alone, no sweep;
* **top-k** ``1[b*_n ∈ {π_n(1..k)}]``: the best beam is among the ``k`` swept;
* **power ratio** ``max_{j ≤ k} P_{n π_n(j)}`` dB: the power the sweep finds over the
  optimum (0 dB when top-k hits; a miss by a neighbouring beam typically loses 1–4 dB,
  a wrong path tens of dB). It needs ``beam_power_db`` labels; without them it is NaN.

:data:`SCORES` names them; ``[score]`` of a scenario (:class:`fedmoe.config.ScoreConfig`)
sets ``k`` and the *main* score the targets and summaries are stated on.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

SCORES: tuple[str, ...] = ("top1", "topk", "power_ratio_db")
"""Per-sample scores of :func:`beam_scores`, in the order reports show them."""


def ranked_beams(logits: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring beams of each row, best first (N, k) int64."""
    t = torch.as_tensor(logits)
    if t.dim() != 2:
        raise ValueError(f"beam logits must be 2-D (samples, beams), got shape {tuple(t.shape)}")
    k = _check_k(k, t.shape[1])
    return t.topk(k, dim=1).indices.cpu().numpy().astype(np.int64)


def beam_scores(logits: torch.Tensor | np.ndarray, beam: np.ndarray, power_db: np.ndarray | None,
                k: int) -> dict[str, np.ndarray]:
    """Per-sample top-1 hit, top-k hit and power ratio (dB) of the predictions ``logits``.

    Parameters
    ----------
    logits
        (N, B) beam scores of the predictor (any monotone transform of them gives the same).
    beam
        (N,) index of the best beam.
    power_db
        (N, B) each beam's power relative to the best, dB, or ``None``; rows of NaN give a
        NaN power ratio.
    k
        Beams swept per sample (1 ≤ k ≤ B).

    Returns
    -------
    dict
        ``top1`` and ``topk`` (N,) float (0 or 1) and ``power_ratio_db`` (N,) float, as
        defined in the module docstring.
    """
    return ranking_scores(ranked_beams(logits, k), beam, power_db)


def ranking_scores(top: np.ndarray, beam: np.ndarray, power_db: np.ndarray | None) -> dict[str, np.ndarray]:
    """:func:`beam_scores` from the swept beams ``top`` (N, k), best first (:func:`ranked_beams`)."""
    top = np.asarray(top, dtype=np.int64)
    beam = np.asarray(beam, dtype=np.int64)
    if beam.shape != (top.shape[0],):
        raise ValueError(f"beam labels must have shape ({top.shape[0]},), got {beam.shape}")
    hits = top == beam[:, None]
    out = {"top1": hits[:, 0].astype(np.float64), "topk": hits.any(axis=1).astype(np.float64)}
    if power_db is None:
        out["power_ratio_db"] = np.full(len(beam), np.nan)
    else:
        p = np.asarray(power_db, dtype=np.float64)
        if p.shape[0] != len(beam) or p.ndim != 2:
            raise ValueError(f"beam powers must have shape ({len(beam)}, B), got {p.shape}")
        out["power_ratio_db"] = np.take_along_axis(p, top, axis=1).max(axis=1)
    return out


def by_condition(values: np.ndarray, blocked: np.ndarray | None) -> dict[str, float]:
    """Mean of ``values`` over all samples, the LoS ones and the blocked ones (NaN where none or no value)."""
    v = np.asarray(values, dtype=np.float64)
    blocked = np.zeros(len(v), dtype=bool) if blocked is None else np.asarray(blocked, dtype=bool)

    def mean(mask: np.ndarray) -> float:
        x = v[mask]
        x = x[np.isfinite(x)]
        return float(x.mean()) if x.size else float("nan")

    return {"all": mean(np.ones(len(v), dtype=bool)), "los": mean(~blocked), "blocked": mean(blocked)}


def summarise_scores(per_sample: Mapping[str, np.ndarray], blocked: np.ndarray | None) -> dict[str, dict[str, float]]:
    """:func:`by_condition` of every score of :func:`beam_scores`."""
    return {name: by_condition(per_sample[name], blocked) for name in SCORES if name in per_sample}


def _check_k(k: int, num_beams: int) -> int:
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= num_beams:
        raise ValueError(f"k (beams swept) must be an integer in [1, {num_beams}], got {k!r}")
    return int(k)
