"""The multimodal mixture of experts: standardise, gate, compute only the selected experts, fuse, heads.

Forward pass for a batch (``docs/architecture.md``, "The model"; [P000] and [P001]):

1. inputs are standardised per feature with statistics fitted on training data
   (:meth:`MoE.fit_standardiser`); an absent modality (``present`` False) is zero;
2. the gate reads the cheap *gate modalities* (GPS and RF by default), the presence flags
   and, when given, each sample's cost vector ``C`` ([P001] eq. 9) and link quality
   ([P004]); experts whose modalities a sample lacks are unavailable to it;
3. only the (sample, expert) pairs the gate selects are computed — each expert runs on
   the sub-batch of samples that selected it, so an unselected expert costs nothing;
4. fusion ``z = Σ_d w_d z_d`` over the selected experts, then the task heads.

``MoEOutput.expert_samples`` counts, per expert, the samples it was computed on; the
FLOPs actually spent are ``Σ_e expert_samples[e] * flops[e]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fedmoe.config import MODALITIES
from fedmoe.data.samples import ISACSamples
from fedmoe.models.device_costs import modality_index
from fedmoe.models.heads import TaskHeads, TaskOutputs

DEFAULT_GATE_MODALITIES: tuple[str, ...] = ("gps", "rf")


@dataclass
class MoEOutput:
    tasks: TaskOutputs
    gate: object  # fedmoe.models.gates.GateOutput
    expert_samples: torch.Tensor  # (E,) int64: samples each expert was computed on
    gate_features: torch.Tensor | None = None  # (B, F) what the gate read (before side inputs)


class Standardiser(nn.Module):
    """Per-feature ``(x − mean) / std`` for each modality; statistics are buffers (saved with the model)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.modalities = tuple(shapes)
        for m, shape in shapes.items():
            self.register_buffer(f"mean_{m}", torch.zeros(shape))
            self.register_buffer(f"std_{m}", torch.ones(shape))

    def fit(self, samples: ISACSamples) -> None:
        """Fit mean and std on the samples that have each modality."""
        for m in self.modalities:
            rows = samples.has(m)
            if not rows.any():
                continue
            x = samples.inputs[m][rows].astype(np.float32)
            getattr(self, f"mean_{m}").copy_(torch.from_numpy(x.mean(0)))
            getattr(self, f"std_{m}").copy_(torch.from_numpy(x.std(0) + 1e-6))

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.modalities:
            if m not in inputs:
                continue
            expected = tuple(getattr(self, f"mean_{m}").shape)
            if tuple(inputs[m].shape[1:]) != expected:
                raise ValueError(f"input {m!r} has shape {tuple(inputs[m].shape[1:])} per sample, expected {expected}")
            x = (inputs[m].float() - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
            mask = present[:, MODALITIES.index(m)].view(-1, *([1] * (x.dim() - 1)))
            out[m] = x * mask
        return out


class MoE(nn.Module):
    """Experts + gate + fusion + task heads.

    Parameters
    ----------
    experts
        The modality experts (``fedmoe.models.experts.Expert``): each has ``modalities``,
        ``out_dim`` and ``forward(dict) -> (B, out_dim)``; all must share ``out_dim``.
    gate
        A gate (``fedmoe.models.gates``) built for ``gate_in_dim(...)`` inputs and
        ``len(experts)`` experts.
    shapes
        Input shape per modality (without the batch axis).
    num_beams
        Size of the beam codebook (classes of the beam head).
    gate_modalities
        Modalities whose (standardised) inputs the gate reads; they should be cheap.
    head_hidden
        Width of the task heads' shared hidden layer (0: linear heads).
    """

    def __init__(self, experts: Sequence[nn.Module], gate: nn.Module, shapes: dict[str, tuple[int, ...]],
                 num_beams: int, gate_modalities: Sequence[str] = DEFAULT_GATE_MODALITIES,
                 head_hidden: int = 0) -> None:
        super().__init__()
        if not experts:
            raise ValueError("a mixture needs at least one expert")
        dims = {int(e.out_dim) for e in experts}
        if len(dims) != 1:
            raise ValueError(f"all experts must have the same out_dim, got {sorted(dims)}")
        missing = sorted(({m for e in experts for m in e.modalities} | set(gate_modalities)) - set(shapes))
        if missing:
            raise ValueError(f"no input shape given for modalities {missing}")
        self.experts = nn.ModuleList(experts)
        self.gate = gate
        self.gate_modalities = tuple(gate_modalities)
        self.standardiser = Standardiser({m: tuple(s) for m, s in shapes.items()})
        read = {m for e in experts for m in e.modalities} | set(self.gate_modalities)
        self.read_modalities: tuple[str, ...] = tuple(m for m in shapes if m in read)
        """The modalities some expert or the gate reads; :meth:`prepare_inputs` standardises only these."""
        self.heads = TaskHeads(dims.pop(), num_beams, hidden=head_hidden)
        cols = [modality_index(e.modalities) for e in experts]
        needs = torch.zeros(len(experts), len(MODALITIES), dtype=torch.bool)
        for i, c in enumerate(cols):
            needs[i, c] = True
        self.register_buffer("expert_needs", needs)  # (E, M)

    @staticmethod
    def gate_in_dim(shapes: dict[str, tuple[int, ...]],
                    gate_modalities: Sequence[str] = DEFAULT_GATE_MODALITIES) -> int:
        """Width of the gate's feature input (before the cost vector the gate appends itself)."""
        return int(sum(np.prod(shapes[m]) for m in gate_modalities)) + len(MODALITIES)

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def fit_standardiser(self, samples: ISACSamples) -> None:
        self.standardiser.fit(samples)

    def available(self, present: torch.Tensor) -> torch.Tensor:
        """(B, E) bool: the sample has every modality the expert reads."""
        return ~((~present[:, None, :]) & self.expert_needs[None]).any(dim=2)

    def gate_features(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        parts = [x[m].flatten(1) for m in self.gate_modalities] + [present.float()]
        return torch.cat(parts, dim=1)

    def prepare_inputs(self, inputs: dict[str, torch.Tensor],
                       present: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(x, present)``: the standardised inputs of :attr:`read_modalities` (the others are dropped)
        and the presence mask as booleans; a ``ValueError`` when ``present`` is not ``(B, M)`` or an
        expert's modality is missing. What every forward pass starts with, and what a split-learning
        device computes before its experts (:mod:`fedmoe.split.device`)."""
        if present.dim() != 2 or present.shape[1] != len(MODALITIES):
            raise ValueError(f"present must have shape (B, {len(MODALITIES)}), got {tuple(present.shape)}")
        present = present.bool()
        x = self.standardiser({m: v for m, v in inputs.items() if m in self.read_modalities}, present)
        for e in self.experts:
            for m in e.modalities:
                if m not in x:
                    raise ValueError(f"expert {e.name!r} needs modality {m!r}, which the inputs lack")
        return x, present

    def expert_features(self, x: dict[str, torch.Tensor],
                        selected: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """``[(i, rows, z_i)]``: expert ``i``'s output on the batch rows that selected it.

        Experts selected by no row are not computed. This is the part of the forward pass a
        device runs in split learning (:mod:`fedmoe.split.device`).
        """
        pieces = []
        for i, expert in enumerate(self.experts):
            rows = torch.nonzero(selected[:, i], as_tuple=False).squeeze(1)
            if rows.numel():
                pieces.append((i, rows, _on_rows(expert, x, rows)))
        return pieces

    def combine(self, pieces: list[tuple[int, torch.Tensor, torch.Tensor]], weights: torch.Tensor,
                batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = Σ_d w_d z_d`` from :meth:`expert_features`' pieces; also the rows per expert (E,)."""
        z = torch.zeros(batch, self.heads.in_features, dtype=torch.float32, device=weights.device)
        counts = torch.zeros(self.num_experts, dtype=torch.int64)
        for i, rows, out in pieces:
            z = z.index_add(0, rows, weights.index_select(0, rows)[:, i:i + 1] * out)
            counts[i] = rows.numel()
        return z, counts

    def fuse(self, x: dict[str, torch.Tensor], weights: torch.Tensor,
             selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = Σ_d w_d z_d`` computing expert ``d`` only on the rows that selected it.

        Returns ``z`` (B, D) and the number of rows each expert was computed on (E,).
        """
        return self.combine(self.expert_features(x, selected), weights, selected.shape[0])

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor, costs: torch.Tensor | None = None,
                link_quality: torch.Tensor | None = None, detach_weights: bool = False) -> MoEOutput:
        """Gate, compute the selected experts, fuse, heads.

        ``detach_weights`` fuses with the values of the gate's weights only (no gradient
        from the task loss to the gate through them), for the score-function estimator.
        """
        x, present = self.prepare_inputs(inputs, present)
        features = self.gate_features(x, present)
        gate_out = self.gate(features, costs=costs, available=self.available(present), link_quality=link_quality)
        weights = gate_out.weights.detach() if detach_weights else gate_out.weights
        z, counts = self.fuse(x, weights, gate_out.selected)
        return MoEOutput(self.heads(z), gate_out, counts, features)

    def gate_logits(self, inputs: dict[str, torch.Tensor], present: torch.Tensor,
                    costs: torch.Tensor | None = None, link_quality: torch.Tensor | None = None) -> torch.Tensor:
        """(B, E) gate logits alone (``-inf`` at unavailable experts), without computing any expert.

        Only the gate's own modalities (``gate_modalities``) are read and standardised; ``inputs``
        may hold just those.
        """
        if present.dim() != 2 or present.shape[1] != len(MODALITIES):
            raise ValueError(f"present must have shape (B, {len(MODALITIES)}), got {tuple(present.shape)}")
        missing = [m for m in self.gate_modalities if m not in inputs]
        if missing:
            raise ValueError(f"the gate reads {missing}, which the inputs lack")
        present = present.bool()
        x = self.standardiser({m: inputs[m] for m in self.gate_modalities}, present)
        return self.gate.compute_logits(self.gate_features(x, present), costs, self.available(present), link_quality)

    def forward_uniform(self, inputs: dict[str, torch.Tensor], present: torch.Tensor,
                        active: torch.Tensor | None = None) -> tuple[TaskOutputs, torch.Tensor]:
        """Stage-I pass without the gate: equal weights over the ``active`` available experts.

        ``active`` (B, E) bool defaults to every available expert; rows left with no active
        expert fall back to all their available ones.
        """
        x, present = self.prepare_inputs(inputs, present)
        avail = self.available(present)
        sel = avail if active is None else (active.bool() & avail)
        sel = torch.where(sel.any(dim=1, keepdim=True), sel, avail)
        if not sel.any(dim=1).all():
            raise ValueError("some samples have no available expert (every modality missing?)")
        weights = sel.float() / sel.sum(dim=1, keepdim=True)
        z, counts = self.fuse(x, weights, sel)
        return self.heads(z), counts


    def forward_each(self, inputs: dict[str, torch.Tensor],
                     present: torch.Tensor) -> list[tuple[torch.Tensor, TaskOutputs]]:
        """Stage-I pass where every expert predicts alone: ``heads(z_i)`` on the rows it is available for.

        Returns one ``(rows, outputs)`` pair per expert with at least one available row
        (``rows`` are indices into the batch).
        """
        x, present = self.prepare_inputs(inputs, present)
        return [(rows, self.heads(z)) for _, rows, z in self.expert_features(x, self.available(present))]


def _on_rows(expert: nn.Module, x: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """The expert's output on the batch rows ``rows`` (it reads only its own modalities)."""
    return expert({m: x[m].index_select(0, rows) for m in expert.modalities})


def batch_tensors(samples: ISACSamples, index: np.ndarray | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                                                  dict[str, torch.Tensor]]:
    """Inputs, presence and labels of ``samples`` (rows ``index``) as tensors."""
    s = samples if index is None else samples.subset(index)
    inputs = {m: torch.from_numpy(np.ascontiguousarray(a)) for m, a in s.inputs.items()}
    labels = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in s.labels.items()}
    return inputs, torch.from_numpy(s.present), labels
