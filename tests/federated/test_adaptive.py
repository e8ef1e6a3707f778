"""The default (adaptive) scenario in federated training: scores, costly shares, bits by link class, the cached
centralised reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedmoe.federated import reference
from fedmoe.scenarios import load_scenario
from fedmoe.strategies.server_app import serve
from tests.federated.conftest import LocalGrid

SMALL = {"partition": {"num_devices": 4, "samples_per_device": 160},
         "train": {"stage1_epochs": 3, "stage2_epochs": 2},
         "federated": {"rounds": 3, "stage1_rounds": 2, "local_epochs": 3, "clients_per_round": 4,
                       "test_samples": 300, "deadline_s": 1000.0, "checkpoint_every": 0}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = load_scenario("default", SMALL)
    assert cfg.train.gate_estimator == "oracle_routing" and cfg.train.score.main == "topk"
    out = tmp_path_factory.mktemp("adaptive")
    return cfg, out, serve(LocalGrid(4), cfg, out)


def test_summary_leads_with_the_main_score_and_reports_the_policy(run):
    cfg, out, result = run
    s = result.metrics["summary"]
    last = [r for r in result.metrics["rounds"] if "accuracy" in r][-1]
    assert s["score"] == "topk" and s["accuracy"] == last["topk"] and s["top1"] == last["top1"]
    assert s["top1"] <= s["topk"] <= 1.0 and s["power_ratio_db"] <= 0.0
    assert 0.0 <= s["costly_share_los"] <= 1.0 and 0.0 <= s["costly_share_blocked"] <= 1.0
    assert set(s["uplink_bits_by_class"]) >= {"all"} and set(s["uplink_bits_by_class"]) - {"all"} <= {
        "weak", "medium", "strong"}
    # A selection reads GPS at least (192 bits) and at most GPS + RF + radar.
    bits = cfg.data.sensors
    most = 6 * 32 + bits.rf_beams * 16 + 2 * bits.radar_range_bins * bits.radar_angle_bins * 16
    assert all(192 <= b <= most for b in s["uplink_bits_by_class"].values())
    # The gate picks one expert per sample: its choice by link class sums to 1 for every class it served.
    by_class = last["gate_usage_by_class"]
    assert set(by_class) == set(last["uplink_bits"]) - {"all"}
    assert all(np.isclose(sum(u), 1.0) for u in by_class.values())
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["summary"]["centralised_accuracy"] == pytest.approx(s["centralised_accuracy"])


def test_stage_one_trains_every_expert_and_stage_two_only_the_gate(run):
    """Stage I: every expert on every sample. Stage II (frozen experts): no expert is trained or sent, so a
    device uploads the shared group only."""
    cfg, _, result = run
    assert not cfg.train.routing_trains_experts
    rounds = result.metrics["rounds"]
    stage1 = [r for r in rounds if r.get("stage") == 1]
    stage2 = [r for r in rounds if r.get("stage") == 2]
    assert stage1 and all(np.allclose(u, 1.0) for r in stage1 for u in r["usage_by_class"].values())
    assert stage2 and all(np.allclose(u, 0.0) for r in stage2 for u in r["usage_by_class"].values())
    assert max(r["upload_bits"] for r in stage2) < 0.5 * min(r["upload_bits"] for r in stage1)


def test_centralised_reference_is_cached_per_configuration(run, monkeypatch):
    cfg, _, result = run
    ref = result.metrics["centralised"]
    assert ref["accuracy"] == result.metrics["summary"]["centralised_accuracy"]
    path = reference.cache_dir() / f"{cfg.name}-{reference.reference_key(cfg)}.json"
    assert json.loads(path.read_text()) == ref

    def must_not_train(_cfg):
        raise AssertionError("the cached reference was trained again")

    monkeypatch.setattr(reference, "_train_reference", must_not_train)
    assert reference.centralised_reference(cfg) == ref
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"cost_weight": 7.0})})
    assert reference.reference_key(other) != reference.reference_key(cfg)
    with pytest.raises(AssertionError, match="trained again"):
        reference.centralised_reference(other)
    path.write_text('{"accuracy": "not a number"}')  # a damaged cache file is not trusted
    with pytest.raises(AssertionError, match="trained again"):
        reference.centralised_reference(cfg)
