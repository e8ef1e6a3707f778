"""sims.bench.semi_async: the figures it compares, on hand-made curves."""

from __future__ import annotations

import pytest

from sims.bench.common import mean_std
from sims.bench.semi_async import bench_config, compare


def curve(points):
    return [{"round": 0, "clock_s": 0.0, "accuracy": 0.0, "energy_j": 0.0}] + [
        {"round": i + 1, "clock_s": t, "accuracy": a, "energy_j": e} for i, (t, a, e) in enumerate(points)]


def test_time_and_energy_to_95_percent_of_the_synchronous_final_accuracy():
    sync = {"final_accuracy": 0.4, "curve": curve([(10.0, 0.2, 5.0), (20.0, 0.39, 5.0), (30.0, 0.4, 5.0)])}
    buff = {"final_accuracy": 0.42, "curve": curve([(2.0, 0.1, 1.0), (5.0, 0.38, 1.0), (6.0, 0.42, 1.0)])}
    c = compare(sync, buff)
    assert c["target_accuracy"] == pytest.approx(0.38)
    assert (c["sync_time_s"], c["fedbuff_time_s"]) == (20.0, 5.0) and c["time_ratio"] == pytest.approx(0.25)
    assert (c["sync_energy_j"], c["fedbuff_energy_j"]) == (10.0, 2.0)
    assert c["final_accuracy_ratio"] == pytest.approx(1.05)
    never = compare(sync, {"final_accuracy": 0.1, "curve": curve([(1.0, 0.1, 1.0)])})
    assert never["fedbuff_time_s"] is None and never["time_ratio"] is None and never["fedbuff_energy_j"] is None
    assert mean_std([1.0, 3.0, None]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2, "missing": 1}


def test_fedbuff_runs_twice_the_updates_with_half_the_devices_per_update():
    sync = bench_config("sync", 0, 12, 200, 6, 6, "random")
    buff = bench_config("fedbuff", 0, 12, 200, 6, 6, "random")
    assert (sync.federated.strategy, sync.federated.rounds, sync.federated.stage1_rounds) == ("expert_wise", 6, 3)
    assert (buff.federated.strategy, buff.federated.rounds, buff.federated.stage1_rounds) == ("fedbuff", 12, 6)
    assert (buff.federated.fedbuff.concurrency, buff.federated.fedbuff.buffer_size) == (6, 3)
