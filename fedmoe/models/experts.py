"""Modality experts (encoders), registered by architecture name, with counted costs.

Paper 000 uses several experts per modality (3 x 5 = 15); :func:`default_expert_specs`
builds that layout with three widths per modality. Paper 001 adds modality-subset
experts; the ``subset_mlp`` architecture reads several vector modalities at once.

Inputs reach an expert already standardised per feature (the mixture's
:class:`~fedmoe.models.moe.Standardiser` does it), as float32. Each expert checks the
shapes it receives and names itself in the error.

Cost: :func:`count_flops` runs ``torch.utils.flop_counter.FlopCounterMode`` on a batch
of example inputs — it counts matmul and convolution FLOPs (2 per multiply-add) and
ignores element-wise operations — and divides by the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedmoe.config import MODALITIES, StrictModel
from fedmoe.registry import Registry


class Expert(nn.Module):
    """An encoder of one or more modalities into an ``out_dim`` feature vector."""

    def __init__(self, name: str, modalities: Sequence[str], shapes: dict[str, tuple[int, ...]], out_dim: int,
                 body: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.modalities = tuple(modalities)
        self.shapes = {m: tuple(shapes[m]) for m in self.modalities}
        self.out_dim = int(out_dim)
        self.body = body

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for m in self.modalities:
            if m not in inputs:
                raise ValueError(f"expert {self.name!r}: input {m!r} missing")
            x = inputs[m]
            if tuple(x.shape[1:]) != self.shapes[m]:
                raise ValueError(f"expert {self.name!r}: {m} input has shape {tuple(x.shape[1:])}, "
                                 f"expected {self.shapes[m]}")
            parts.append(x.float() if len(self.modalities) == 1 else x.float().flatten(1))
        return self.body(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))


ExpertFactory = Callable[[str, Sequence[str], dict[str, tuple[int, ...]], int, int], Expert]
ARCHITECTURES: Registry[ExpertFactory] = Registry("expert architecture")
"""Architecture name -> factory ``(name, modalities, shapes, out_dim, width) -> Expert``."""


def _single(modalities: Sequence[str], shapes: dict, ndim: int, arch: str) -> tuple[int, ...]:
    if len(modalities) != 1:
        raise ValueError(f"{arch} reads exactly one modality, got {list(modalities)}")
    shape = tuple(shapes[modalities[0]])
    if len(shape) != ndim:
        raise ValueError(f"{arch} needs a {ndim}-D input per sample, {modalities[0]} has shape {shape}")
    return shape


@ARCHITECTURES.register("conv2d")
def conv2d_expert(name, modalities, shapes, out_dim, width) -> Expert:
    """Residual CNN for image-like maps (camera, radar): stride-2 stem, one residual block,
    stride-2 conv, flattened — no global pooling, so the position (angle) survives."""
    c, h, w = _single(modalities, shapes, 3, "conv2d")
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    h4, w4 = (h2 + 1) // 2, (w2 + 1) // 2
    body = nn.Sequential(
        nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
        _Residual(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))),
        nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(width * h4 * w4, out_dim), nn.ReLU())
    return Expert(name, modalities, shapes, out_dim, body)


@ARCHITECTURES.register("conv1d")
def conv1d_expert(name, modalities, shapes, out_dim, width) -> Expert:
    """1-D CNN for range scans (lidar): two stride-2 convolutions, flattened."""
    (n,) = _single(modalities, shapes, 1, "conv1d")
    n4 = ((n + 1) // 2 + 1) // 2
    body = nn.Sequential(nn.Unflatten(1, (1, n)), nn.Conv1d(1, width, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv1d(width, width, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(width * n4, out_dim), nn.ReLU())
    return Expert(name, modalities, shapes, out_dim, body)


@ARCHITECTURES.register("mlp")
def mlp_expert(name, modalities, shapes, out_dim, width) -> Expert:
    """Two hidden layers of ``width`` on the flattened input(s); several modalities make a
    modality-subset expert (paper 001)."""
    d = int(sum(np.prod(shapes[m]) for m in modalities))
    body = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, out_dim), nn.ReLU())
    return Expert(name, modalities, shapes, out_dim, body)


class _Residual(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class ExpertSpec(StrictModel):
    """One expert of a mixture: its name, architecture, modalities and width."""

    name: str = Field(..., min_length=1)
    architecture: str
    modalities: tuple[str, ...] = Field(..., min_length=1)
    width: int = Field(16, ge=1, le=4096)


DEFAULT_ARCHITECTURE = {"camera": "conv2d", "radar": "conv2d", "lidar": "conv1d", "gps": "mlp", "rf": "mlp"}
DEFAULT_WIDTHS = {"conv2d": (4, 8, 16), "conv1d": (4, 8, 16), "mlp": (16, 32, 64)}


def default_expert_specs(num_per_modality: int = 3, modalities: Sequence[str] = MODALITIES) -> list[ExpertSpec]:
    """``num_per_modality`` experts of growing width per modality (paper 000: 3 x 5 = 15)."""
    if not 1 <= num_per_modality <= 3:
        raise ValueError(f"num_per_modality must be 1, 2 or 3, got {num_per_modality}")
    specs = []
    for m in modalities:
        arch = DEFAULT_ARCHITECTURE[m]
        for size, width in zip("sml"[:num_per_modality], DEFAULT_WIDTHS[arch][:num_per_modality]):
            specs.append(ExpertSpec(name=f"{m}_{size}", architecture=arch, modalities=(m,), width=width))
    return specs


def build_experts(specs: Sequence[ExpertSpec], shapes: dict[str, tuple[int, ...]], out_dim: int) -> nn.ModuleList:
    """Instantiate ``specs`` for inputs of ``shapes`` (per modality, without the batch axis)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"expert names must be unique, got {names}")
    experts = []
    for s in specs:
        missing = [m for m in s.modalities if m not in shapes]
        if missing:
            raise ValueError(f"expert {s.name!r}: no input shape for modalities {missing}")
        experts.append(ARCHITECTURES.get(s.architecture)(s.name, s.modalities, shapes, out_dim, s.width))
    return nn.ModuleList(experts)


@dataclass(frozen=True)
class ExpertCost:
    """Counted cost of one expert: FLOPs per sample, parameters, uplink bits of its input."""

    flops_per_sample: int
    params: int
    input_bits: int


def count_flops(module: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """FLOPs per sample of ``module(inputs)`` counted by ``FlopCounterMode`` (see module docstring)."""
    batch = next(iter(inputs.values())).shape[0]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(inputs)
    return int(round(counter.get_total_flops() / batch))


def expert_costs(experts: Sequence[Expert], bits_per_sample: dict[str, int], batch: int = 4) -> list[ExpertCost]:
    """Counted FLOPs, parameter count and input bits of every expert (random example inputs)."""
    out = []
    for e in experts:
        example = {m: torch.randn(batch, *e.shapes[m]) for m in e.modalities}
        out.append(ExpertCost(count_flops(e, example), sum(p.numel() for p in e.parameters()),
                              int(sum(bits_per_sample[m] for m in e.modalities))))
    return out
