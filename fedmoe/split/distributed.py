"""Distributed experts over noisy downlinks with a channel-aware gate ([P004]; the WDMoE of the survey [P003]).

A backbone ``F`` at the server maps an input to a feature ``z = F(x) ∈ R^D``. Expert ``k``
is hosted on device ``k``; to use it the server sends ``z`` over the downlink to device
``k``, which receives ``ẑ_k`` (a :mod:`fedmoe.split.links` model at its SNR ``γ_k``),
computes ``o_k = E_k(ẑ_k)`` and returns it (the return link is taken as ideal). The gate
picks the expert:

* **naive**: ``g = softmax(G(z))``;
* **channel-aware** ([P004]): ``g = softmax(G([z, ψ_1, …, ψ_K]))`` with ``d_k`` the
  expected relative distortion of the link to expert ``k`` ([P004]'s distortion
  variance ``σ̃_k² = σ²/(p|h_k|²)`` for the analog link) and

  .. math::  ψ_k = c \\bigl(\\log_{10} d_k - \\tfrac1K \\textstyle\\sum_j \\log_{10} d_j\\bigr),

  ``c = csi_scale`` (default 10: each expert's distortion in dB, ``−SNR_k`` in dB for the
  analog link, relative to the mean over the K experts of that sample; ``csi_relative =
  False`` drops the mean). Two measured choices (``sims.bench.split_gating``, validation):

  - the scale: the aware gate starts from the stage-1 gate (same weights on ``z``, zero
    weights on ``ψ``), whose logits spread over several units, and Adam moves each weight
    by about the learning rate per step whatever the input's size, so the channel's pull
    on the logits grows with ``c``. With the first version's ``log10(d)/4`` and partly
    overlapping experts (digits, K=8, β=1, digital link at 10 dB) stage 2 gained 1.3
    points over naive where ``4·log10 d`` gained 11.6; with strongly overlapping experts
    (β=3) the scale matters less (+14 against +17 points in the benchmark's levers);
  - the reference: the common level of the ``log10 d_k`` moves with the mean SNR of the
    sample (tens of dB), and fed as is it shifts every hidden unit of the gate as the
    weights on ``ψ`` grow, disturbing the feature routing learned in stage 1 (synthetic
    ISAC beams, K=12: 4.6 to 6.8 points below the naive gate at 40 dB; relative: −1.0 and
    +0.7). The choice between experts only needs their differences.

Inference uses the top-1 expert, ``ŷ = E_{k*}(ẑ_{k*})`` with ``k* = argmax g``. Training
(:func:`train_stage1`, :func:`train_stage2`) follows [P004]'s two stages:

1. backbone, gate and experts under ideal links, with the mixture likelihood
   ``−log Σ_k g_k p_k(y | z)`` and a load-balancing term ``β · K Σ_k \\bar g_k^2`` (the
   squared coefficient of variation of the mean gate, plus one; minimal when every
   expert gets ``1/K``);
2. backbone and experts frozen; only the gate is trained, on features corrupted per
   expert at SNRs drawn at random (:func:`draw_snr`). Objective
   (:attr:`SplitTrainConfig.stage2_objective`):

   * ``"mixture"`` (default): the stage-1 likelihood on the received copies,
     ``−log Σ_k g_k p_k(y | ẑ_k)``, the likelihood of sending ``z`` to one expert drawn
     from ``g``. Its gradient in the logits is ``g_k − r_k`` with ``r_k ∝ g_k p_k(y | ẑ_k)``
     the posterior that expert ``k`` is the right one, bounded per sample, so a sample
     whose every copy is drowned (cross-entropy 5–10 nats on all experts) does not
     outweigh the routing signal of the others;
   * ``"expected"``: the expected loss of the expert it picks, ``Σ_k g_k ℓ(E_k(ẑ_k), y)``.
     Unbounded per-expert losses let the drowned samples dominate: on the synthetic ISAC
     beams (K=8, validation split) it pulled the naive gate to hedging experts, 3 points
     below the untouched stage-1 gate at 40 dB, where the links hardly matter.

   (The loss of the dense mixture of outputs, ``ℓ(Σ_k g_k E_k(ẑ_k), y)``, is not offered:
   it rewards averaging the experts' independent noisy copies, which top-1 inference
   never does.)

The naive gate goes through the same stage 2 without the distortion inputs, so the
comparison isolates what knowing the channel is worth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedmoe.models.experts import mlp_layers
from fedmoe.models.gate_backbones import MLPBackbone
from fedmoe.split.links import FeatureLink
from fedmoe.training import minibatches
from fedmoe.wireless.ofdma import db_to_linear


class DistributedMoE(nn.Module):
    """Backbone at the server, ``num_experts`` experts on devices, one gate (module docstring).

    Parameters
    ----------
    backbone : nn.Module
        Maps a batch of inputs to ``(B, feature_dim)`` features.
    feature_dim, num_classes, num_experts : int
        Sizes.
    hidden : int
        Hidden width of each expert (:func:`fedmoe.models.experts.mlp_layers`) and of the gates
        (:class:`~fedmoe.models.gate_backbones.MLPBackbone`; the channel-aware one takes the
        per-expert distortion as its one side input per expert).
    csi_scale : float
        ``c`` of the channel-aware gate's input ``ψ_k`` (module docstring); 10 feeds dB.
    csi_relative : bool
        Subtract the mean over the experts from ``c · log10 d_k`` (module docstring).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, num_experts: int,
                 hidden: int = 64, csi_scale: float = 10.0, csi_relative: bool = True) -> None:
        super().__init__()
        if num_experts < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {num_experts}")
        if not csi_scale > 0:
            raise ValueError(f"csi_scale must be positive, got {csi_scale}")
        self.csi_scale = float(csi_scale)
        self.csi_relative = bool(csi_relative)
        self.backbone = backbone
        self.num_experts = num_experts
        self.experts = nn.ModuleList(mlp_layers(feature_dim, hidden, num_classes) for _ in range(num_experts))
        self.gate = MLPBackbone(feature_dim, num_experts, side_dim=0, hidden=hidden)  # stage 1 (and naive)
        self.aware_gate = MLPBackbone(feature_dim, num_experts, side_dim=1, hidden=hidden)

    @torch.no_grad()
    def init_aware_gate(self) -> None:
        """Start the channel-aware gate from the stage-1 gate: same weights on the features, zero
        weights on the distortion inputs (so it first routes exactly as the stage-1 gate does)."""
        src, dst = list(self.gate.modules()), list(self.aware_gate.modules())
        for a, b in zip(src, dst):
            if isinstance(a, nn.Linear):
                if b.in_features == a.in_features:
                    b.load_state_dict(a.state_dict())
                else:
                    b.weight.zero_()
                    b.weight[:, :a.in_features] = a.weight
                    b.bias.copy_(a.bias)

    def gate_logits(self, z: torch.Tensor, distortion: torch.Tensor | None, aware: bool) -> torch.Tensor:
        """(B, K) logits of the naive gate, or of the channel-aware one given (B, K) ``distortion``."""
        if not aware:
            return self.gate(z)
        if distortion is None:
            raise ValueError("the channel-aware gate needs the per-expert distortion")
        return self.aware_gate(z, self.channel_input(distortion))

    def channel_input(self, distortion: torch.Tensor) -> torch.Tensor:
        """(B, K) ``ψ_k = c (log10 d_k − mean_j log10 d_j)`` from (B, K) ``distortion`` ([P004]: the gate
        reads each expert's distortion variance ``σ²/(p|h_k|²)``; module docstring), ``d`` floored at 1e-8;
        without the mean when ``csi_relative`` is False."""
        psi = self.csi_scale * torch.log10(distortion.clamp_min(1e-8))
        return psi - psi.mean(dim=-1, keepdim=True) if self.csi_relative else psi

    def expert_outputs(self, z: torch.Tensor, link: FeatureLink | None, snr: torch.Tensor | None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, K, C): every expert on its own received copy of ``z`` (ideal links when ``link`` is None)."""
        b, k = z.shape[0], self.num_experts
        copies = z.unsqueeze(1).expand(b, k, z.shape[1])
        if link is not None:
            if snr is None or tuple(snr.shape) != (b, k):
                raise ValueError(f"snr must have shape ({b}, {k})")
            copies = link.corrupt(copies, snr, generator)
        return torch.stack([e(copies[:, i]) for i, e in enumerate(self.experts)], dim=1)

    def predict(self, x: torch.Tensor, link: FeatureLink | None, snr: torch.Tensor | None, aware: bool,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-1 inference: (B, C) logits of the chosen expert on its received features, and (B,) the choice."""
        z = self.backbone(x)
        distortion = link.distortion(snr) if (aware and link is not None) else (
            torch.full((z.shape[0], self.num_experts), 1e-8) if aware else None)
        choice = self.gate_logits(z, distortion, aware).argmax(dim=1)
        received = z if link is None else link.corrupt(z, snr.gather(1, choice[:, None]).squeeze(1), generator)
        return self.route(received, choice), choice

    def route(self, z: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Each row through its chosen expert only."""
        out: torch.Tensor | None = None
        for i, expert in enumerate(self.experts):
            rows = (choice == i).nonzero(as_tuple=True)[0]
            if rows.numel():
                o = expert(z[rows])
                out = z.new_zeros((z.shape[0], o.shape[1])) if out is None else out
                out[rows] = o
        assert out is not None  # every row chose some expert
        return out


def draw_snr(batch: int, num_experts: int, snr_db_range: tuple[float, float], fading: bool,
             generator: torch.Generator) -> torch.Tensor:
    """(B, K) linear SNRs: a mean SNR per sample drawn uniformly in dB over ``snr_db_range``, times an
    independent Rayleigh power gain ``|h_k|² ~ Exp(1)`` per expert when ``fading``."""
    lo, hi = snr_db_range
    mean_db = lo + (hi - lo) * torch.rand((batch, 1), generator=generator)
    snr = torch.as_tensor(db_to_linear(mean_db), dtype=torch.float32).expand(batch, num_experts).clone()
    if fading:
        snr = snr * torch.empty((batch, num_experts)).exponential_(1.0, generator=generator)
    return snr


def fixed_snr(batch: int, num_experts: int, snr_db: float, fading: bool, generator: torch.Generator) -> torch.Tensor:
    """(B, K) linear SNRs at mean ``snr_db``, Rayleigh-faded per expert when ``fading``."""
    return draw_snr(batch, num_experts, (snr_db, snr_db), fading, generator)


@dataclass
class SplitTrainConfig:
    """Training of :class:`DistributedMoE` (module docstring)."""

    stage1_epochs: int = 30
    stage2_epochs: int = 15
    batch_size: int = 128
    lr: float = 2e-3
    balance_weight: float = 0.1
    snr_db_range: tuple[float, float] = (10.0, 40.0)
    fading: bool = True
    seed: int = 0
    stage2_objective: str = "mixture"
    """``"mixture"`` or ``"expected"`` (module docstring, stage 2)."""

    def __post_init__(self) -> None:
        if self.stage2_objective not in STAGE2_OBJECTIVES:
            raise ValueError(f"stage2_objective must be one of {STAGE2_OBJECTIVES}, got {self.stage2_objective!r}")


STAGE2_OBJECTIVES = ("mixture", "expected")


def stage2_loss(logits: torch.Tensor, per_expert: torch.Tensor, objective: str) -> torch.Tensor:
    """Stage-2 gate loss (module docstring) from (B, K) gate logits and (B, K) per-expert
    cross-entropies ``ℓ_k = −log p_k(y | ẑ_k)`` of the received copies.

    ``"mixture"``: ``mean(−log Σ_k g_k e^{−ℓ_k})`` (a log-sum-exp of ``log g_k − ℓ_k``);
    ``"expected"``: ``mean(Σ_k g_k ℓ_k)``.
    """
    if objective == "mixture":
        return -torch.logsumexp(logits.log_softmax(dim=1) - per_expert, dim=1).mean()
    if objective == "expected":
        return (logits.softmax(dim=1) * per_expert).sum(dim=1).mean()
    raise ValueError(f"unknown stage-2 objective {objective!r}; known: {STAGE2_OBJECTIVES}")


def train_stage1(model: DistributedMoE, x: torch.Tensor, y: torch.Tensor, cfg: SplitTrainConfig) -> list[float]:
    """Stage 1: everything but the channel-aware gate, ideal links, dense mixture + load balancing."""
    rng = np.random.default_rng(cfg.seed)
    params = list(model.backbone.parameters()) + list(model.experts.parameters()) + list(model.gate.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    losses = []
    model.train()
    for _ in range(cfg.stage1_epochs):
        total = 0.0
        for rows in map(torch.from_numpy, minibatches(len(x), cfg.batch_size, rng)):
            z = model.backbone(x[rows])
            probs = model.gate_logits(z, None, aware=False).softmax(dim=1)
            outs = model.expert_outputs(z, None, None)
            mix = (probs.unsqueeze(2) * outs.softmax(dim=2)).sum(dim=1)
            loss = nn.functional.nll_loss(torch.log(mix.clamp_min(1e-9)), y[rows])
            mean_gate = probs.mean(dim=0)
            loss = loss + cfg.balance_weight * model.num_experts * mean_gate.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(x))
    return losses


def train_stage2(model: DistributedMoE, x: torch.Tensor, y: torch.Tensor, link: FeatureLink, aware: bool,
                 cfg: SplitTrainConfig) -> list[float]:
    """Stage 2: only the gate (channel-aware or naive), on features corrupted at random SNRs, with
    :func:`stage2_loss` (``cfg.stage2_objective``)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)  # SNRs and link noise
    rng = np.random.default_rng(cfg.seed + 1)  # batches
    if aware:
        model.init_aware_gate()
    gate = model.aware_gate if aware else model.gate
    opt = torch.optim.Adam(gate.parameters(), lr=cfg.lr)
    frozen = [model.backbone, model.experts]
    for m in frozen:
        m.requires_grad_(False)
    losses = []
    model.train()
    try:
        for _ in range(cfg.stage2_epochs):
            total = 0.0
            for rows in map(torch.from_numpy, minibatches(len(x), cfg.batch_size, rng)):
                with torch.no_grad():
                    z = model.backbone(x[rows])
                    snr = draw_snr(len(rows), model.num_experts, cfg.snr_db_range, cfg.fading, g)
                    outs = model.expert_outputs(z, link, snr, g)
                    per_expert = nn.functional.cross_entropy(outs.transpose(1, 2), y[rows].unsqueeze(1).expand(
                        len(rows), model.num_experts), reduction="none")  # (B, K)
                logits = model.gate_logits(z, link.distortion(snr) if aware else None, aware)
                loss = stage2_loss(logits, per_expert, cfg.stage2_objective)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            losses.append(total / len(x))
    finally:
        for m in frozen:
            m.requires_grad_(True)
    return losses


@torch.no_grad()
def accuracy_at(model: DistributedMoE, x: torch.Tensor, y: torch.Tensor, link: FeatureLink | None,
                snr_db: float | None, aware: bool, fading: bool = True, seed: int = 0,
                repeats: int = 1) -> float:
    """Top-1 accuracy with every expert's link at mean ``snr_db`` (None: ideal links), averaged over
    ``repeats`` draws of fading and noise."""
    model.eval()
    accs = []
    for r in range(repeats):
        g = torch.Generator().manual_seed(seed * 1009 + r)
        snr = None if (link is None or snr_db is None) else fixed_snr(len(x), model.num_experts, snr_db, fading, g)
        out, _ = model.predict(x, link if snr is not None else None, snr, aware, g)
        accs.append(float((out.argmax(dim=1) == y).float().mean()))
    return float(np.mean(accs))
