"""Counted cost of an expert: FLOPs per sample, parameters, uplink bits of its input.

Every expert has a known cost (``docs/architecture.md``, "The model"): the resource-aware loss of
[P001] (eq. 9) charges ``C(E_i)``, built in :mod:`fedmoe.models.device_costs` from
the FLOPs an expert spends per sample and the bits its input needs on the uplink.

FLOPs are *counted*, never guessed: :func:`count_flops` runs the module once on a batch
of example inputs under ``torch.utils.flop_counter.FlopCounterMode`` and divides the
total by the batch size. ``FlopCounterMode`` counts matrix multiplications and
convolutions (``aten.mm``, ``addmm``, ``bmm``, ``convolution`` …) at **2 FLOPs per
multiply–add**, so ``nn.Linear(a, b)`` costs ``2·a·b`` per sample and a convolution
``2 · C_in/groups · Π kernel · C_out · Π output_size``. Element-wise operations
(activations, bias additions, residual sums, pooling, normalisation) are **not**
counted; for the small experts of fedmoe they are a few per cent of the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class _ExpertLike(Protocol):
    name: str
    modalities: tuple[str, ...]
    input_shapes: dict[str, tuple[int, ...]]

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def parameters(self): ...


@dataclass(frozen=True)
class ExpertCost:
    """Counted cost of one expert.

    Attributes
    ----------
    flops_per_sample
        Matmul and convolution FLOPs (2 per multiply–add) of one forward pass over one
        sample, counted by :func:`count_flops`.
    params
        Number of trainable and frozen parameters (``Σ p.numel()``).
    input_bits
        Uplink size of the expert's input: ``Σ_{m ∈ modalities} bits_per_sample[m]``.
    name
        The expert's name (for tables and reports).
    """

    flops_per_sample: int
    params: int
    input_bits: int
    name: str = ""


FORWARD_BACKWARD_FACTOR = 3.0
"""Training FLOPs per sample ≈ 3 × forward FLOPs (forward, and a backward pass of about twice that)."""


def count_flops(module: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> int:
    """FLOPs per sample of ``module(inputs)``, counted by ``FlopCounterMode``.

    Parameters
    ----------
    module
        Any module.
    inputs
        Example inputs, all with the same batch size ``B`` (first axis): one tensor (``module(x)``),
        a tuple or list of tensors (``module(*inputs)``) or a dict of tensors (``module(inputs)``, as
        fedmoe's experts and mixture take them).

    Returns
    -------
    int
        ``total FLOPs / B`` (matmuls and convolutions at 2 FLOPs per multiply–add;
        element-wise operations ignored — see the module docstring).
    """
    if isinstance(inputs, torch.Tensor):
        tensors, call = [inputs], (lambda: module(inputs))
    elif isinstance(inputs, Mapping):
        tensors, call = list(inputs.values()), (lambda: module(dict(inputs)))
    elif isinstance(inputs, (tuple, list)):
        tensors, call = list(inputs), (lambda: module(*inputs))
    else:
        raise TypeError(f"count_flops needs a tensor, a tuple of tensors or a dict of tensors, "
                        f"got {type(inputs).__name__}")
    if not tensors:
        raise ValueError("count_flops needs at least one input tensor")
    if not all(isinstance(x, torch.Tensor) for x in tensors):
        raise TypeError("count_flops: every example input must be a torch.Tensor")
    batches = {int(x.shape[0]) if x.dim() else 0 for x in tensors}
    if len(batches) != 1 or 0 in batches:
        raise ValueError(f"example inputs need one non-zero batch size, got {sorted(batches)}")
    batch = batches.pop()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call()
    return int(round(counter.get_total_flops() / batch))


def _example_inputs(expert: _ExpertLike, shapes: Mapping[str, Sequence[int]], batch: int) -> dict[str, torch.Tensor]:
    missing = [m for m in expert.modalities if m not in shapes]
    if missing:
        raise ValueError(f"expert {expert.name!r}: no input shape given for modalities {missing}")
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, *tuple(shapes[m]), generator=gen) for m in expert.modalities}


def expert_costs(experts: Sequence[_ExpertLike], input_shapes: Mapping[str, Sequence[int]] | None = None,
                 bits_per_sample: Mapping[str, int] | None = None, *, batch: int = 4) -> list[ExpertCost]:
    """Counted FLOPs per sample, parameter count and input bits of every expert.

    Parameters
    ----------
    experts
        Experts (:class:`fedmoe.models.experts.Expert`): each has ``name``,
        ``modalities`` and ``input_shapes``.
    input_shapes
        Modality -> shape of one sample (no batch axis) of the example inputs; ``None``
        uses each expert's own ``input_shapes``. A shape the expert was not built for
        raises the expert's ``ValueError``.
    bits_per_sample
        Modality -> uplink bits of one sample (``ISACSamples.bits_per_sample``).
    batch
        Size of the example batch the FLOPs are counted on (the result is per sample).

    Returns
    -------
    list of ExpertCost
        One per expert, in order.
    """
    if bits_per_sample is None:
        raise TypeError("expert_costs needs bits_per_sample (modality -> uplink bits of one sample)")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = []
    for e in experts:
        missing = [m for m in e.modalities if m not in bits_per_sample]
        if missing:
            raise ValueError(f"expert {e.name!r}: bits_per_sample lacks modalities {missing}")
        shapes = e.input_shapes if input_shapes is None else input_shapes
        flops = count_flops(e, _example_inputs(e, shapes, batch))  # type: ignore[arg-type]
        out.append(ExpertCost(flops_per_sample=flops, params=int(sum(p.numel() for p in e.parameters())),
                              input_bits=int(sum(int(bits_per_sample[m]) for m in e.modalities)), name=e.name))
    return out
