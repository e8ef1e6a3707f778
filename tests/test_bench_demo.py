"""The main job's benchmark (``sims/bench/demo.py``): its targets on hand values and its committed result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sims.bench.common import machine, target
from sims.bench.demo import DEFAULT_OUT, demo_targets


def summary(accuracy=0.9, centralised=1.0, los=0.2, blocked=0.3) -> dict:
    return {"accuracy": accuracy, "centralised_accuracy": centralised, "costly_share_los": los,
            "costly_share_blocked": blocked}


@pytest.mark.parametrize("wall, s, met", [
    (180.0, summary(0.85, 1.0, 0.25, 0.375), (True, True, True)),  # every goal exactly
    (180.5, summary(0.849, 1.0, 0.25, 0.374), (False, False, False)),  # each just missed
    (100.0, summary(0.5, 0.5, 0.0, 0.1), (True, True, True)),  # no costly sensor in LoS: any blocked share passes
    (100.0, summary(0.9, 1.0, 0.0, 0.0), (True, True, False)),  # ... but not none at all
])
def test_targets_on_hand_values(wall, s, met):
    t = demo_targets(wall, s)
    assert [t[k]["met"] for k in ("demo_wall_s", "demo_accuracy_ratio", "demo_costly_blocked_over_los")] == list(met)
    assert t["demo_wall_s"]["value"] == wall
    assert t["demo_accuracy_ratio"]["value"] == pytest.approx(s["accuracy"] / s["centralised_accuracy"])
    assert all(set(v) == {"value", "goal", "met"} for v in t.values())


def test_the_committed_result_agrees_with_its_own_runs():
    doc = json.loads(Path(DEFAULT_OUT).read_text())
    assert doc["runs"][0]["reference_cache"] == "empty"
    assert doc["targets"] == demo_targets(doc["runs"][0]["wall_s"], doc["summary"])
    assert not any("/tmp" in line for r in doc["runs"] for line in r["result_lines"])


def test_machine_and_target_entries():
    info = machine(threads=3)
    assert info["cpus"] >= 1 and info["threads"] == 3 and "python" in info and "torch" in info
    assert target(1.0, ">= 1", 1.0 >= 1, note="x") == {"value": 1.0, "goal": ">= 1", "met": True, "note": "x"}
