"""Build a mixture from the config, and give every sample the cost vector of its device.

:func:`build_moe` instantiates experts (:mod:`fedmoe.models.experts`), gate
(:mod:`fedmoe.models.gates`) and :class:`~fedmoe.models.moe.MoE` from
:class:`~fedmoe.config.ModelConfig`. :func:`device_costs_for_samples` drops devices with the
wireless layer, shares the uplink equally among them (``⌊N_rb / K⌋`` resource blocks
each), assigns each sample to a device and returns the per-sample cost vectors ``C``
(:mod:`fedmoe.models.device_costs`) with the underlying latency and energy matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from fedmoe.config import ModelConfig, WirelessConfig
from fedmoe.models.device_costs import (
    CostMatrices,
    ExpertFootprint,
    expert_cost_matrices,
    selection_bits,
    selection_latency_energy,
)
from fedmoe.models.experts import ExpertCost, build_experts, default_expert_specs, expert_costs
from fedmoe.models.gate_backbones import GATE_BACKBONES
from fedmoe.models.gates import GATES, TopNGate
from fedmoe.models.moe import MoE
from fedmoe.wireless.devices import DeviceProfiles, equal_share_rate, sample_device_profiles


def check_model_names(cfg: ModelConfig) -> None:
    """An :class:`~fedmoe.registry.UnknownNameError` naming the field if ``model.gate`` or
    ``model.gate_backbone`` is not registered (commands call it before generating data)."""
    GATES.check(cfg.gate, "model.gate")
    GATE_BACKBONES.check(cfg.gate_backbone, "model.gate_backbone")


def build_moe(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], num_beams: int) -> MoE:
    """The mixture described by ``cfg`` for inputs of ``shapes``."""
    missing = sorted({m for s in cfg.subsets for m in s} - set(shapes))
    if missing:
        raise ValueError(f"model.subsets read modalities {missing}, which the data lacks (it has {sorted(shapes)})")
    single = tuple(m for m in cfg.modalities if m in shapes)
    if not single and not cfg.subsets:
        raise ValueError(f"no expert can be built: model.modalities {list(cfg.modalities)} are not in the data "
                         f"(it has {sorted(shapes)}) and model.subsets is empty")
    groups = {*single, *("+".join(sub) for sub in cfg.subsets)}
    widths = {g: w * 3 if len(w) == 1 else w for g, w in cfg.expert_widths.items() if g in groups}
    specs = default_expert_specs(cfg.experts_per_modality, single, subsets=cfg.subsets, widths=widths)
    experts = build_experts(specs, shapes, cfg.expert_dim)
    gate_cls = GATES.get(cfg.gate)
    kwargs = {"use_costs": cfg.use_costs, "backbone": cfg.gate_backbone}
    if issubclass(gate_cls, TopNGate):
        kwargs["top_n"] = min(cfg.top_n, len(experts))
    gate = gate_cls(MoE.gate_in_dim(shapes, cfg.gate_modalities), len(experts), **kwargs)
    return MoE(experts, gate, shapes, num_beams, cfg.gate_modalities, cfg.head_hidden)


@dataclass
class SampleCosts:
    """Per-sample cost vectors and what they come from."""

    per_sample: np.ndarray  # (N, E) normalised C of the sample's device
    device: np.ndarray  # (N,) device index of each sample
    matrices: CostMatrices  # (K, E) latency, energy, cost
    experts: list[ExpertCost]
    footprints: list[ExpertFootprint]
    profiles: DeviceProfiles
    rate_bps: np.ndarray  # (K,)
    bits_per_sample: dict[str, int]

    def of_selection(self, selected: np.ndarray,
                     rows: slice | np.ndarray = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample latency (s) and energy (J) of ``selected`` (N, E) for samples ``rows``
        (:func:`fedmoe.models.device_costs.selection_latency_energy`: each modality counted once)."""
        return selection_latency_energy(selected, self.device[rows], self.footprints, self.profiles, self.rate_bps,
                                        self.bits_per_sample)

    def bits_of_selection(self, selected: np.ndarray) -> np.ndarray:
        """Uplink bits of ``selected`` (N, E) per sample, each modality sent once
        (:func:`fedmoe.models.device_costs.selection_bits`)."""
        return selection_bits(selected, self.footprints, self.profiles.modalities, self.bits_per_sample)


def device_costs_for_samples(experts: nn.ModuleList, bits_per_sample: dict[str, int], wireless: WirelessConfig,
                             num_devices: int, num_samples: int, seed: int, latency_weight: float = 0.5,
                             counted: list[ExpertCost] | None = None) -> SampleCosts:
    """Drop ``num_devices`` devices, share the uplink equally, and assign samples to devices at random.

    ``counted`` are the experts' :func:`~fedmoe.models.cost.expert_costs` when the caller
    already has them (counting FLOPs runs every expert once).
    """
    rng = np.random.default_rng(seed)
    profiles = sample_device_profiles(wireless, num_devices, rng)
    rate = equal_share_rate(profiles, wireless)
    costs = counted if counted is not None else expert_costs(experts, bits_per_sample=bits_per_sample)
    footprints = [ExpertFootprint(c.flops_per_sample, c.input_bits, e.modalities) for e, c in zip(experts, costs)]
    matrices = expert_cost_matrices(footprints, profiles, rate, latency_weight)
    device = rng.integers(0, num_devices, num_samples)
    return SampleCosts(matrices.cost[device].astype(np.float32), device, matrices, costs, footprints, profiles,
                       np.asarray(rate, dtype=np.float64), dict(bits_per_sample))
