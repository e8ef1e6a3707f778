"""The split-gating benchmark (sims.bench.split_gating): its bookkeeping, and a smoke run of --quick."""

from __future__ import annotations

import json

import pytest

from sims.bench import split_gating as bench


def test_stage2_epochs_cover_the_step_budget():
    assert bench.stage2_epochs_for(1500, 12800, 128) == 15
    assert bench.stage2_epochs_for(1500, 1077, 128) == 167  # 9 batches an epoch
    assert bench.stage2_epochs_for(1, 10, 128) == 1


def _runs():
    # two seeds, K=8, one SNR grid of 10/15/40 dB; aware beats naive by 4 points at low SNR and ties at 40 dB
    runs = []
    for seed in (0, 1):
        links = {}
        for link in bench.LINKS:
            links[link] = {"stage1": [0.5, 0.6, 0.9], "naive": [0.6, 0.7, 0.9],
                           "aware": [0.64, 0.74 - 0.02 * seed, 0.9]}
        runs.append({"num_experts": 8, "seed": seed, "ideal_accuracy": 0.9, "links": links})
    return runs


def test_summary_and_targets():
    rows = bench.summarise(_runs(), (10.0, 15.0, 40.0))
    assert len(rows) == 3 * len(bench.LINKS)
    r15 = next(r for r in rows if r["link"] == "analog" and r["snr_db"] == 15.0)
    assert r15["gain_per_seed"] == pytest.approx([0.04, 0.02])
    assert r15["gain_mean"] == pytest.approx(0.03)
    t = bench.targets(rows, (8,))
    assert t["analog"]["low_snr"]["met"] and t["analog"]["low_snr"]["gain_by_snr_db"] == pytest.approx(
        {"10": 0.04, "15": 0.03})
    assert t["analog"]["high_snr"]["met"]  # a tie at 40 dB is not worse
    rows[1]["aware_mean"] -= 0.011  # 15 dB analog below +3 points
    rows[1]["gain_mean"] = rows[1]["aware_mean"] - rows[1]["naive_mean"]
    assert bench.targets(rows, (8,))["analog"]["low_snr"]["status"] == "MISSED"


def test_quick_run_writes_json_and_plots(tmp_path):
    out = tmp_path / "split_gating.json"
    doc = bench.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["datasets"]) == {"digits", "isac"}
    for ds in saved["datasets"].values():
        assert {r["link"] for r in ds["grid"]} == set(bench.LINKS)
        assert all(len(r["aware"]) == len(r["naive"]) == 1 for r in ds["grid"])
    assert saved["targets"] == doc["targets"]
    assert out.with_suffix(".png").exists() and (tmp_path / "split_gating_k.png").exists()
