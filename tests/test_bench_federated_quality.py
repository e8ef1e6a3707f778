"""sims/bench/federated_quality: the targets come from hand-made curves as the issue defines them, the best MoE
variant is chosen by validation accuracy (never the test set), and a seed that never reaches FedAvg's accuracy
fails the target."""

from __future__ import annotations

import pytest

from sims.bench.federated_quality import against_fedavg, cost_to_accuracy, summarise


def run(accuracies, clock, energy, final=None, validation=None):
    curve = [{"round": i, "clock_s": c, "energy_j": e, "accuracy": a}
             for i, (a, c, e) in enumerate(zip(accuracies, clock, energy))]
    return {"summary": {"accuracy": accuracies[-1] if final is None else final, "virtual_time_s": clock[-1],
                        "energy_j": sum(energy)}, "curve": curve, "validation_accuracy": validation}


FEDAVG = run([0.1, 0.5, 0.6, 0.7], [0, 100, 200, 300], [0, 10, 10, 10])  # its final 0.7 at t=300, E=30


def test_cost_to_accuracy_counts_time_and_energy_up_to_the_first_round_at_the_threshold():
    assert cost_to_accuracy(FEDAVG["curve"], 0.7) == (300.0, 30.0)
    assert cost_to_accuracy(FEDAVG["curve"], 0.55) == (200.0, 20.0)
    assert cost_to_accuracy(FEDAVG["curve"], 0.05) == (0.0, 0.0)  # round 0, before training, costs nothing
    assert cost_to_accuracy(FEDAVG["curve"], 0.9) is None
    skipped = [{"round": 1, "clock_s": 5, "energy_j": 2, "accuracy": None},
               {"round": 2, "clock_s": 9, "energy_j": 3, "accuracy": 0.8}]
    assert cost_to_accuracy(skipped, 0.8) == (9.0, 5.0)  # energy of rounds without an evaluation still counts


def test_ratios_against_fedavg_and_the_centralised_accuracy():
    moe = run([0.1, 0.72, 0.75], [0, 60, 120], [0, 3, 3])
    r = against_fedavg(moe, FEDAVG, {"accuracy": 0.8})
    assert r["accuracy_ratio"] == pytest.approx(0.75 / 0.8)
    assert r["time_to_fedavg_ratio"] == pytest.approx(60 / 300)
    assert r["energy_to_fedavg_ratio"] == pytest.approx(3 / 30)
    never = against_fedavg(run([0.1, 0.6], [0, 10], [0, 1]), FEDAVG, {"accuracy": 0.8})
    assert never["time_to_fedavg_ratio"] is None and never["energy_to_fedavg_ratio"] is None


def test_the_best_variant_is_chosen_on_validation_and_a_seed_that_never_gets_there_fails_the_target():
    central = {0: {"accuracy": 0.75}, 1: {"accuracy": 0.75}}
    fast = run([0.1, 0.74, 0.74], [0, 30, 60], [0, 1, 1], validation=0.60)      # best on test, worse on validation
    steady = run([0.1, 0.72, 0.73], [0, 90, 180], [0, 5, 5], validation=0.70)
    runs = {0: {"plain_fedavg": FEDAVG, "a": fast, "b": steady},
            1: {"plain_fedavg": FEDAVG, "a": fast, "b": run([0.1, 0.65, 0.69], [0, 90, 180], [0, 5, 5],
                                                            validation=0.71)}}
    out = summarise([0, 1], runs, central)
    assert out["best_variant"] == "b"
    t = out["targets"]
    assert t["accuracy_ratio"]["value"] == pytest.approx((0.73 + 0.69) / 2 / 0.75)
    assert t["accuracy_ratio"]["std"] == pytest.approx(0.04 / 0.75 / 2 ** 0.5)  # sample std over the two seeds
    assert not t["accuracy_ratio"]["met"]
    assert t["time_to_fedavg_ratio"]["value"] == pytest.approx(90 / 300)  # seed 1 never reaches 0.7
    assert t["time_to_fedavg_ratio"]["seeds_without_value"] == 1 and not t["time_to_fedavg_ratio"]["met"]
    runs[1]["b"] = steady
    out = summarise([0, 1], runs, central)
    assert out["targets"]["time_to_fedavg_ratio"]["met"] and out["targets"]["energy_to_fedavg_ratio"]["met"]
    assert out["targets"]["energy_to_fedavg_ratio"]["value"] == pytest.approx(5 / 30)
    assert out["variants"]["a"]["accuracy"]["mean"] == pytest.approx(0.74)
