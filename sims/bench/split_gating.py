"""Channel-aware against naive gating of distributed experts over noisy links ([P004]).

    python -m sims.bench.split_gating [--quick] [--seeds 3] [--ks 4,8,12] [--datasets digits,isac]
                                      [--out sims/bench/results/split_gating.json]

The system of :mod:`fedmoe.split.distributed`: a backbone at the server, K experts on K
devices, the feature sent over a noisy downlink to the one expert the gate picks (top-1),
every expert's link Rayleigh-faded on its own around the mean SNR ([P004]'s distortion
variance ``σ²/(p|h_k|²)`` per expert; the gate that knows it is the channel-aware one).
Two-stage training as in [P004]: stage 1 everything under ideal links with load
balancing; stage 2 only the gate, at random per-expert SNRs (10–40 dB mean).

Three gates are compared on the same stage-1 model and the same channel draws:

* ``aware``: the channel-aware gate after stage 2 (starts from the stage-1 gate);
* ``naive``: the feature-only gate after the same stage 2 (sees the noise in training, not
  the channel): the baseline the targets use, so the gain is what knowing the channel adds;
* ``stage1``: the stage-1 gate as trained under ideal links (a conventional MoE; reported,
  not targeted).

Datasets (each split once into train/validation/test; seeds vary the models and channels):

* ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no download),
  the 64 pixels standardised; 60/20/20 stratified train/validation/test.
* ``isac``: the project's synthetic ISAC data, default scenario
  (:func:`fedmoe.centralised.make_split`, 20,000 samples, its 80/20 train/test split, a
  fifth of train held out for validation), beam label (64 classes). Input: the GPS (6:
  position and position one time step before) and RF (2) vectors concatenated, 8 numbers,
  standardised. Cheap to generate and to learn, and an MLP does not overfit it (a plain
  MLP: 60% validation beam accuracy at 64% train); flattening the 1,024 radar values as
  well gives 100% train and 56% validation accuracy, and the camera needs a CNN.

Model: backbone ``Linear(d, 128) → ReLU → Linear(128, 32)``, experts and gates the MLPs of
:class:`~fedmoe.split.distributed.DistributedMoE` (hidden 64), top-1 inference.

Phases:

1. **selection** (validation split, K=8, seed 0): the stage-1 load-balancing weight β is
   picked among ``--balance-weights`` by the channel-aware system's own validation
   accuracy (mean over links and SNRs), never by the test set and not by the gap. β is
   the specialisation lever: it sets how much the experts overlap (reported: each
   expert's accuracy alone and on the samples the gate sends elsewhere).
2. **levers** (validation, K=8, seed 0, chosen β): one setting at a time put back to the
   first implementation (CSI input absolute instead of relative to the mean over experts;
   absolute ``log10(d)/4``; stage-2 expected loss; a short stage 2) and the whole first
   setup (absolute ``log10(d)/4``, expected loss, 15 epochs, β = 0.1), plus evaluation
   with every expert at the mean SNR (no per-expert spread, so nothing to choose between).
3. **grid** (test split): K × mean SNR (10–40 dB, 5 dB steps) × link (analog; digital:
   8-bit, 16-QAM) × seeds. Per cell the accuracy of each gate per seed, their means, and
   aware − naive.

Targets (per dataset and link, on the seed means): aware − naive ≥ +3 points at every
mean SNR ≤ 15 dB (10 and 15 dB) with K=8; aware ≥ naive at 40 dB for every K. Writes the
JSON and two PNGs beside it: accuracy vs SNR (one panel per dataset × link × K) and
accuracy vs K (``*_k.png``).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedmoe.split.distributed import DistributedMoE, SplitTrainConfig, accuracy_at, train_stage1, train_stage2
from fedmoe.split.links import make_link
from sims.bench.common import machine, write_report

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "split_gating.json"
SNRS_DB = (10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)
LINKS = {"analog": {}, "digital": {"bits": 8, "bits_per_symbol": 4}}
GATES = ("stage1", "naive", "aware")
FEATURE_DIM = 32
HIDDEN = 64
LOW_SNR_DB = 15.0
LOW_SNR_GAIN = 0.03
FIRST_SETUP = {"balance_weight": 0.1, "csi_scale": 0.25, "csi_relative": False, "stage2_objective": "expected",
               "stage2_epochs": 15}
"""The first implementation's settings (module docstring, levers)."""


