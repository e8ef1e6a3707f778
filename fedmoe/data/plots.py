"""Figures of ``fedmoe data stats``: baseline accuracy by condition, example inputs, label histograms.

Each function writes one PNG and returns its path. matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedmoe.data.samples import ISACSamples  # noqa: E402
from fedmoe.data.stats import BaselineResult  # noqa: E402


def _bits(bits: int) -> str:
    return f"{bits / 1000:.1f} kbit" if bits >= 1000 else f"{bits} bit"


def plot_baselines(results: list[BaselineResult], path: str | Path) -> Path:
    """Grouped bars: top-1 beam accuracy per modality group, LoS vs blocked, with the uplink size."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    x = np.arange(len(results))
    width = 0.38
    for offset, cond, colour in ((-width / 2, "los", "tab:blue"), (width / 2, "blocked", "tab:red")):
        values = [r.top1[cond] for r in results]
        bars = ax.bar(x + offset, values, width, label="LoS" if cond == "los" else "blocked", color=colour)
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(x, [f"{r.group}\n{_bits(r.bits_per_sample)}" for r in results], fontsize=8)
    ax.set_ylabel("top-1 beam accuracy (test)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-modality baselines by condition")
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def example_columns(samples: ISACSamples) -> list[str]:
    """The panels of :func:`plot_examples`: camera, lidar, one per radar channel (``radar:c``; the synthetic
    generator has two, a DeepSense range-angle map one), RF, for the modalities ``samples`` has."""
    cols = [m for m in ("camera", "lidar") if m in samples.inputs]
    if "radar" in samples.inputs:
        cols += [f"radar:{c}" for c in range(samples.inputs["radar"].shape[1])]
    return cols + (["rf"] if "rf" in samples.inputs else [])


def _radar_title(channel: int, channels: int) -> str:
    if channels == 2:  # the synthetic generator's (environment, pilot) maps
        return ("radar env", "radar pilot")[channel]
    return "radar" if channels == 1 else f"radar {channel}"


def plot_examples(samples: ISACSamples, path: str | Path, per_condition: int = 2) -> Path:
    """A few LoS and blocked samples: camera image, lidar scan, every radar map, RF powers."""
    path = Path(path)
    blocked = samples.conditions.get("blocked", np.zeros(len(samples), bool))
    picks = [(i, "LoS") for i in np.flatnonzero(~blocked)[:per_condition]]
    picks += [(i, "blocked") for i in np.flatnonzero(blocked)[:per_condition]]
    cols = example_columns(samples)
    if not picks or not cols:
        raise ValueError("no samples or no plottable modality to show")
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(3 * len(cols), 2.4 * len(picks)),
                             layout="constrained", squeeze=False)
    for row, (i, cond) in enumerate(picks):
        beam = int(samples.labels["beam"][i])
        for col, key in enumerate(cols):
            ax = axes[row, col]
            m, _, channel = key.partition(":")
            x = samples.inputs[m][i]
            if m == "camera":
                ax.imshow(np.moveaxis(x, 0, -1))
                ax.set_axis_off()
            elif m == "radar":
                m = _radar_title(int(channel), x.shape[0])
                ax.imshow(x[int(channel)], aspect="auto", origin="lower", cmap="viridis")
                ax.set_xlabel("angle bin", fontsize=7)
                ax.set_ylabel("range bin", fontsize=7)
            else:
                ax.plot(x, lw=1)
                ax.set_xlabel("ray" if m == "lidar" else "wide beam", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_title(f"{m} — {cond}, beam {beam}", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_label_histograms(samples: ISACSamples, path: str | Path, num_beams: int) -> Path:
    """Best-beam and path-loss histograms, LoS vs blocked."""
    path = Path(path)
    blocked = samples.conditions.get("blocked", np.zeros(len(samples), bool))
    fig, (ax_b, ax_p) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    beams, pl = samples.labels["beam"], samples.labels["pathloss_db"]
    for mask, name, colour in ((~blocked, "LoS", "tab:blue"), (blocked, "blocked", "tab:red")):
        if mask.any():
            ax_b.hist(beams[mask], bins=np.arange(num_beams + 1) - 0.5, alpha=0.6, label=name, color=colour)
            ax_p.hist(pl[mask][np.isfinite(pl[mask])], bins=50, alpha=0.6, label=name, color=colour)
    ax_b.set_xlabel("best beam index")
    ax_p.set_xlabel("path loss (dB)")
    for ax in (ax_b, ax_p):
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
