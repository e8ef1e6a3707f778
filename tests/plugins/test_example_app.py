"""examples/plain-flower-wireless: the "after" app differs from the plain Flower "before" by at most 15
lines, and runs on Ray with each of Flower's FedAvg, FedProx, FedAdam, FedMedian and Krum underneath."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys

import pytest

from tests.plugins.conftest import EXAMPLE

DRIVER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from flwr.simulation import run_simulation
from digits_app import server_app
from digits_app.client_app import app as client_app

out = {}
for name in sys.argv[2].split(","):
    server_app.DEFAULTS.update({"strategy": name, "num-server-rounds": 2})
    run_simulation(server_app=server_app.app, client_app=client_app, num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    strategy, result = server_app.RESULTS[-1]
    out[name] = {"train": {int(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
                 "evaluate": {int(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
                 "plans": [[int(d) for d in p.devices] for p in strategy.plans],
                 "planned_latency": [float(p.round_latency_s) for p in strategy.plans],
                 "rejected": strategy.base.rejected, "base": type(strategy.base.base).__name__}
print("RESULT " + json.dumps(out))
'''


def test_the_after_app_differs_from_the_plain_flower_app_by_at_most_15_lines():
    changed = 0
    for path in sorted((EXAMPLE / "before").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            after = EXAMPLE / "after" / path.relative_to(EXAMPLE / "before")
            diff = difflib.unified_diff(path.read_text().splitlines(), after.read_text().splitlines(), lineterm="")
            changed += sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    files = {p.relative_to(EXAMPLE / "after") for p in (EXAMPLE / "after").rglob("*.py")}
    assert files == {p.relative_to(EXAMPLE / "before") for p in (EXAMPLE / "before").rglob("*.py")}
    assert 0 < changed <= 15


def _run_on_ray(strategies: str, tmp_path) -> dict:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "FLWR_HOME": str(tmp_path / "flwr")}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(EXAMPLE / "after"), strategies], capture_output=True,
                          text=True, timeout=280, env=env, cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def _check(runs: dict) -> None:
    for name, run in runs.items():
        assert run["rejected"] == [], (name, run["rejected"])  # honest BatchNorm replies pass every round
        assert len(run["plans"]) == 2 and all(run["plans"]), name
        clock = 0.0
        for r in (1, 2):
            metrics = run["train"][str(r)]
            clock += metrics["round-latency-s"]
            assert metrics["clock-s"] == pytest.approx(clock)
            assert 0 < metrics["round-latency-s"] <= run["planned_latency"][r - 1] + 1e-12
        assert run["evaluate"]["2"]["eval_acc"] > 0.3, name  # ten classes: it learned something


def test_the_after_app_runs_on_ray_under_fedavg_and_fedmedian(tmp_path):
    runs = _run_on_ray("fedavg,fedmedian", tmp_path)
    assert {run["base"] for run in runs.values()} == {"FedAvg", "FedMedian"}
    _check(runs)


@pytest.mark.slow
def test_the_after_app_runs_on_ray_under_fedprox_fedadam_and_krum(tmp_path):
    runs = _run_on_ray("fedprox,fedadam,krum", tmp_path)
    assert {run["base"] for run in runs.values()} == {"FedProx", "FedAdam", "Krum"}
    _check(runs)
