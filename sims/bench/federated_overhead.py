"""Overhead of the Flower simulation against a plain sequential loop doing the same client compute.

    python -m sims.bench.federated_overhead [--sizes 10,50,200] [--rounds 3]

For each N, side by side in one run:

* **flower**: ``fedmoe run``'s machinery (:func:`fedmoe.simulation.run_federated`: ServerApp,
  ClientApp, Ray backend, :class:`fedmoe.strategies.ExpertWise`) with all N devices per round;
* **plain**: a Python loop that calls the same client function
  (:func:`fedmoe.federated.local.local_update`) for the same N devices with the same
  instructions, then averages the replies (numpy FedAvg).

Same model, data, epochs and stage (stage I, one local epoch, a small mixture so that the
framework's share is visible). Round 1 builds every device's partition in both; its wall
time and Ray's start-up are reported separately and the steady-state ratio uses rounds
2.. only. Peak memory is the RSS summed over this process and all Ray processes
(:mod:`sims.bench.memory`, an upper bound). The simulation runs ``cpus / client_cpus``
virtual clients at once; the loop runs one client at a time with torch's default threads.
Target (issue 5): ratio ≤ 1.5 at N = 50.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedmoe.federated.local import RoundInstructions, local_update
from fedmoe.federated.parameters import to_numpy
from fedmoe.federated.protocol import NUM_EXAMPLES_KEY
from fedmoe.federated.world import world_for
from fedmoe.scenarios import load_scenario
from fedmoe.simulation import run_federated
from sims.bench.common import machine, target, uplink_hz
from sims.bench.memory import PeakMemory

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "federated_overhead.json"


def bench_config(n: int, rounds: int, samples: int):
    return load_scenario("default", {
        "partition": {"num_devices": n, "samples_per_device": samples},
        "model": {"experts_per_modality": 1, "head_hidden": 32},
        "train": {"batch_size": 64},
        "wireless": {"uplink": {"total_bandwidth_hz": uplink_hz(n)}},  # one resource block per device at least
        "federated": {"rounds": rounds, "stage1_rounds": rounds, "clients_per_round": n, "selection": "all",
                      "allocation": "equal", "deadline_s": 1e6, "test_samples": 200, "eval_every": 10_000,
                      "checkpoint_every": 0, "partition_cache": max(n, 1)},
    })


def plain_loop(cfg, rounds: int) -> dict:
    world = world_for(cfg)
    n = world.num_devices
    arrays = to_numpy(world.template.state_dict())
    rate = world.equal_share_rate
    times = []
    with PeakMemory() as mem:
        for r in range(1, rounds + 1):
            t0 = time.perf_counter()
            results = []
            for k in range(n):
                instr = RoundInstructions(server_round=r, stage=1, local_epochs=1, lr=cfg.train.lr, tau=1.0,
                                          cost_weight=cfg.train.cost_weight, rate_bps=float(rate[k]),
                                          num_rb=1, deadline_s=1e6, fit_standardiser=r == 1)
                results.append(local_update(world, k, arrays, None, instr))
            weights = np.array([res.metrics[NUM_EXAMPLES_KEY] for res in results], dtype=np.float64)
            for key in results[0].arrays:
                if np.issubdtype(arrays[key].dtype, np.floating):
                    arrays[key] = sum(w * res.arrays[key] for w, res in zip(weights, results)) / weights.sum()
            times.append(time.perf_counter() - t0)
    return {"round_s": times, "first_round_s": times[0], "steady_round_s": float(np.mean(times[1:])),
            "peak_rss_gib": mem.peak_rss_bytes / 2**30}


def flower(cfg) -> dict:
    stamps = []
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        run_federated(cfg, None, progress=False, on_round=lambda rec: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    per_round = np.diff([t0] + stamps)
    return {"round_s": per_round.tolist(), "first_round_incl_startup_s": float(per_round[0]),
            "steady_round_s": float(np.mean(per_round[1:])), "total_s": total,
            "peak_rss_gib": mem.peak_rss_bytes / 2**30}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,50,200")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples-per-device", type=int, default=64)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        cfg = bench_config(n, args.rounds, args.samples_per_device)
        loop = plain_loop(cfg, args.rounds)
        sim = flower(cfg)
        startup = sim["first_round_incl_startup_s"] - loop["first_round_s"]
        row = {"num_devices": n, "plain": loop, "flower": sim, "startup_s_estimate": startup,
               "ratio_steady": sim["steady_round_s"] / loop["steady_round_s"]}
        rows.append(row)
        print(f"N={n}: plain {loop['steady_round_s']:.2f} s/round, flower {sim['steady_round_s']:.2f} s/round, "
              f"ratio {row['ratio_steady']:.2f}, start-up ≈ {startup:.1f} s, peak RSS {sim['peak_rss_gib']:.2f} "
              f"vs {loop['peak_rss_gib']:.2f} GiB")
    at50 = next((r["ratio_steady"] for r in rows if r["num_devices"] == 50), None)
    doc = {"benchmark": "federated_overhead",
           "machine": machine(),
           "setup": {"rounds": args.rounds, "samples_per_device": args.samples_per_device,
                     "client_cpus": 1, "model": "1 expert per modality, head_hidden 32, stage I, 1 local epoch"},
           "rows": rows,
           "targets": {"flower_over_plain_at_50": target(at50, "<= 1.3 (Flower simulation / plain loop, N = 50)",
                                                         at50 is not None and at50 <= 1.3)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