@dataclass
class Data:
    """One dataset, split once: standardised float inputs, int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    description: str

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.x_val, self.y_val) if which == "val" else (self.x_test, self.y_test)

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test),
                "input_dim": int(self.x_train.shape[1]), "classes": self.num_classes}


def _standardised(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (train, *others)]


def load_digits_data(limit: int | None = None) -> Data:
    """scikit-learn's digits, 60/20/20 stratified (module docstring); ``limit`` keeps the first rows (smoke runs)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    xs = _standardised(x_train, x_val, x_test)
    ys = [torch.from_numpy(a.astype(np.int64)) for a in (y_train, y_val, y_test)]
    return Data("digits", xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], 10,
                "scikit-learn digits (8x8 images, 64 standardised pixels), 60/20/20 stratified split")


def load_isac_data(num_samples: int) -> Data:
    """Synthetic ISAC samples of the default scenario, GPS+RF input, beam label (module docstring)."""
    from fedmoe.centralised import make_split
    from fedmoe.scenarios import load_scenario

    cfg = load_scenario("default")
    split = make_split(cfg, num_samples, cfg.data.seed)
    order = np.random.default_rng(cfg.data.seed).permutation(len(split.train))
    n_val = len(order) // 5
    train, val, test = split.train.subset(order[n_val:]), split.train.subset(order[:n_val]), split.test
    flat = lambda s: np.concatenate([s.inputs[m].reshape(len(s), -1) for m in ("gps", "rf")], axis=1)  # noqa: E731
    xs = _standardised(flat(train), flat(val), flat(test))
    ys = [torch.from_numpy(s.labels["beam"].astype(np.int64)) for s in (train, val, test)]
    beams = cfg.wireless.channel.codebook_size
    return Data("isac", xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], beams,
                f"synthetic ISAC, default scenario, {num_samples} samples: GPS (6) + RF (2) standardised -> best beam "
                f"({beams} classes); the scenario's train/test split, a fifth of train for validation")


def build_model(data: Data, num_experts: int, seed: int) -> DistributedMoE:
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(data.x_train.shape[1], 128), nn.ReLU(), nn.Linear(128, FEATURE_DIM))
    return DistributedMoE(backbone, FEATURE_DIM, data.num_classes, num_experts, hidden=HIDDEN)


def stage2_epochs_for(steps: int, n_train: int, batch_size: int) -> int:
    """Epochs giving at least ``steps`` optimiser steps on ``n_train`` samples (at least one epoch)."""
    return max(1, math.ceil(steps / math.ceil(n_train / batch_size)))


@torch.no_grad()
def stage1_profile(model: DistributedMoE, x: torch.Tensor, y: torch.Tensor) -> dict:
    """How specialised the stage-1 experts are: each alone, and on the samples the gate sends elsewhere."""
    model.eval()
    z = model.backbone(x)
    choice = model.gate_logits(z, None, aware=False).argmax(dim=1)
    correct = (model.expert_outputs(z, None, None).argmax(dim=2) == y[:, None]).float()  # (N, K)
    elsewhere = torch.ones_like(correct)
    elsewhere[torch.arange(len(y)), choice] = 0
    return {"ideal_accuracy": float(correct.gather(1, choice[:, None]).mean()),
            "expert_alone_accuracy": [round(float(v), 4) for v in correct.mean(dim=0)],
            "accuracy_where_not_chosen": float((correct * elsewhere).sum() / elsewhere.sum()),
            "usage": torch.bincount(choice, minlength=model.num_experts).tolist()}


def train_gates(model: DistributedMoE, data: Data, link_name: str, cfg: SplitTrainConfig,
                csi: dict | None = None, which: tuple[str, ...] = ("naive", "aware")) -> dict[str, DistributedMoE]:
    """Copies of the stage-1 ``model`` with the naive and/or the channel-aware gate trained by stage 2; ``csi``
    overrides the copies' ``csi_scale`` / ``csi_relative``."""
    link = make_link(link_name, **LINKS[link_name])
    out = {"stage1": model}
    for gate in which:
        m = copy.deepcopy(model)
        for key, value in (csi or {}).items():
            setattr(m, key, value)
        train_stage2(m, data.x_train, data.y_train, link, aware=(gate == "aware"), cfg=cfg)
        out[gate] = m
    return out


