"""Quality of the federated mixture against centralised training and against plain FedAvg (issue 5).

    python -m sims.bench.federated_quality [--devices 20] [--samples-per-device 800] [--rounds 40]
                                          [--local-epochs 5]

Side by side, on the same devices, data and held-out test set (the default scenario):

* **centralised**: the same mixture (``model``, ``train``) trained with
  :func:`fedmoe.centralised.run_centralised` on the union of every device's partition;
* **federated MoE, deadline**: :class:`fedmoe.strategies.ExpertWise` with the scenario's
  selection (``deadline-max-devices``: the most devices that meet the round deadline)
  and ``min-latency`` allocation (Flower simulation, Ray backend);
* **federated MoE, random**: the same strategy with ``random`` selection (every device
  takes part now and then, however slow its link) and ``min-latency`` allocation;
* **federated MoE, oort / power-of-choice / age-weighted**: the baselines of
  :mod:`fedmoe.federated.selection_baselines` (in the JSON and its targets, not in the plot);
* **plain FedAvg**: :class:`fedmoe.strategies.PlainFedAvg` (dense model, random selection, equal
  bandwidth split) for the same number of rounds, devices per round and local epochs;
* **semi-asynchronous**: each MoE variant again with :class:`fedmoe.strategies.FedBuff`
  (``<variant>_fedbuff``): ``per_round`` devices in flight, a server update every ``per_round / 2``
  arrivals, twice the rounds (so about as many device updates as the synchronous run).

Targets: federated MoE final accuracy ≥ 97% of centralised; virtual-clock time to reach
the FedAvg baseline's final accuracy at least 2× shorter than the baseline's own. Both
are reported for each MoE variant. Energy per round of all is reported. Writes JSON and
a PNG (accuracy vs virtual time, energy per round); the run folders go to
``results/federated_quality_runs/`` (not versioned).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedmoe.centralised import Split, run_centralised
from fedmoe.data.samples import ISACSamples
from fedmoe.federated.report import time_to_accuracy
from fedmoe.federated.world import world_for
from fedmoe.scenarios import load_scenario
from fedmoe.simulation import run_federated
from sims.bench.common import machine

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "federated_quality.json"


def bench_config(devices: int, per_device: int, rounds: int, stage1: int, per_round: int, test: int, strategy: str,
                 local_epochs: int = 1, selection: str | None = None):
    if strategy == "fedbuff":  # K = C/2 arrivals per server update: twice the updates, as many device updates
        rounds, stage1 = 2 * rounds, 2 * stage1
    federated = {"rounds": rounds, "stage1_rounds": stage1, "clients_per_round": per_round, "test_samples": test,
                 "strategy": strategy, "checkpoint_every": 0, "local_epochs": local_epochs,
                 "fedbuff": {"concurrency": per_round, "buffer_size": max(1, per_round // 2)}}
    if selection is not None:
        federated["selection"] = selection
    return load_scenario("default", {
        "partition": {"num_devices": devices, "samples_per_device": per_device},
        "federated": federated,
    })


def centralised_on_union(cfg) -> dict:
    """The mixture trained centrally on every device's partition, tested on the server's held-out set."""
    world = world_for(cfg)
    parts = [world.partition(k).samples for k in range(world.num_devices)]
    split = Split(ISACSamples.concat(parts), world.server_test_set())
    t0 = time.perf_counter()
    run = run_centralised(cfg, split, progress=True)
    s = run.summary
    return {"accuracy": s["accuracy"]["all"], "accuracy_los": s["accuracy"]["los"],
            "accuracy_blocked": s["accuracy"]["blocked"], "inference_latency_s": s["mean_latency_s"],
            "inference_energy_j": s["mean_energy_j"], "train_samples": len(split.train),
            "wall_s": time.perf_counter() - t0}


def federated(cfg, out: Path) -> dict:
    t0 = time.perf_counter()
    run = run_federated(cfg, out, progress=True, force=True)
    rows = run.metrics["rounds"]
    return {"summary": run.metrics["summary"], "wall_s": time.perf_counter() - t0,
            "curve": [{k: r.get(k) for k in ("round", "stage", "clock_s", "accuracy", "energy_j", "latency_s",
                                             "completed", "upload_bits")} for r in rows]}


SYNC_VARIANTS = {"federated_moe": ("expert_wise", None), "federated_moe_random": ("expert_wise", "random"),
                 **{f"federated_moe_{p}": ("expert_wise", p) for p in ("oort", "power-of-choice", "age-weighted")}}
VARIANTS = {**SYNC_VARIANTS, "plain_fedavg": ("plain_fedavg", None),
            **{f"{name}_fedbuff": ("fedbuff", selection) for name, (_, selection) in SYNC_VARIANTS.items()}}
LABELS = {"federated_moe": "federated MoE, deadline selection",
          "federated_moe_random": "federated MoE, random selection",
          "federated_moe_fedbuff": "federated MoE, deadline selection, semi-asynchronous (FedBuff)",
          "plain_fedavg": "plain FedAvg (dense)"}


def targets(central: dict, moe: dict, base: dict) -> dict:
    """The issue's two targets for one MoE variant against the baseline."""
    base_final = base["summary"]["accuracy"]
    t_base = time_to_accuracy(base["curve"], base_final)
    t_moe = time_to_accuracy(moe["curve"], base_final)
    ratio = moe["summary"]["accuracy"] / central["accuracy"]
    return {
        "accuracy": moe["summary"]["accuracy"],
        "accuracy_ratio_vs_centralised": ratio,
        "accuracy_ratio_target": 0.97,
        "accuracy_ratio_met": ratio >= 0.97,
        "baseline_final_accuracy": base_final,
        "baseline_time_to_its_final_accuracy_s": t_base,
        "moe_time_to_baseline_final_accuracy_s": t_moe,
        "time_speedup": (t_base / t_moe) if (t_base and t_moe) else None,
        "time_speedup_target": 2.0,
        "time_speedup_met": bool(t_base and t_moe and t_base / t_moe >= 2.0),
        "virtual_time_s": moe["summary"]["virtual_time_s"],
        "energy_per_round_j": moe["summary"]["mean_energy_per_round_j"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--samples-per-device", type=int, default=800)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--stage1-rounds", type=int, default=10)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=5)
    p.add_argument("--test-samples", type=int, default=4000)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    shape = (args.devices, args.samples_per_device, args.rounds, args.stage1_rounds, args.per_round, args.test_samples)
    configs = {name: bench_config(*shape, strategy, args.local_epochs, selection)
               for name, (strategy, selection) in VARIANTS.items()}
    runs = args.out.parent / "federated_quality_runs"
    t0 = time.perf_counter()
    central = centralised_on_union(configs["federated_moe"])
    results = {name: federated(cfg, runs / name) for name, cfg in configs.items()}
    base = results["plain_fedavg"]
    moe_cfg = configs["federated_moe"]
    doc = {
        "benchmark": "federated_quality",
        "machine": machine(),
        "setup": {"devices": args.devices, "samples_per_device": args.samples_per_device, "rounds": args.rounds,
                  "stage1_rounds": args.stage1_rounds, "per_round": args.per_round,
                  "local_epochs": args.local_epochs, "test_samples": args.test_samples,
                  "model": moe_cfg.model.model_dump(mode="json"), "train": moe_cfg.train.model_dump(mode="json"),
                  "deadline_s": moe_cfg.federated.deadline_s,
                  "variants": {name: {"strategy": c.federated.strategy, "selection": c.federated.selection,
                                      "allocation": c.federated.allocation, "rounds": c.federated.rounds,
                                      "rounds_are": "server updates" if c.federated.strategy == "fedbuff" else
                                      "synchronous rounds"} for name, c in configs.items()}},
        "centralised": central,
        **results,
        "targets": {name: targets(central, results[name], base) for name in results if name != "plain_fedavg"},
        "baseline": {"accuracy": base["summary"]["accuracy"], "virtual_time_s": base["summary"]["virtual_time_s"],
                     "energy_per_round_j": base["summary"]["mean_energy_per_round_j"]},
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    plot(doc, args.out.with_suffix(".png"))
    print(json.dumps({"targets": doc["targets"], "baseline": doc["baseline"]}, indent=2))
    return 0


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, name in LABELS.items():
        curve = [r for r in doc[key]["curve"] if r.get("accuracy") is not None and r["clock_s"] > 0]
        axes[0].plot([r["clock_s"] for r in curve], [r["accuracy"] for r in curve], marker=".", label=name)
        trained = [r for r in doc[key]["curve"] if r["round"] > 0]
        axes[1].plot([r["round"] for r in trained], [r["energy_j"] for r in trained], marker=".", label=name)
    axes[0].axhline(doc["centralised"]["accuracy"], color="k", ls="--", lw=1, label="centralised")
    axes[0].axhline(0.97 * doc["centralised"]["accuracy"], color="gray", ls=":", lw=1, label="97% of centralised")
    axes[0].set_xscale("log")  # the variants' rounds last from seconds to hours
    axes[1].set_yscale("log")
    axes[0].set_xlabel("virtual time (s, log)")
    axes[0].set_ylabel("test beam accuracy")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("energy per round, all devices (J)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
