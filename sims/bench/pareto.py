"""Centralised accuracy–cost Pareto benchmark of the mixture of experts (issue 4).

    python -m sims.bench.pareto [--num-samples 20000] [--lambdas 0,1,3,10,30] [--out sims/bench/results/pareto.json]

Side by side on one generated dataset and one set of devices (the default scenario):

* each **single-modality** model (one expert, the modality's default architecture);
* the **dense** all-modality mixture (paper 000: 3 experts per modality, 15 in all, all
  computed, softmax weights);
* the **sparse top-N** mixture (paper 000: N = 5 of the 15) at λ = 0, and the sampling
  top-N gate (``gumbel_topn``) at the sweep's λ values;
* the **hard gate** (paper 001, DynMM: one modality-subset expert per sample among
  GPS+RF, GPS+RF+radar and all five modalities) at every λ of the sweep.

Each point reports test beam accuracy (all, LoS, blocked), mean per-sample FLOPs,
latency and energy of what was computed (each modality sensed and sent once), and how
often a costly modality (camera, lidar, radar) was used for LoS and for blocked samples.
Targets (issue 4): some λ point reaches ≥ 99% of the dense beam accuracy at ≤ 50% of its
mean latency and energy; the gate picks costly modalities more often for blocked samples.
Writes the JSON table and ``pareto.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from fedmoe.centralised import make_split, run_centralised
from fedmoe.cli import parse_lambdas
from fedmoe.config import MODALITIES, FedMoEConfig, ModelConfig
from fedmoe.pareto import format_table, pareto_front, plot_pareto, point_row

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pareto.json"
HARD_SUBSETS = (("gps", "rf"), ("gps", "rf", "radar"), ("gps", "rf", "radar", "lidar", "camera"))


def points(lambdas: list[float]) -> list[tuple[str, str, dict, float]]:
    """(label, kind, model overrides, λ) of every point of the benchmark."""
    out = [(f"{m} only", "single modality", {"modalities": (m,), "experts_per_modality": 1, "gate": "dense"}, 0.0)
           for m in MODALITIES]
    out.append(("dense 15", "dense MoE", {"gate": "dense"}, 0.0))
    out.append(("top-5", "sparse top-N", {"gate": "topn", "top_n": 5}, 0.0))
    out += [(f"top-5 λ={lam:g}", "sparse top-N, sampled", {"gate": "gumbel_topn", "top_n": 5}, lam)
            for lam in lambdas if lam > 0]
    out += [(f"hard λ={lam:g}", "hard gate (subsets)",
             {"gate": "gumbel_hard", "modalities": (), "subsets": HARD_SUBSETS, "experts_per_modality": 1}, lam)
            for lam in lambdas]
    return out


def targets(rows: list[dict]) -> dict:
    """The issue's targets, checked on the measured rows."""
    dense = next(r for r in rows if r["kind"] == "dense MoE")
    gated = [r for r in rows if r["kind"] not in ("dense MoE", "single modality")]
    ok = [r for r in gated if r["accuracy"] >= 0.99 * dense["accuracy"]
          and r["mean_latency_s"] <= 0.5 * dense["mean_latency_s"] and r["mean_energy_j"] <= 0.5 * dense["mean_energy_j"]]
    cheap = [r for r in gated if r["mean_latency_s"] <= 0.5 * dense["mean_latency_s"]
             and r["mean_energy_j"] <= 0.5 * dense["mean_energy_j"]]
    best = max(cheap, key=lambda r: r["accuracy"]) if cheap else None
    adaptive = [r for r in gated if r["costly_rate_blocked"] > r["costly_rate_los"] + 0.1]
    return {
        "dense_accuracy": dense["accuracy"],
        "points_meeting_accuracy_and_cost": [r["label"] for r in ok],
        "accuracy_cost_target_met": bool(ok),
        "most_accurate_at_half_cost": None if best is None else {
            "label": best["label"], "accuracy_ratio": best["accuracy"] / dense["accuracy"],
            "latency_ratio": best["mean_latency_s"] / dense["mean_latency_s"],
            "energy_ratio": best["mean_energy_j"] / dense["mean_energy_j"]},
        "points_blocked_rate_exceeds_los_by_10pp": [r["label"] for r in adaptive],
        "sample_adaptive_target_met": bool(adaptive),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=20_000)
    parser.add_argument("--lambdas", type=parse_lambdas, default=[0.0, 1.0, 3.0, 10.0, 30.0])
    parser.add_argument("--only", default="", help="comma-separated labels to run (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    base = FedMoEConfig()
    split = make_split(base, args.num_samples, base.data.seed, progress=True)
    rows = []
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    for label, kind, model, lam in points(args.lambdas):
        if wanted and label not in wanted:
            continue
        cfg = base.model_copy(update={"model": ModelConfig(**model),
                                      "train": base.train.model_copy(update={"cost_weight": lam})})
        t0 = time.perf_counter()
        run = run_centralised(cfg, split)
        rows.append(point_row(label, kind, run.summary, **{"lambda": lam, "train_seconds": time.perf_counter() - t0,
                                                            "model": cfg.model.model_dump(mode="json")}))
        print(f"{label}: accuracy {rows[-1]['accuracy']:.3f}, latency {rows[-1]['mean_latency_s'] * 1e3:.1f} ms, "
              f"energy {rows[-1]['mean_energy_j'] * 1e3:.1f} mJ ({rows[-1]['train_seconds']:.0f} s)", flush=True)
    front = pareto_front([r["mean_latency_s"] for r in rows], [r["accuracy"] for r in rows])
    for r, on in zip(rows, front):
        r["on_latency_pareto_front"] = bool(on)
    result = {
        "benchmark": "pareto",
        "num_samples": args.num_samples, "train_samples": len(split.train), "test_samples": len(split.test),
        "train": base.train.model_dump(mode="json"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "points": rows,
    }
    if any(r["kind"] == "dense MoE" for r in rows):
        result["targets"] = targets(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    figure = plot_pareto(rows, args.out.with_suffix(".png"), "centralised MoE on the default synthetic scenario")
    print(format_table(rows))
    if "targets" in result:
        print(json.dumps(result["targets"], indent=2))
    print(f"wrote {args.out} and {figure}")
    return result


if __name__ == "__main__":
    main()