def evaluate(models: dict[str, DistributedMoE], data: Data, link_name: str, split: str, snrs: tuple[float, ...],
             seed: int, repeats: int, fading: bool = True) -> dict[str, list[float]]:
    """Accuracy of each gate at each mean SNR; the same channel draws for every gate (paired)."""
    link = make_link(link_name, **LINKS[link_name])
    x, y = data.split(split)
    return {gate: [accuracy_at(m, x, y, link, s, aware=(gate == "aware"), fading=fading, seed=seed, repeats=repeats)
                   for s in snrs] for gate, m in models.items()}


@dataclass
class Settings:
    """Everything a run needs (argparse fills it; ``--quick`` shrinks it)."""

    datasets: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: int
    snrs: tuple[float, ...]
    balance_weights: tuple[float, ...]
    stage1_epochs: int
    stage2_steps: int
    batch_size: int
    isac_samples: int
    repeats: dict
    levers: bool
    digits_limit: int | None = None


def train_config(s: Settings, data: Data, balance_weight: float, seed: int) -> SplitTrainConfig:
    return SplitTrainConfig(stage1_epochs=s.stage1_epochs, batch_size=s.batch_size, balance_weight=balance_weight,
                            stage2_epochs=stage2_epochs_for(s.stage2_steps, len(data.y_train), s.batch_size),
                            seed=seed)


def select_balance_weight(s: Settings, data: Data, bar) -> tuple[float, list[dict], dict]:
    """Phase 1 (module docstring): β by the aware system's mean validation accuracy; returns β, the rows and the
    trained stage-1 models (kept for the lever phase)."""
    rows, models = [], {}
    k = 8 if 8 in s.ks else s.ks[0]
    for bw in s.balance_weights:
        cfg = train_config(s, data, bw, seed=0)
        model = build_model(data, k, 0)
        train_stage1(model, data.x_train, data.y_train, cfg)
        models[bw] = model
        row = {"balance_weight": bw, "num_experts": k, **stage1_profile(model, data.x_val, data.y_val), "links": {}}
        for link in LINKS:
            acc = evaluate(train_gates(model, data, link, cfg), data, link, "val", s.snrs, 0, s.repeats[data.name])
            row["links"][link] = acc
        row["mean_aware_val_accuracy"] = float(np.mean([row["links"][ln]["aware"] for ln in LINKS]))
        row["mean_gain_val"] = float(np.mean([np.subtract(row["links"][ln]["aware"], row["links"][ln]["naive"])
                                              for ln in LINKS]))
        rows.append(row)
        bar.update(1)
    best = max(rows, key=lambda r: r["mean_aware_val_accuracy"])
    return best["balance_weight"], rows, models


def lever_rows(s: Settings, data: Data, chosen_bw: float, stage1_models: dict, bar) -> list[dict]:
    """Phase 2 (module docstring): validation accuracy with one setting at a time back to the first implementation."""
    model = stage1_models[chosen_bw]
    k = model.num_experts
    base_cfg = train_config(s, data, chosen_bw, seed=0)
    first_csi = {"csi_scale": FIRST_SETUP["csi_scale"], "csi_relative": FIRST_SETUP["csi_relative"]}
    variants = [
        ("chosen", "chosen settings", model, base_cfg, None, True),
        ("csi_absolute", "CSI input in dB, not relative to the mean over experts", model, base_cfg,
         {"csi_relative": False}, True),
        ("csi_first", "CSI input log10(d)/4, absolute (first implementation)", model, base_cfg, first_csi, True),
        ("objective_expected", "stage-2 expected loss (first implementation)", model,
         replace(base_cfg, stage2_objective="expected"), None, True),
        ("short_stage2", "stage 2 of 15 epochs on digits' size (~135 steps)", model,
         replace(base_cfg, stage2_epochs=stage2_epochs_for(135, len(data.y_train), s.batch_size)), None, True),
        ("no_spread_at_eval", "every expert at the mean SNR at evaluation (no per-expert fading)", model, base_cfg,
         None, False),
    ]
    if FIRST_SETUP["balance_weight"] in stage1_models:
        first_cfg = replace(train_config(s, data, FIRST_SETUP["balance_weight"], seed=0),
                            stage2_objective=FIRST_SETUP["stage2_objective"],
                            stage2_epochs=FIRST_SETUP["stage2_epochs"])
        variants.append(("first_setup", "first implementation: beta 0.1, log10(d)/4 absolute, expected loss, 15 epochs",
                         stage1_models[FIRST_SETUP["balance_weight"]], first_cfg, first_csi, True))
    rows, trained = [], {}
    for key, label, m, cfg, csi, fading in variants:
        row = {"lever": key, "label": label, "num_experts": k, "balance_weight": cfg.balance_weight,
               "stage2_epochs": cfg.stage2_epochs, "stage2_objective": cfg.stage2_objective,
               "csi_scale": (csi or {}).get("csi_scale", m.csi_scale),
               "csi_relative": (csi or {}).get("csi_relative", m.csi_relative), "links": {}}
        for link in LINKS:
            if key == "no_spread_at_eval":
                models = trained[link]
            else:
                # the CSI input only concerns the aware gate: the naive one is the chosen run's
                which = ("aware",) if key.startswith("csi_") else ("naive", "aware")
                models = train_gates(m, data, link, cfg, csi, which)
                if key.startswith("csi_"):
                    models["naive"] = trained[link]["naive"]
                if key == "chosen":
                    trained[link] = models
            row["links"][link] = evaluate(models, data, link, "val", s.snrs, 0, s.repeats[data.name], fading)
        rows.append(row)
        bar.update(1)
    return rows


