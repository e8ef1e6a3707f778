"""Distributed experts on Flower messages ([P004]): deployment, routing through the devices, the CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fedmoe.config import deep_merge
from fedmoe.flower import array_of, to_numpy
from fedmoe.scenarios import load_scenario
from fedmoe.strategies.distributed_experts import DistributedExperts
from tests.conftest import run_cli_on_ray
from tests.federated.conftest import LocalGrid

SMALL = {"partition": {"num_devices": 4, "samples_per_device": 48},
         "distributed": {"dataset": "digits", "num_experts": 3, "stage1_epochs": 15, "stage2_epochs": 1,
                         "hidden": 32, "feature_dim": 16, "eval_snr_db": [0.0, 40.0]}}


def small_config(**sections):
    return load_scenario("distributed", deep_merge(SMALL, sections))


@pytest.fixture(scope="module")
def run():
    cfg = small_config()
    grid = LocalGrid(cfg.partition.num_devices)
    doc, models = DistributedExperts(cfg).run(grid)
    return cfg, grid, doc, models


def test_devices_compute_exactly_what_the_server_would(run):
    _, _, doc, _ = run
    for gate in ("naive", "aware"):
        for res in doc["results"][gate].values():
            assert res["max_abs_diff_vs_server"] < 1e-5  # float round-off of a different batch split
            assert sum(res["route_share"]) == doc["test_samples"]
            assert 0.0 <= res["accuracy"] <= 1.0 and res["latency_s"] > 0 and res["energy_j"] > 0


def _numpy_mlp(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Independent reference of a deployed expert: its linear layers (in index order) with ReLU between, in numpy."""
    layers = sorted({int(k.split(".")[0]) for k in params})
    h = z.astype(np.float64)
    for i, layer in enumerate(layers):
        h = h @ params[f"{layer}.weight"].T.astype(np.float64) + params[f"{layer}.bias"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def test_each_device_runs_the_expert_it_was_sent_on_the_features_it_was_sent(run):
    """Recomputed here from the messages themselves: every ``infer`` reply equals the numpy forward pass of the
    parameters deployed to that node on the features sent to it (not the strategy's own comparison)."""
    _, grid, doc, _ = run
    deployed: dict[int, dict[str, np.ndarray]] = {}
    checked = 0
    for msg, reply in grid.exchanges:
        phase, node = msg.content["config"].get("phase"), msg.metadata.dst_node_id
        if phase == "deploy":
            deployed[node] = to_numpy(msg.content["arrays"])
        elif phase == "infer":
            z, out = to_numpy(msg.content["arrays"])["z"], to_numpy(reply.content["arrays"])["out"]
            np.testing.assert_allclose(out, _numpy_mlp(deployed[node], z), rtol=1e-4, atol=1e-5)
            checked += len(z)
    assert checked == doc["test_samples"] * len(doc["results"]) * len(doc["results"]["naive"])  # every test row


def test_only_expert_devices_get_work_and_low_snr_hurts(run):
    cfg, grid, doc, _ = run
    infer = [m for m in grid.sent if m.content["config"].get("phase") == "infer"]
    assert infer and {m.metadata.dst_node_id for m in infer} <= {1, 2, 3}  # node 4 hosts no expert
    naive = doc["results"]["naive"]
    assert naive["40"]["accuracy"] > naive["0"]["accuracy"] + 0.05
    assert doc["ideal_link_accuracy"] >= naive["40"]["accuracy"] - 0.02


def _logits_edit(fn):
    """A tamper on an expert device's inference replies: ``fn(out) -> out`` on its logits, or a whole ``Array``."""
    from flwr.app import Array, ArrayRecord

    def tamper(reply):
        record = reply.content.array_records.get("arrays")
        if record is None or "out" not in record:
            return  # the deploy acknowledgement
        new = fn(to_numpy(record)["out"])
        reply.content["arrays"] = ArrayRecord({"out": new if isinstance(new, Array) else array_of(new)})
    return tamper


def _garbage(out):
    from flwr.app import Array

    return Array(dtype="float32", shape=tuple(out.shape), stype="numpy.ndarray", data=b"\x00" * 15)


@pytest.mark.parametrize("name, fn, reason", [
    ("nan", lambda out: out * np.nan, "holds NaN or Inf"),
    ("fewer_rows", lambda out: out[:-1].copy(), "has shape"),
    ("float64", lambda out: out.astype(np.float64), "dtype"),
    ("garbage", _garbage, "not a .npy blob"),
])
def test_a_hostile_expert_reply_is_refused_and_its_rows_count_as_wrong(run, name, fn, reason, caplog):
    """Device 1 (node 2) answers every inference with a malformed reply: it is refused with a reason,
    its rows count as misclassified, the other experts' rows as before, and the evaluation finishes."""
    cfg, _, honest, _ = run
    grid = LocalGrid(cfg.partition.num_devices, tamper={2: _logits_edit(fn)}, tamper_on="query.expert")
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.distributed_experts"):
        doc, _ = DistributedExperts(cfg).run(grid)
    assert "refused" in caplog.text and not doc["deploy_failures"]
    for gate, by_snr in doc["results"].items():
        for snr, res in by_snr.items():
            ref = honest["results"][gate][snr]
            routed_to_1 = int(res["route_share"][1])
            assert res["unanswered_rows"] == routed_to_1 and ref["unanswered_rows"] == 0
            if routed_to_1:
                assert res["failures"] and all(f.startswith("expert device 1: ") for f in res["failures"])
                assert any(reason in f for f in res["failures"]), res["failures"]
            assert res["accuracy"] <= ref["accuracy"] and res["max_abs_diff_vs_server"] < 1e-5


def test_a_failing_expert_device_does_not_end_the_evaluation():
    cfg = small_config()
    grid = LocalGrid(cfg.partition.num_devices)
    grid.answer = lambda msg, answer=grid.answer: (
        _raise() if msg.metadata.dst_node_id == 3 and msg.metadata.message_type == "query.expert" else answer(msg))
    doc, _ = DistributedExperts(cfg).run(grid)
    assert doc["deploy_failures"] == ["expert device 2: device 2 crashed"]
    res = doc["results"]["naive"]["40"]
    assert res["unanswered_rows"] == int(res["route_share"][2]) > 0
    assert any("expert device 2: " in f for f in res["failures"])


def _raise():
    raise RuntimeError("device 2 crashed")


def test_too_few_devices_for_the_experts_is_an_error():
    with pytest.raises(ValueError, match="num_experts=3 needs as many devices"):
        DistributedExperts(small_config(partition={"num_devices": 2}))


def test_distributed_experts_on_ray_through_the_cli(tmp_path, capsys):
    sets = ["partition.num_devices=3", "distributed.dataset=digits", "distributed.num_experts=3",
            "distributed.stage1_epochs=2", "distributed.stage2_epochs=1", "distributed.eval_snr_db=[10.0, 30.0]"]
    assert run_cli_on_ray("distributed", tmp_path, sets) == 0
    out = capsys.readouterr().out
    assert "channel-aware gate" in out and "30.0 dB" in out
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert set(doc["results"]["aware"]) == {"10", "30"}
    assert (tmp_path / "accuracy_vs_snr.png").is_file()
