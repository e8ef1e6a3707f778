"""Diagnostics plot of a training run: accuracy, gate entropy and per-expert usage by epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_diagnostics(reports: Sequence, expert_names: Sequence[str], path: str | Path) -> Path:
    """Three panels: accuracy (both stages), gate entropy and expert usage (stage II)."""
    path = Path(path)
    fig, (ax_a, ax_h, ax_u) = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    ax_a.plot(range(len(reports)), [r.accuracy for r in reports], marker="o")
    ax_a.set_xlabel("epoch (stage I then II)")
    ax_a.set_ylabel("validation beam accuracy")
    stage2 = [r for r in reports if r.stage == 2]
    if stage2:
        ax_h.plot([r.epoch for r in stage2], [r.gate_entropy for r in stage2], marker="o")
        usage = np.array([r.usage for r in stage2])
        im = ax_u.imshow(usage.T, aspect="auto", cmap="viridis", vmin=0)
        ax_u.set_yticks(range(len(expert_names)), expert_names, fontsize=6)
        ax_u.set_xlabel("stage II epoch")
        fig.colorbar(im, ax=ax_u, label="share of samples")
        for r in stage2:
            if r.collapsed:
                ax_h.annotate("collapse", (r.epoch, r.gate_entropy), fontsize=7, color="tab:red")
    ax_h.set_xlabel("stage II epoch")
    ax_h.set_ylabel("gate entropy (nats)")
    ax_u.set_title("expert usage", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
