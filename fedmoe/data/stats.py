"""Dataset statistics and the quick per-modality baselines shown by ``fedmoe data stats``.

The baseline is deliberately small, to measure the *information in a modality* rather
than modelling skill: each input is standardised per feature (training-split mean and
std) and encoded by a small network — two conv layers for camera and radar maps, two
1-D conv layers for the lidar scan, a 2-layer MLP for GPS and RF, each ending in 128
features — the features of a group are concatenated (late fusion) and a 128-unit MLP
head predicts the best beam; Adam with a one-cycle schedule (peak lr 3e-3, batch 256,
cross-entropy), 10 epochs by default. It is evaluated by
top-1 and top-3 accuracy, the power ratio of a 3-beam sweep (dB, :mod:`fedmoe.models.scores`)
and the mean absolute beam-index error, overall and per condition (LoS / blocked): the
value of each modality group under each condition, on each score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedmoe.config import MODALITIES
from fedmoe.data.samples import ISACSamples
from fedmoe.models.scores import beam_scores, by_condition

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    **{m: (m,) for m in MODALITIES},
    "gps+rf": ("gps", "rf"),
    "gps+rf+radar": ("radar", "gps", "rf"),
    "all": MODALITIES,
}
"""Modality groups evaluated by default: each alone, the cheap pair, the cheap pair plus radar, all."""

LR = 3e-3
"""Peak learning rate of the one-cycle schedule."""
BATCH = 256


def dataset_summary(samples: ISACSamples) -> dict:
    """Counts, condition shares, per-modality sizes and label statistics (JSON-ready)."""
    beam = samples.labels["beam"]
    blocked = samples.conditions.get("blocked", np.zeros(len(samples), bool))
    hist = np.bincount(beam, minlength=int(beam.max()) + 1) / len(beam)
    nz = hist[hist > 0]
    pl = samples.labels["pathloss_db"]
    return {
        "num_samples": len(samples),
        "bytes_per_sample": samples.nbytes / max(len(samples), 1),
        "blocked_fraction": float(np.mean(blocked)),
        "uav_fraction": float(np.mean(samples.conditions.get("is_uav", np.zeros(len(samples), bool)))),
        "bits_per_sample": dict(samples.bits_per_sample),
        "modality_present_fraction": {m: float(samples.has(m).mean()) for m in MODALITIES},
        "beam_entropy_bits": float(-(nz * np.log2(nz)).sum()),
        "beam_most_common_share": float(hist.max()),
        "pathloss_db_percentiles": dict(zip(("p5", "p50", "p95"), map(float, np.nanpercentile(pl, [5, 50, 95])))),
        "pathloss_db_mean_by_condition": {
            "los": float(np.nanmean(pl[~blocked])) if (~blocked).any() else None,
            "blocked": float(np.nanmean(pl[blocked])) if blocked.any() else None,
        },
    }


def standardised(train: ISACSamples, test: ISACSamples, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 tensors of one modality, standardised per feature with the training split's statistics."""
    x_tr = train.inputs[modality].astype(np.float32)
    x_te = test.inputs[modality].astype(np.float32)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    return torch.from_numpy((x_tr - mean) / std), torch.from_numpy((x_te - mean) / std)


@dataclass
class BaselineResult:
    group: str
    modalities: tuple[str, ...]
    bits_per_sample: int
    top1: dict[str, float]
    top3: dict[str, float]
    mean_abs_beam_error: dict[str, float]
    power_ratio_db: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"group": self.group, "modalities": list(self.modalities), "bits_per_sample": self.bits_per_sample,
                "top1": self.top1, "top3": self.top3, "power_ratio_db": self.power_ratio_db,
                "mean_abs_beam_error": self.mean_abs_beam_error}


