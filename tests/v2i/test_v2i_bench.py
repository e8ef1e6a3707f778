"""The V2I benchmark (sims.bench.v2i): a smoke run of --quick and its target bookkeeping."""

from __future__ import annotations

import json

import pytest

from sims.bench import v2i as bench


def test_quick_run_writes_json_and_plots(tmp_path):
    out = tmp_path / "v2i.json"
    doc = bench.main(["--quick", "--agents", "hetero_moe,ppo_mlp", "--out", str(out)])
    saved = json.loads(out.read_text())
    rows = saved["results"]["10"]
    assert {"vision_only", "radar_only", "oracle", "hetero_moe", "ppo_mlp"} <= set(rows)
    assert rows["vision_only"]["energy_j"] == pytest.approx(40.0)
    assert rows["oracle"]["gap_to_bound"] == pytest.approx(0.0, abs=0.01)
    assert len({r["lower_bound_j"] for r in rows.values()}) == 1  # every policy on the same episodes
    assert saved["targets"] == doc["targets"] and "energy_at_10db_le_20j" in saved["targets"]
    assert out.with_suffix(".png").stat().st_size > 0 and (tmp_path / "v2i_training.png").stat().st_size > 0


def test_targets_read_the_10db_row():
    row = {"energy_j": 19.5, "reliable_slots": 0.995, "gap_to_bound": 0.03, "lower_bound_j": 19.0}
    t = bench.targets({"results": {"10": {"hetero_moe": row}}})
    assert (t["energy_at_10db_le_20j"]["met"] and t["reliable_slots_ge_99pct"]["met"]
            and t["within_5pct_of_exact_bound"]["met"])
    t = bench.targets({"results": {"10": {"hetero_moe": {**row, "gap_to_bound": 0.06}}}})
    assert not t["within_5pct_of_exact_bound"]["met"]


def test_unknown_agent_fails_before_training(tmp_path):
    with pytest.raises(KeyError, match="nope"):
        bench.main(["--quick", "--agents", "nope", "--out", str(tmp_path / "x.json")])
