"""One centralised experiment: data, mixture, per-device costs, two-stage training, test summary.

``fedmoe train``, ``fedmoe sweep`` and ``sims/bench/pareto.py`` all go through
:func:`run_centralised`, so a number in the benchmark and the CLI's report are produced by
the same code. The data are generated once (:func:`make_split`) and may be shared by
many runs; each run builds its own model from ``cfg.model`` and gives every sample the
cost vector of its device (:func:`fedmoe.models.builder.device_costs_for_samples`, the same
devices for every model because the seed is the data seed).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmoe.config import FedMoEConfig
from fedmoe.data.samples import ISACSamples
from fedmoe.models.builder import SampleCosts, build_moe, device_costs_for_samples
from fedmoe.models.moe import MoE
from fedmoe.training import EpochReport, evaluate, summarise, train


@dataclass
class Split:
    """Training and test samples of one generated dataset (train rows first)."""

    train: ISACSamples
    test: ISACSamples

    @property
    def num_samples(self) -> int:
        return len(self.train) + len(self.test)


@dataclass
class CentralisedRun:
    """A trained mixture with its per-epoch diagnostics and test summary."""

    model: MoE
    costs: SampleCosts
    reports: list[EpochReport]
    summary: dict


def make_split(cfg: FedMoEConfig, num_samples: int, seed: int, progress: bool = False) -> Split:
    """Generate ``num_samples`` synthetic samples and split them by ``cfg.data.test_fraction``."""
    from fedmoe.data.synthetic import generate, train_test_split

    samples = generate(cfg.data, cfg.wireless.channel, num_samples, seed, progress=progress)
    train_set, test_set = train_test_split(samples, cfg.data.test_fraction, cfg.data.seed)
    return Split(train_set, test_set)


def run_centralised(cfg: FedMoEConfig, split: Split, progress: bool = False) -> CentralisedRun:
    """Build the mixture of ``cfg.model``, train it with ``cfg.train`` and summarise it on the test split.

    The summary (:func:`fedmoe.training.summarise`) holds test accuracy by condition, mean
    FLOPs, latency and energy per sample of what the gate selected, and how often a
    costly modality was chosen for LoS and for blocked samples.
    """
    model = build_moe(cfg.model, split.train.input_shapes, cfg.wireless.channel.codebook_size)
    costs = device_costs_for_samples(model.experts, split.train.bits_per_sample, cfg.wireless,
                                     cfg.partition.num_devices, split.num_samples, cfg.data.seed,
                                     cfg.model.latency_weight)
    n = len(split.train)
    c_train, c_test = costs.per_sample[:n], costs.per_sample[n:]
    reports = train(model, split.train, cfg.train, c_train, split.test, c_test, progress=progress)
    final = evaluate(model, split.test, c_test, top_k=cfg.train.score.top_k)
    summary = summarise(final, split.test, model, costs, slice(n, None))
    summary["experts"] = [e.name for e in model.experts]
    return CentralisedRun(model, costs, reports, summary)
