"""The Pareto front helper and the trade-off table of λ sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.pareto import format_table, pareto_front, plot_pareto


def test_pareto_front_on_a_hand_example():
    cost = [1.0, 2.0, 3.0, 2.0, 4.0, 1.0]
    acc = [0.5, 0.7, 0.9, 0.6, 0.8, 0.4]
    # (2, 0.6) is beaten by (2, 0.7); (4, 0.8) by (3, 0.9); (1, 0.4) by (1, 0.5)
    assert pareto_front(cost, acc).tolist() == [True, True, True, False, False, False]
    assert pareto_front([1.0, 1.0], [0.5, 0.5]).tolist() == [True, True]  # ties dominate neither
    with pytest.raises(ValueError, match="same length"):
        pareto_front([1.0], [0.5, 0.6])


def test_table_and_plot(tmp_path):
    rows = [{"label": f"λ={lam:g}", "kind": "lambda", "accuracy": a, "accuracy_los": a, "accuracy_blocked": a - 0.1,
             "mean_flops": 1e6 * c, "mean_latency_s": 0.01 * c, "mean_energy_j": 0.002 * c,
             "costly_rate_los": 0.2, "costly_rate_blocked": 0.6}
            for lam, a, c in ((0, 0.7, 4.0), (1, 0.68, 2.0), (10, 0.5, 0.1))]
    text = format_table(rows)
    assert "λ=10" in text and "70.0%" in text and len(text.splitlines()) == 5
    path = plot_pareto(rows, tmp_path / "p.png", "test")
    assert path.stat().st_size > 10_000
    assert np.all(pareto_front([r["mean_latency_s"] for r in rows], [r["accuracy"] for r in rows]))


def test_benchmark_knee_and_static_subsets():
    """The benchmark's knee rule (validation curve, Kneedle) on hand values, and its 31 static subsets."""
    from sims.bench.pareto import ALL_STATIC, CORE_STATIC, knee_point

    pts = [{"lambda": lam, "energy_val": e, "score_val": s}
           for lam, e, s in ((30, 1e-4, 0.80), (10, 1e-3, 0.95), (3, 1e-2, 0.955), (1, 1e-1, 0.96))]
    assert knee_point(pts)["lambda"] == 10
    flat = [{**p, "score_val": 0.9} for p in pts]  # no gain for the cost: the cheapest is the most accurate too
    assert knee_point(flat)["lambda"] == 30
    assert len(ALL_STATIC) == 31 == len(set(map(frozenset, ALL_STATIC)))
    assert set(map(frozenset, CORE_STATIC)) <= set(map(frozenset, ALL_STATIC))


def test_benchmark_static_front_below_the_mixture_floor_is_reported_unreachable():
    """A static subset cheaper than 1/0.7 of the mixture's cheapest expert cannot be matched at <= 70 % of its
    energy; the benchmark says which ones (hand values: the floor is the GPS expert's 1.0 J)."""
    from sims.bench.pareto import mixture_energy_floor, seed_targets

    def point(label, kind, score, energy, **extra):
        return {"label": label, "kind": kind, "score": score, "mean_energy_j": energy, "mean_latency_s": energy,
                "energy_val": energy, "score_val": score, "costly_rate": {"los": 0.1, "blocked": 0.3},
                "uplink_bits": {"weak": 1.0, "strong": 2.0}, "oracle": {"topk": score}, **extra}

    experts = {"gps_s": 0.5, "gps+rf+radar_s": 0.5}
    static = [point("gps", "static", 0.90, 1.0), point("rf", "static", 0.3, 0.1),
              point("radar", "static", 0.95, 100.0), point("gps+rf+radar", "static", 0.96, 120.0),
              point("gps+rf", "static", 0.92, 1.5)]
    assert mixture_energy_floor(static, experts) == 1.0
    assert mixture_energy_floor(static[1:], experts) is None  # no static row for the GPS expert
    rows = static + [point("dense", "dense", 0.97, 121.0),
                     point("adaptive λ=1", "adaptive", 0.965, 20.0, **{"lambda": 1.0, "usage": experts}),
                     point("adaptive λ=10", "adaptive", 0.93, 1.04, **{"lambda": 10.0, "usage": experts})]
    t = seed_targets(rows, "topk")
    # Front: all five. 0.7 x energy: rf 0.07 and gps 0.7 are below the floor (1.0), so unreachable; gps+rf
    # (1.05), radar and gps+rf+radar are reachable, and λ=10 (0.93 at 1.04 J) matches gps+rf (0.92 at 1.5 J).
    assert set(t["static_front"]) == {"rf", "gps", "gps+rf", "radar", "gps+rf+radar"}
    assert set(t["static_front_reachable"]) == {"gps+rf", "radar", "gps+rf+radar"}
    assert t["static_front_reachable"]["gps+rf"] == ["adaptive λ=10"]
    assert t["dominates_reachable_static"] == 1.0
    assert t["dominates_static"] == pytest.approx(3 / 5)