def grid_rows(s: Settings, data: Data, bw: float, bar) -> list[dict]:
    """Phase 3 (module docstring): test accuracy per K, seed and link."""
    runs = []
    for k in s.ks:
        for seed in range(s.seeds):
            cfg = train_config(s, data, bw, seed)
            model = build_model(data, k, seed)
            t0 = time.perf_counter()
            train_stage1(model, data.x_train, data.y_train, cfg)
            run = {"num_experts": k, "seed": seed, **stage1_profile(model, data.x_test, data.y_test), "links": {}}
            for link in LINKS:
                run["links"][link] = evaluate(train_gates(model, data, link, cfg), data, link, "test", s.snrs,
                                              100 + seed, s.repeats[data.name])
            run["seconds"] = time.perf_counter() - t0
            runs.append(run)
            bar.update(1)
    return runs


def summarise(runs: list[dict], snrs: tuple[float, ...]) -> list[dict]:
    """One row per (K, link, SNR): per-seed accuracies of each gate, their means, and aware − naive."""
    rows = []
    for k in sorted({r["num_experts"] for r in runs}):
        mine = sorted((r for r in runs if r["num_experts"] == k), key=lambda r: r["seed"])
        for link in LINKS:
            for i, snr in enumerate(snrs):
                row = {"num_experts": k, "link": link, "snr_db": snr, "seeds": [r["seed"] for r in mine]}
                for gate in GATES:
                    vals = [r["links"][link][gate][i] for r in mine]
                    row[gate] = vals
                    row[f"{gate}_mean"] = float(np.mean(vals))
                row["gain_per_seed"] = [a - n for a, n in zip(row["aware"], row["naive"])]
                row["gain_mean"] = row["aware_mean"] - row["naive_mean"]
                row["gain_over_stage1_mean"] = row["aware_mean"] - row["stage1_mean"]
                row["ideal_mean"] = float(np.mean([r["ideal_accuracy"] for r in mine]))
                rows.append(row)
    return rows


def targets(rows: list[dict], ks: tuple[int, ...]) -> dict:
    """The two targets per link (module docstring) on the seed means."""
    out = {}
    k_low = 8 if 8 in ks else ks[0]
    top = max(r["snr_db"] for r in rows)
    for link in LINKS:
        low = {f"{r['snr_db']:g}": r["gain_mean"] for r in rows
               if r["link"] == link and r["num_experts"] == k_low and r["snr_db"] <= LOW_SNR_DB}
        high = {str(r["num_experts"]): r["gain_mean"] for r in rows if r["link"] == link and r["snr_db"] == top}
        low_met = bool(low) and all(v >= LOW_SNR_GAIN for v in low.values())
        high_met = all(v >= 0 for v in high.values())
        out[link] = {
            "low_snr": {"rule": f"aware - naive >= +{LOW_SNR_GAIN * 100:g} points at every mean SNR <= "
                                f"{LOW_SNR_DB:g} dB, K={k_low}, mean over seeds",
                        "gain_by_snr_db": low, "met": low_met, "status": "met" if low_met else "MISSED"},
            "high_snr": {"rule": f"aware >= naive at {top:g} dB for every K, mean over seeds",
                         "gain_by_num_experts": high, "met": high_met, "status": "met" if high_met else "MISSED"},
        }
    return out


