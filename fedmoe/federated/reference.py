"""The centralised reference of a federated run: the same model and λ trained on the union of the devices' data.

A federated mixture is judged against what the same model, objective and ``λ`` reach
when one machine holds every device's training samples
(:meth:`~fedmoe.federated.world.ScenarioWorld.partition` of each device, concatenated) and trains them with
``cfg.train`` (stage-I and stage-II epochs); it is scored on the server's held-out set with
the same per-sample device costs as the federated evaluation
(:class:`fedmoe.federated.evaluation.ServerEvaluator`). The result depends only on the
configuration, so it is computed once per configuration and kept as JSON in a cache
folder (``$FEDMOE_CACHE``, default ``~/.cache/fedmoe``), named by the scenario and a
hash of every setting it depends on. A cache file is plain JSON (never unpickled) and is
checked before use; a damaged one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from fedmoe.config import FedMoEConfig
from fedmoe.files import write_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "FEDMOE_CACHE"
REFERENCE_KEYS = ("score", "accuracy", "accuracy_los", "accuracy_blocked", "top1", "topk", "power_ratio_db",
                  "costly_share_los", "costly_share_blocked", "inference_energy_j", "inference_latency_s")


def cache_dir() -> Path:
    """Where references are cached: ``$FEDMOE_CACHE`` or ``~/.cache/fedmoe``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fedmoe") / "centralised"


def reference_key(cfg: FedMoEConfig) -> str:
    """A hash of every setting the reference depends on (data, radio, partition, model, training, test set)."""
    parts = cfg.model_dump(mode="json", include={"data", "wireless", "partition", "model", "train"})
    parts["test_samples"] = cfg.federated.test_samples
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def centralised_reference(cfg: FedMoEConfig, use_cache: bool = True) -> dict[str, Any]:
    """The centralised row (:func:`fedmoe.federated.evaluation.evaluation_row` keys, see the module docstring)."""
    path = cache_dir() / f"{cfg.name}-{reference_key(cfg)}.json"
    if use_cache:
        cached = _read(path)
        if cached is not None:
            return cached
    row = _train_reference(cfg)
    if use_cache:
        try:
            write_atomic(path, json.dumps(row, indent=2).encode())
        except OSError as err:  # a read-only home is no reason to fail the run
            log.warning("could not cache the centralised reference in %s: %s", path, err)
    return row


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or set(REFERENCE_KEYS) - set(data):
        return None
    ok = all(isinstance(data[k], (int, float)) and not isinstance(data[k], bool)
             for k in REFERENCE_KEYS if k != "score")
    return data if ok and isinstance(data["score"], str) else None


def _train_reference(cfg: FedMoEConfig) -> dict[str, Any]:
    from fedmoe.data.samples import ISACSamples
    from fedmoe.federated.evaluation import evaluation_row
    from fedmoe.federated.world import ScenarioWorld
    from fedmoe.models.builder import device_costs_for_samples
    from fedmoe.training import evaluate, summarise, train

    world = ScenarioWorld(cfg)
    union = ISACSamples.concat([world.partition(k).samples for k in range(cfg.partition.num_devices)])
    test = world.server_test_set()
    model = world.new_model()
    n = len(union)
    costs = device_costs_for_samples(model.experts, union.bits_per_sample, cfg.wireless, cfg.partition.num_devices,
                                     n + len(test), cfg.data.seed, cfg.model.latency_weight,
                                     counted=world.expert_costs)
    log.info("training the centralised reference on the union of the devices' %d samples", n)
    train(model, union, cfg.train, costs.per_sample[:n], diagnostics=False)
    final = evaluate(model, test, costs.per_sample[n:], top_k=cfg.train.score.top_k)
    row = evaluation_row(summarise(final, test, model, costs, slice(n, None)), cfg.train.score.main)
    return {k: row[k] for k in REFERENCE_KEYS}
