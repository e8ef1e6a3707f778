"""Server-side evaluation of the global mixture after each round, and checkpoints.

The held-out set is :meth:`ScenarioWorld.server_test_set` (a stream no device draws). Each
test sample is given a device of the cell and that device's cost vector at an equal
uplink share (:func:`fedmoe.models.builder.device_costs_for_samples`, as the centralised
runner does), so the accuracy *and* the per-sample inference latency and energy of what
the gate selects are comparable with ``fedmoe train``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from fedmoe.data.samples import ISACSamples
from fedmoe.federated.local import load_model
from fedmoe.federated.world import ScenarioWorld
from fedmoe.files import write_atomic
from fedmoe.models.builder import device_costs_for_samples
from fedmoe.training import evaluate, summarise

log = logging.getLogger(__name__)


@dataclass
class ServerEvaluator:
    """``evaluate(round, arrays)`` on the server's held-out set every ``every`` rounds (and the last),
    saving a checkpoint every ``checkpoint_every`` rounds (and the last) into ``checkpoint_dir``.
    ``held_out`` replaces the test set (e.g. :meth:`ScenarioWorld.server_validation_set`)."""

    world: ScenarioWorld
    last_round: int
    every: int = 1
    checkpoint_every: int = 0
    checkpoint_dir: Path | None = None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    held_out: ISACSamples | None = None

    def __post_init__(self) -> None:
        self.test = self.world.server_test_set() if self.held_out is None else self.held_out
        model = self.world.template
        cfg = self.world.cfg
        self.costs = device_costs_for_samples(model.experts, self.test.bits_per_sample, cfg.wireless,
                                              cfg.partition.num_devices, len(self.test), cfg.data.seed,
                                              cfg.model.latency_weight, counted=self.world.expert_costs)

    def due(self, server_round: int) -> bool:
        return server_round == 0 or server_round == self.last_round or server_round % self.every == 0

    def evaluate(self, server_round: int, arrays: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
        """Test metrics of the global model (None when no evaluation is due this round)."""
        self._checkpoint(server_round, arrays)
        if not self.due(server_round):
            return None
        model = load_model(self.world, arrays)
        final = evaluate(model, self.test, self.costs.per_sample, top_k=self.world.cfg.train.score.top_k)
        summary = summarise(final, self.test, model, self.costs, slice(None))
        out = evaluation_row(summary, self.world.cfg.train.score.main)
        out["gate_entropy"] = float(final["gate_entropy"])
        self.results[server_round] = out
        return out

    def _checkpoint(self, server_round: int, arrays: Mapping[str, np.ndarray]) -> None:
        if self.checkpoint_dir is None or server_round == 0:
            return
        last = server_round == self.last_round
        if not last and not (self.checkpoint_every and server_round % self.checkpoint_every == 0):
            return
        state = {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}
        name = "final.pt" if last else f"round_{server_round:04d}.pt"
        # a reader never sees half a file
        write_atomic(self.checkpoint_dir / name, lambda f: torch.save({"round": server_round, "state_dict": state}, f))


def evaluation_row(summary: dict[str, Any], main_score: str) -> dict[str, Any]:
    """One round's test metrics from a :func:`fedmoe.training.summarise` summary.

    ``accuracy`` (and ``accuracy_los``, ``accuracy_blocked``) is the scenario's main score
    (``train.score.main``, named in ``score``); ``top1``, ``topk`` and ``power_ratio_db`` are
    all three scores over all samples; ``costly_share_los`` and ``costly_share_blocked`` the
    share of LoS and of blocked samples whose selection reads camera, lidar or radar;
    ``uplink_bits`` the mean bits per sample and ``gate_usage_by_class`` each expert's share of
    the samples, by link class (the round's ``usage_by_class`` is the devices' training usage).
    """
    main = summary["scores"][main_score]
    return {
        "score": main_score,
        "accuracy": main["all"], "accuracy_los": main["los"], "accuracy_blocked": main["blocked"],
        **{name: values["all"] for name, values in summary["scores"].items()},
        "inference_latency_s": summary["mean_latency_s"],
        "inference_energy_j": summary["mean_energy_j"],
        "costly_share_los": summary["costly_rate"]["los"],
        "costly_share_blocked": summary["costly_rate"]["blocked"],
        "uplink_bits": summary["uplink_bits"],
        "usage": [float(u) for u in summary["usage"]],
        "usage_by_condition": summary["usage_by_condition"],
        "gate_usage_by_class": summary["usage_by_class"],
    }
