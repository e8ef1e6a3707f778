"""The accuracy–cost trade-off: λ sweeps of the resource-aware loss and their Pareto front.

[P001] (eq. 9) trades accuracy against cost through the weight ``λ`` of
``L = L_task + λ Σ_i g_i C(E_i)``: a small ``λ`` lets the gate pick expensive experts, a
large one pushes it to cheap ones. :func:`sweep_lambda` trains one mixture per ``λ`` on
the same data and devices and returns one row per point; :func:`pareto_front` marks
the points no other point beats on both accuracy and cost; :func:`plot_pareto` draws
accuracy against mean per-sample latency and energy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fedmoe.centralised import Split, run_centralised
from fedmoe.config import FedMoEConfig


def point_row(label: str, kind: str, summary: dict, **extra: object) -> dict:
    """One row of a trade-off table from a :func:`fedmoe.training.summarise` summary."""
    return {"label": label, "kind": kind, **extra,
            "accuracy": summary["accuracy"]["all"], "accuracy_los": summary["accuracy"]["los"],
            "accuracy_blocked": summary["accuracy"]["blocked"], "mean_flops": summary["mean_flops"],
            "mean_latency_s": summary["mean_latency_s"], "mean_energy_j": summary["mean_energy_j"],
            "costly_rate_los": summary["costly_rate"]["los"], "costly_rate_blocked": summary["costly_rate"]["blocked"],
            "expert_evaluations_per_sample": summary["expert_evaluations_per_sample"],
            "usage": dict(zip(summary["experts"], summary["usage"]))}


def sweep_lambda(cfg: FedMoEConfig, split: Split, lambdas: Sequence[float], progress: bool = False) -> list[dict]:
    """Train one mixture of ``cfg`` per ``λ`` in ``lambdas`` (``train.cost_weight``) on ``split``.

    Returns one :func:`point_row` per ``λ`` (kind ``"lambda"``, with the key ``lambda``).
    """
    from tqdm.auto import tqdm

    if not lambdas:
        raise ValueError("give at least one λ")
    bad = [x for x in lambdas if not (np.isfinite(x) and x >= 0)]
    if bad:
        raise ValueError(f"λ must be finite and >= 0, got {bad}")
    rows = []
    for lam in tqdm(list(lambdas), desc="λ sweep", disable=not progress):
        point = cfg.model_copy(update={"train": cfg.train.model_copy(update={"cost_weight": float(lam)})})
        run = run_centralised(point, split, progress=False)
        rows.append(point_row(f"λ={lam:g}", "lambda", run.summary, **{"lambda": float(lam)}))
    return rows


def pareto_front(cost: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points not dominated by another (lower-or-equal cost *and* higher-or-equal
    accuracy, strictly better in one)."""
    c, a = np.asarray(cost, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(f"cost and accuracy must be 1-D of the same length, got {c.shape} and {a.shape}")
    dominated = ((c[None, :] <= c[:, None]) & (a[None, :] >= a[:, None])
                 & ((c[None, :] < c[:, None]) | (a[None, :] > a[:, None])))
    return ~dominated.any(axis=1)


def plot_pareto(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy vs mean per-sample latency (left) and energy (right); the Pareto front is joined up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    kinds = sorted({r["kind"] for r in rows})
    markers = dict(zip(kinds, "osD^v<>ph"))
    for ax, key, unit, scale in ((axes[0], "mean_latency_s", "ms", 1e3), (axes[1], "mean_energy_j", "mJ", 1e3)):
        cost = np.array([r[key] for r in rows]) * scale
        acc = np.array([r["accuracy"] for r in rows])
        for kind in kinds:
            idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
            ax.scatter(cost[idx], acc[idx], marker=markers[kind], label=kind, zorder=3)
        on_front = pareto_front(cost, acc)
        front = np.flatnonzero(on_front)
        front = front[np.argsort(cost[front])]
        # Label the front and the isolated points; crowded dominated points are left to the
        # legend and the JSON table (their labels would overlap).
        for i, (x, y, r) in enumerate(zip(cost, acc, rows)):
            near = np.sum((np.abs(np.log10(np.maximum(cost, 1e-12) / max(x, 1e-12))) < 0.15) & (np.abs(acc - y) < 0.03))
            if on_front[i] or near <= 1:
                ax.annotate(r["label"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot(cost[front], acc[front], color="grey", lw=1, ls="--", zorder=2, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(f"mean per-sample {key.split('_')[1]} ({unit}, log)")
        ax.set_ylabel("test beam accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of the rows (accuracy by condition, FLOPs, latency, energy, costly-modality rates)."""
    head = (f"{'point':<22} {'acc':>6} {'LoS':>6} {'blocked':>7} {'MFLOPs':>7} {'lat ms':>8} {'E mJ':>8} "
            f"{'costly LoS':>10} {'costly blk':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['label']:<22} {r['accuracy']:6.1%} {r['accuracy_los']:6.1%} {r['accuracy_blocked']:7.1%} "
                     f"{r['mean_flops'] / 1e6:7.2f} {r['mean_latency_s'] * 1e3:8.2f} {r['mean_energy_j'] * 1e3:8.2f} "
                     f"{r['costly_rate_los']:10.0%} {r['costly_rate_blocked']:10.0%}")
    return "\n".join(lines)