def _encoder(modality: str, shape: tuple[int, ...]) -> nn.Module:
    """A small encoder per modality, ending in a 128-d feature (conv for rasters and scans)."""
    if modality == "camera" or (modality == "radar" and len(shape) == 3):
        c, h, w = shape
        return nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * (h // 4) * (w // 4), 128), nn.ReLU())
    if modality == "lidar" and len(shape) == 1:
        return nn.Sequential(nn.Unflatten(1, (1, shape[0])), nn.Conv1d(1, 16, 5, padding=2), nn.ReLU(),
                             nn.MaxPool1d(2), nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.Flatten(),
                             nn.Linear(32 * (shape[0] // 2), 128), nn.ReLU())
    d = int(np.prod(shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())


class BaselineNet(nn.Module):
    """Late fusion: one small encoder per modality, concatenated, then a linear beam classifier."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], num_classes: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: _encoder(m, s) for m, s in shapes.items()})
        self.head = nn.Sequential(nn.Linear(128 * len(shapes), 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, xs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([enc(xs[m]) for m, enc in self.encoders.items()], dim=1))


def train_beam_baseline(train: ISACSamples, test: ISACSamples, modalities: tuple[str, ...], num_classes: int,
                        epochs: int = 10, seed: int = 0, group: str | None = None) -> BaselineResult:
    """Train the baseline (:class:`BaselineNet`) on ``modalities``; evaluate it per condition on ``test``."""
    torch.manual_seed(seed)
    pairs = {m: standardised(train, test, m) for m in modalities}
    x_tr = {m: p[0] for m, p in pairs.items()}
    x_te = {m: p[1] for m, p in pairs.items()}
    y_tr = torch.from_numpy(train.labels["beam"])
    model = BaselineNet({m: tuple(x.shape[1:]) for m, x in x_tr.items()}, num_classes)
    batches = torch.arange(len(y_tr)).split(BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=max(1, epochs * len(batches)))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y_tr), generator=gen).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model({m: x[idx] for m, x in x_tr.items()}), y_tr[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model({m: x[i] for m, x in x_te.items()})
                            for i in torch.arange(len(test)).split(2048)])
    y = test.labels["beam"]
    power = test.labels.get("beam_power_db")
    scores = beam_scores(logits, y, power if power is not None and power.shape[1] == num_classes else None,
                         min(3, num_classes))
    pred = logits.argmax(dim=1).numpy()
    blocked = test.conditions.get("blocked", np.zeros(len(test), bool))
    bits = sum(train.bits_per_sample.get(m, 0) for m in modalities)
    return BaselineResult(group or "+".join(modalities), modalities, bits,
                          by_condition(scores["top1"], blocked), by_condition(scores["topk"], blocked),
                          by_condition(np.abs(pred - y).astype(np.float64), blocked),
                          by_condition(scores["power_ratio_db"], blocked))


def modality_baselines(train: ISACSamples, test: ISACSamples, num_classes: int,
                       groups: dict[str, tuple[str, ...]] | None = None, epochs: int = 10, seed: int = 0,
                       progress: bool = False) -> list[BaselineResult]:
    """Run :func:`train_beam_baseline` for each modality group (default :data:`DEFAULT_GROUPS`)."""
    groups = groups or DEFAULT_GROUPS
    available = {m for m in MODALITIES if m in train.inputs}
    results = []
    for name, mods in tqdm(groups.items(), desc="baselines", disable=not progress, leave=False):
        if set(mods) <= available:
            results.append(train_beam_baseline(train, test, mods, num_classes, epochs, seed, name))
    return results


def format_baseline_table(results: list[BaselineResult]) -> str:
    """A plain-text table: one row per group, top-1/top-3 by condition."""
    head = (f"{'modalities':<12} {'kbit':>7} | {'top-1 LoS':>9} {'top-1 blk':>9} | {'top-3 LoS':>9} {'top-3 blk':>9} | "
            f"{'dB LoS':>7} {'dB blk':>7} | {'top-1 all':>9}")
    rows = [head, "-" * len(head)]
    for r in results:
        pr = r.power_ratio_db or {}
        rows.append(f"{r.group:<12} {r.bits_per_sample / 1000:>7.2f} | "
                    f"{r.top1['los']:>9.1%} {r.top1['blocked']:>9.1%} | "
                    f"{r.top3['los']:>9.1%} {r.top3['blocked']:>9.1%} | {pr.get('los', float('nan')):>7.2f} "
                    f"{pr.get('blocked', float('nan')):>7.2f} | {r.top1['all']:>9.1%}")
    return "\n".join(rows)
