"""Compressed updates against uncompressed ones: accuracy and uplink bits (issue 19, item 3).

    python -m sims.bench.compression [--seeds 0 1] [--devices 8] [--samples-per-device 200] [--rounds 10]

The default scenario shrunk to minutes, run by Flower on the Ray backend (:func:`fedmoe.simulation.run_federated`)
with each ``federated.compression`` of :data:`VARIANTS` (none, qsgd 8 bits, qsgd 4 bits, top-k 10 % with error
feedback), everything else the same (devices, data, selection, seeds). Per variant and seed: the final accuracy
on the server's held-out test set (only reported, never used to choose anything), the uplink bits of all rounds
(what the server received and charged on the virtual clock), the virtual time and the energy; then mean ± std
over the seeds.

Target (the issue names none): ``bits_ratio_qsgd4``, the bits of qsgd-4 over those of the uncompressed run,
at most 0.15 — four bits a value instead of 32 is 0.125, plus one float32 scale per state-dict entry; and
``accuracy_drop_qsgd4``, uncompressed minus qsgd-4 accuracy, at most 0.03 (an unbiased quantiser
should cost little accuracy; the noise of a small run is about that size). Writes
``results/compression.json``; run folders go to ``results/compression_runs/`` (not versioned).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedmoe.scenarios import load_scenario
from fedmoe.simulation import run_federated
from sims.bench.common import machine, mean_std, target

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "compression.json"

VARIANTS: dict[str, dict] = {
    "none": {"method": "none"},
    "qsgd8": {"method": "qsgd", "bits": 8},
    "qsgd4": {"method": "qsgd", "bits": 4},
    "topk": {"method": "topk", "k_fraction": 0.1, "error_feedback": True},
}
"""``federated.compression`` of each variant."""


def bench_config(compression: dict, seed: int, devices: int, per_device: int, rounds: int, stage1: int,
                 per_round: int, test: int):
    return load_scenario("default", {
        "data": {"seed": seed},
        "train": {"seed": seed},
        "partition": {"num_devices": devices, "samples_per_device": per_device},
        "federated": {"rounds": rounds, "stage1_rounds": stage1, "clients_per_round": per_round,
                      "test_samples": test, "checkpoint_every": 0, "centralised_reference": False,
                      "eval_every": rounds, "compression": compression},
    })


def one_run(cfg, out: Path) -> dict:
    t0 = time.perf_counter()
    run = run_federated(cfg, out, progress=False, force=True)
    rounds = [r for r in run.metrics["rounds"] if r["round"] > 0]
    s = run.metrics["summary"]
    return {"accuracy": s["accuracy"], "upload_bits": float(sum(r["upload_bits"] for r in rounds)),
            "virtual_time_s": s["virtual_time_s"], "energy_j": s["energy_j"],
            "failed_updates": s["failed_updates"], "wall_s": time.perf_counter() - t0}


def seeds_stat(values: list[float]) -> dict:
    """:func:`sims.bench.common.mean_std` of one figure over the seeds, with the seeds' values."""
    return {**mean_std(values), "values": [float(v) for v in values]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--samples-per-device", type=int, default=200)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--stage1-rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=4)
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    shape = (args.devices, args.samples_per_device, args.rounds, args.stage1_rounds, args.per_round,
             args.test_samples)
    runs = args.out.parent / "compression_runs"
    t0 = time.perf_counter()
    raw = {name: [one_run(bench_config(comp, seed, *shape), runs / f"{name}_seed{seed}") for seed in args.seeds]
           for name, comp in VARIANTS.items()}
    table = {name: {key: seeds_stat([r[key] for r in rs])
                    for key in ("accuracy", "upload_bits", "virtual_time_s", "energy_j")}
             for name, rs in raw.items()}
    for name, rs in raw.items():
        table[name]["bits_ratio"] = seeds_stat([r["upload_bits"] / b["upload_bits"] for r, b in zip(rs, raw["none"])])
    ratio = table["qsgd4"]["bits_ratio"]["mean"]
    drop = table["none"]["accuracy"]["mean"] - table["qsgd4"]["accuracy"]["mean"]
    doc = {
        "benchmark": "compression",
        "machine": machine(),
        "setup": {"seeds": args.seeds, "devices": args.devices, "samples_per_device": args.samples_per_device,
                  "rounds": args.rounds, "stage1_rounds": args.stage1_rounds, "per_round": args.per_round,
                  "test_samples": args.test_samples, "variants": VARIANTS},
        "targets": {
            "bits_ratio_qsgd4": target(ratio, "<= 0.15 (4/32 plus a float32 scale per state-dict entry)",
                                       ratio <= 0.15),
            "accuracy_drop_qsgd4": target(drop, "<= 0.03 (accuracy of none minus qsgd-4, mean over seeds)",
                                          drop <= 0.03),
        },
        "variants": table,
        "runs": raw,
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    for name, row in table.items():
        print(f"{name:6s} accuracy {row['accuracy']['mean']:.3f} ± {row['accuracy']['std']:.3f}  "
              f"bits {row['upload_bits']['mean']:.3g} ({row['bits_ratio']['mean']:.3f} of none)")
    print(json.dumps(doc["targets"], indent=2))
    print(f"wrote {args.out} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