def plot(doc: dict, path: Path) -> list[Path]:
    """Accuracy vs SNR (rows dataset × link, columns K) and accuracy vs K (at the lowest and highest SNR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["datasets"])
    ks = doc["settings"]["ks"]
    panels = [(d, ln) for d in names for ln in LINKS]
    style = {"aware": ("C0", "-", "channel-aware"), "naive": ("C3", "--", "naive (stage 2)"),
             "stage1": ("0.5", ":", "stage-1 gate")}
    fig, axes = plt.subplots(len(panels), len(ks), figsize=(3.6 * len(ks), 2.8 * len(panels)), squeeze=False,
                             sharex=True)
    for i, (d, ln) in enumerate(panels):
        rows = doc["datasets"][d]["grid"]
        for j, k in enumerate(ks):
            ax = axes[i][j]
            mine = [r for r in rows if r["link"] == ln and r["num_experts"] == k]
            x = [r["snr_db"] for r in mine]
            for gate, (colour, ls, label) in style.items():
                ax.plot(x, [r[f"{gate}_mean"] for r in mine], color=colour, ls=ls, marker=".", label=label)
                if gate != "stage1":
                    ax.fill_between(x, [min(r[gate]) for r in mine], [max(r[gate]) for r in mine], color=colour,
                                    alpha=0.15, lw=0)
            if mine:
                ax.axhline(mine[0]["ideal_mean"], color="k", lw=0.8, alpha=0.5, label="ideal links")
            ax.set_title(f"{d}, {ln}, K={k}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("test accuracy")
            if i == len(panels) - 1:
                ax.set_xlabel("mean SNR per expert link (dB)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("channel-aware vs naive gate\n(mean over seeds, band: min-max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

    k_path = path.with_name(path.stem + "_k.png")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for i, (d, ln) in enumerate(panels):
        ax = axes[0][i]
        rows = doc["datasets"][d]["grid"]
        snrs = sorted({r["snr_db"] for r in rows})
        for snr, marker in ((snrs[0], "o"), (snrs[-1], "s")):
            mine = sorted((r for r in rows if r["link"] == ln and r["snr_db"] == snr), key=lambda r: r["num_experts"])
            ks_here = [r["num_experts"] for r in mine]
            ax.plot(ks_here, [r["aware_mean"] for r in mine], color="C0", marker=marker, label=f"aware, {snr:g} dB")
            ax.plot(ks_here, [r["naive_mean"] for r in mine], color="C3", ls="--", marker=marker,
                    label=f"naive, {snr:g} dB")
        ax.set_title(f"{d}, {ln}", fontsize=9)
        ax.set_xlabel("experts K")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(k_path, dpi=110)
    plt.close(fig)
    return [path, k_path]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def settings_from(args: argparse.Namespace) -> Settings:
    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    unknown = set(datasets) - {"digits", "isac"}
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}; known: digits, isac")
    if args.quick:
        return Settings(datasets=datasets, ks=(4,), seeds=1, snrs=(10.0, 40.0), balance_weights=(1.0,),
                        stage1_epochs=2, stage2_steps=10, batch_size=128, isac_samples=1500,
                        repeats={"digits": 1, "isac": 1}, levers=False, digits_limit=600)
    return Settings(datasets=datasets, ks=_ints(args.ks), seeds=args.seeds, snrs=SNRS_DB,
                    balance_weights=_floats(args.balance_weights), stage1_epochs=args.stage1_epochs,
                    stage2_steps=args.stage2_steps, batch_size=128, isac_samples=args.isac_samples,
                    repeats={"digits": 5, "isac": 3}, levers=not args.no_levers)


def print_table(doc: dict) -> None:
    for name, ds in doc["datasets"].items():
        print(f"\n{name}: beta = {ds['chosen_balance_weight']:g} (validation)")
        print(f"{'K':>3} {'link':>8} {'SNR':>5} {'stage1':>8} {'naive':>8} {'aware':>8} {'gain':>7}   per-seed gain")
        for r in ds["grid"]:
            print(f"{r['num_experts']:>3} {r['link']:>8} {r['snr_db']:>5g} {r['stage1_mean']:>8.3f} "
                  f"{r['naive_mean']:>8.3f} {r['aware_mean']:>8.3f} {100 * r['gain_mean']:>+7.1f}   "
                  + " ".join(f"{100 * g:+.1f}" for g in r["gain_per_seed"]))
        for link, t in ds["targets"].items():
            print(f"  {link}: low SNR {t['low_snr']['status']} "
                  f"({', '.join(f'{k} dB {100 * v:+.1f}' for k, v in t['low_snr']['gain_by_snr_db'].items())}); "
                  f"40 dB {t['high_snr']['status']} "
                  f"({', '.join(f'K={k} {100 * v:+.1f}' for k, v in t['high_snr']['gain_by_num_experts'].items())})")


def main(argv: list[str] | None = None) -> dict:
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data and grid, 1 seed, no levers")
    parser.add_argument("--datasets", default="digits,isac")
    parser.add_argument("--ks", default="4,8,12")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--balance-weights", default="0.1,1,3", help="stage-1 β candidates (validation)")
    parser.add_argument("--stage1-epochs", type=int, default=30)
    parser.add_argument("--stage2-steps", type=int, default=1500, help="stage-2 optimiser steps (rounded up to epochs)")
    parser.add_argument("--isac-samples", type=int, default=20_000)
    parser.add_argument("--no-levers", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    s = settings_from(args)
    t_start = time.perf_counter()
    loaders = {"digits": lambda: load_digits_data(s.digits_limit), "isac": lambda: load_isac_data(s.isac_samples)}
    doc = {"benchmark": "split_gating", "paper": "004 (channel-aware gating of distributed experts)",
           "machine": machine(threads=torch.get_num_threads()),
           "settings": {"quick": args.quick, "datasets": list(s.datasets), "ks": list(s.ks), "seeds": s.seeds,
                        "snrs_db": list(s.snrs), "balance_weight_candidates": list(s.balance_weights),
                        "stage1_epochs": s.stage1_epochs, "stage2_steps": s.stage2_steps, "batch_size": s.batch_size,
                        "eval_repeats": s.repeats, "links": LINKS, "feature_dim": FEATURE_DIM, "hidden": HIDDEN,
                        "train_snr_db_range": list(SplitTrainConfig().snr_db_range), "fading": "Rayleigh per expert",
                        "csi_scale": DistributedMoE(nn.Identity(), 2, 2, 2).csi_scale,
                        "csi_relative": DistributedMoE(nn.Identity(), 2, 2, 2).csi_relative,
                        "stage2_objective": SplitTrainConfig().stage2_objective, "first_setup": FIRST_SETUP},
           "datasets": {}}
    steps = len(s.datasets) * (len(s.balance_weights) + (7 if s.levers else 0) + len(s.ks) * s.seeds)
    with tqdm(total=steps, desc="split gating", unit="run") as bar:
        for name in s.datasets:
            t0 = time.perf_counter()
            data = loaders[name]()
            ds = {"description": data.description, "sizes": data.sizes()}
            bw, ds["selection"], stage1_models = select_balance_weight(s, data, bar)
            ds["chosen_balance_weight"] = bw
            ds["selection_rule"] = "highest mean channel-aware validation accuracy over links and SNRs (K=8, seed 0)"
            if s.levers:
                ds["levers"] = lever_rows(s, data, bw, stage1_models, bar)
            ds["runs"] = grid_rows(s, data, bw, bar)
            ds["grid"] = summarise(ds["runs"], s.snrs)
            ds["targets"] = targets(ds["grid"], s.ks)
            ds["seconds"] = time.perf_counter() - t0
            doc["datasets"][name] = ds
    doc["targets"] = {name: {link: {"low_snr": t["low_snr"]["status"], "high_snr": t["high_snr"]["status"]}
                             for link, t in ds["targets"].items()} for name, ds in doc["datasets"].items()}
    doc["wall_s"] = time.perf_counter() - t_start
    return write_report(doc, args.out, plot, print_table)


if __name__ == "__main__":
    main()
