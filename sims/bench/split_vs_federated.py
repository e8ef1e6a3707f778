"""Split learning against federated learning on the same scenario: bits, device compute, time, energy (issue 6).

    python -m sims.bench.split_vs_federated [--devices 10] [--per-round 5] [--rounds 20] [--stage1 8]
                                            [--samples-per-device 500] [--experts-per-modality 3]
                                            [--eval-every 1] [--local-epochs 1] [--quick]

Side by side on the default scenario's devices and data, each a Flower simulation (Ray
backend) with the same rounds, stages, devices per round (drawn at random) and local epochs:

* **federated**: :class:`fedmoe.strategies.ExpertWise`, random selection, the band split evenly;
* **split, ideal link**: :mod:`fedmoe.strategies.split_learning`, features sent losslessly at
  32 bits per value at each device's Shannon rate;
* **split, digital link**: 8-bit features over 16-QAM at 20 dB with residual bit errors;
* **SplitFed, ideal link**: split learning with the experts averaged every round.

Per round and in total: uplink bits, downlink bits (split: gradients and selections; the
federated downlink, the global model, is not counted by the federated rounds), device
FLOPs, virtual-clock latency and energy; and the virtual time and energy until each run
first reaches a common accuracy target (the lowest final accuracy of the runs, and fixed
thresholds). The federated accuracy is on the server's held-out set; the split runs',
on the devices' own held-out data (the same distribution in the IID default scenario,
not the same samples). Writes JSON and a PNG next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedmoe.federated.report import time_to_accuracy
from fedmoe.scenarios import load_scenario
from fedmoe.simulation import run_federated
from sims.bench.common import machine

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "split_vs_federated.json"
THRESHOLDS = (0.2, 0.3, 0.4, 0.5)

VARIANTS = {
    "federated": {"mode": "federated", "federated": {"selection": "random", "allocation": "equal"}},
    "split, ideal link": {"mode": "split", "split": {"link": "ideal"}},
    "split, digital 8 bit 16-QAM 20 dB": {"mode": "split",
                                          "split": {"link": "digital", "snr_db": 20.0,
                                                    "link_options": {"bits": 8, "bits_per_symbol": 4}}},
    "SplitFed, ideal link": {"mode": "splitfed", "split": {"link": "ideal"}},
}


def bench_config(variant: dict, devices: int, per_device: int, rounds: int, stage1: int, per_round: int,
                 experts_per_modality: int = 3, eval_every: int = 1, local_epochs: int = 1):
    from fedmoe.config import deep_merge

    base = {"partition": {"num_devices": devices, "samples_per_device": per_device},
            "model": {"experts_per_modality": experts_per_modality},
            "federated": {"rounds": rounds, "stage1_rounds": stage1, "clients_per_round": per_round,
                          "checkpoint_every": 0, "eval_every": eval_every, "local_epochs": local_epochs}}
    return load_scenario("default", deep_merge(base, variant))


def energy_to_accuracy(rows: list[dict], target: float) -> float | None:
    """Energy spent (all devices) up to the first evaluated round reaching ``target``."""
    spent = 0.0
    for r in rows:
        spent += float(r.get("energy_j") or 0.0)
        if r.get("accuracy") is not None and r["accuracy"] >= target:
            return spent
    return None


def summarise(rows: list[dict]) -> dict:
    trained = [r for r in rows if r["round"] > 0]
    n = max(len(trained), 1)
    evaluated = [r for r in trained if r.get("accuracy") is not None]
    return {
        "final_accuracy": evaluated[-1]["accuracy"] if evaluated else None,
        "best_accuracy": max((r["accuracy"] for r in evaluated), default=None),
        "virtual_time_s": trained[-1]["clock_s"] if trained else 0.0,
        "per_round": {
            "upload_bits": sum(r.get("upload_bits", 0.0) for r in trained) / n,
            "downlink_bits": sum(r.get("downlink_bits", 0.0) for r in trained) / n,
            "device_flops": sum(r.get("device_flops", 0.0) for r in trained) / n,
            "latency_s": sum(r.get("latency_s", 0.0) for r in trained) / n,
            "energy_j": sum(r.get("energy_j", 0.0) for r in trained) / n,
            "exchanges": sum(r.get("exchanges", 1) for r in trained) / n,
        },
        "total_energy_j": sum(r.get("energy_j", 0.0) for r in trained),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    names = list(results)
    for name in names:
        rows = [r for r in results[name]["rounds"] if r["round"] > 0 and r.get("accuracy") is not None]
        axes[0, 0].plot([r["clock_s"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3, label=name)
    axes[0, 0].set(xscale="log", xlabel="virtual time, s", ylabel="beam accuracy", title="accuracy vs virtual time")
    axes[0, 0].legend(fontsize=8)
    for ax, key, label in ((axes[0, 1], "upload_bits", "uplink bits per round"),
                           (axes[1, 0], "energy_j", "device energy per round, J"),
                           (axes[1, 1], "device_flops", "device FLOPs per round")):
        vals = [results[n]["summary"]["per_round"][key] for n in names]
        ax.bar(range(len(names)), vals, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), [n.replace(", ", "\n", 1) for n in names], fontsize=7)
        ax.set(yscale="log", title=label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--stage1", type=int, default=8)
    p.add_argument("--samples-per-device", type=int, default=500)
    p.add_argument("--experts-per-modality", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="3 devices, 2 per round, 2 rounds, 64 samples each (smoke run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.devices, args.per_round, args.rounds, args.stage1, args.samples_per_device = 3, 2, 2, 1, 64
    torch.set_num_threads(1)
    results: dict = {}
    runs_dir = args.out.parent / "split_vs_federated_runs"
    for name, variant in VARIANTS.items():
        cfg = bench_config(variant, args.devices, args.samples_per_device, args.rounds, args.stage1, args.per_round,
                           args.experts_per_modality, args.eval_every, args.local_epochs)
        t0 = time.perf_counter()
        run = run_federated(cfg, runs_dir / name.split(",")[0].replace(" ", "_").lower(), progress=True, force=True)
        rows = run.metrics["rounds"]
        results[name] = {"wall_s": time.perf_counter() - t0, "summary": summarise(rows),
                         "rounds": [{k: v for k, v in r.items() if k not in ("usage_by_class", "devices")}
                                    for r in rows]}
        s = results[name]["summary"]
        print(f"{name}: final accuracy {s['final_accuracy']}, {s['per_round']['upload_bits']:.3g} uplink bits, "
              f"{s['per_round']['energy_j']:.3g} J, {s['per_round']['latency_s']:.3g} s per round")
    finals = [r["summary"]["final_accuracy"] for r in results.values() if r["summary"]["final_accuracy"] is not None]
    common = min(finals) if finals else None
    targets = sorted(set(THRESHOLDS) | ({round(common, 4)} if common else set()))
    for r in results.values():
        rows = r["rounds"]
        r["to_accuracy"] = {f"{t:.4g}": {"virtual_time_s": time_to_accuracy(rows, t),
                                         "energy_j": energy_to_accuracy(rows, t)}
                            for t in targets}
    doc = {"benchmark": "split_vs_federated", "scenario": "default",
           "settings": {k: getattr(args, k) for k in ("devices", "per_round", "rounds", "stage1", "samples_per_device",
                                                      "experts_per_modality", "eval_every", "local_epochs")},
           "common_target_accuracy": common,
           "accuracy_note": "federated: server held-out set; split: devices' held-out data",
           "machine": machine(),
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=float))
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
