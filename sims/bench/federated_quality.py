"""Quality, virtual time and device energy of the federated mixture against centralised training and plain FedAvg.

    python -m sims.bench.federated_quality [--seeds 0 1 2] [--variants moe_deadline,moe_random,...]
                                          [--devices 20] [--samples-per-device 800] [--rounds 40]
                                          [--set key.path=value ...] [--fresh]

For each seed (``data.seed = train.seed = seed``: the data, the devices' places and profiles, the
initial model), side by side on the same devices, data and held-out sets (the default scenario):

* **centralised**: the same mixture trained with :func:`fedmoe.centralised.run_centralised` on the
  union of every device's partition;
* **plain FedAvg** (``plain_fedavg``): :class:`fedmoe.strategies.PlainFedAvg` (dense model, random
  selection, equal bandwidth split), same rounds, devices per round and local epochs;
* **the federated MoE** (:class:`fedmoe.strategies.ExpertWise`) in every variant of :data:`VARIANTS`:
  one axis at a time around ``moe_deadline`` (deadline selection, ``min-latency`` allocation,
  uncompressed, synchronous rounds): each selection policy, each compression, each round mode.

Targets (issue 19), for *the best MoE variant*: the one whose final model has the highest mean
accuracy on the server's **validation** set (:meth:`~fedmoe.federated.world.ScenarioWorld.server_validation_set`,
a stream neither the devices nor the test set draw), so that no choice is made on the test set.
Its test figures, mean ± std over the seeds:

* ``accuracy_ratio``: final test accuracy / the centralised one, ≥ 0.97;
* ``time_to_fedavg_ratio``: virtual time until its test accuracy first reaches plain FedAvg's final
  accuracy / FedAvg's own virtual time to it, ≤ 0.5 (a seed in which it never does counts as not met);
* ``energy_to_fedavg_ratio``: the devices' energy until then / FedAvg's, ≤ 0.3.

Every variant's figures are in ``variants`` (and the table printed at the end). Each (seed,
variant) run is kept in ``results/federated_quality_runs/seed<k>/<variant>/`` (not versioned) with
``bench.json``; a later call skips the runs whose ``bench.json`` has the same settings
(:func:`config_key`; ``--fresh`` reruns them), so the benchmark can be run in parts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedmoe.centralised import Split, run_centralised
from fedmoe.config import FedMoEConfig, deep_merge
from fedmoe.data.samples import ISACSamples
from fedmoe.federated.evaluation import ServerEvaluator
from fedmoe.federated.world import world_for
from fedmoe.overrides import parse_overrides
from fedmoe.scenarios import load_scenario
from fedmoe.simulation import run_federated
from sims.bench.common import machine, mean_std, target
from sims.bench.compression import VARIANTS as COMPRESSIONS

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "federated_quality.json"

BASELINE = "plain_fedavg"
REFERENCE = "moe_deadline"

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    BASELINE: ("plain_fedavg", {}),
    REFERENCE: ("expert_wise", {"selection": "deadline-max-devices"}),
    **{f"moe_{policy}": ("expert_wise", {"selection": policy})
       for policy in ("random", "utility-weighted", "oort", "power-of-choice", "age-weighted")},
    **{f"{REFERENCE}_{name}": ("expert_wise", {"selection": "deadline-max-devices", "compression": compression})
       for name, compression in COMPRESSIONS.items() if name != "none"},
    f"{REFERENCE}_fedbuff": ("fedbuff", {"selection": "deadline-max-devices"}),
}
"""``name -> (federated.strategy, federated overrides)``. The MoE variants change one thing of ``moe_deadline``:
the selection policy (``moe_<policy>``), the compression (``moe_deadline_<compression>``) or the round mode
(``moe_deadline_fedbuff``: :class:`fedmoe.strategies.FedBuff` with ``per_round`` devices in flight and a server
update every ``per_round / 2`` arrivals, for twice the rounds: about as many device updates as synchronous rounds)."""

LABELS = {BASELINE: "plain FedAvg (dense)", REFERENCE: "federated MoE, deadline selection"}


def bench_config(args: argparse.Namespace, seed: int, strategy: str, federated: dict[str, Any]) -> FedMoEConfig:
    """The default scenario at the benchmark's size with ``strategy`` and ``federated`` overrides, then ``--set``."""
    rounds, stage1 = args.rounds, args.stage1_rounds
    if strategy == "fedbuff":  # K = C/2 arrivals per server update: twice the updates, as many device updates
        rounds, stage1 = 2 * rounds, 2 * stage1
        federated = {"fedbuff": {"concurrency": args.per_round, "buffer_size": max(1, args.per_round // 2)},
                     **federated}
    overrides = {
        "data": {"seed": seed},
        "train": {"seed": seed},
        "partition": {"num_devices": args.devices, "samples_per_device": args.samples_per_device},
        "federated": {"rounds": rounds, "stage1_rounds": stage1, "clients_per_round": args.per_round,
                      "test_samples": args.test_samples, "strategy": strategy, "checkpoint_every": 0,
                      "local_epochs": args.local_epochs, **federated},
    }
    return load_scenario("default", deep_merge(overrides, parse_overrides(args.set)))


def config_key(cfg: FedMoEConfig) -> str:
    """A digest of the configuration's settings that differ from the defaults: a kept run is reused only for the
    same ones (a new setting with a default keeps the runs; after a change of code or of a default, use ``--fresh``)."""
    settings = cfg.model_dump(mode="json", exclude_defaults=True)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cached(folder: Path, key: str, fresh: bool) -> dict[str, Any] | None:
    """The kept result in ``folder`` if it was made with configuration ``key`` (and not ``fresh``)."""
    path = folder / "bench.json"
    if fresh or not path.is_file():
        return None
    kept = json.loads(path.read_text())
    return kept if kept.get("config_key") == key else None


def keep(folder: Path, key: str, result: dict[str, Any]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    result = {**result, "config_key": key}
    (folder / "bench.json").write_text(json.dumps(result, indent=1))
    return result


def centralised_on_union(cfg: FedMoEConfig) -> dict[str, Any]:
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


def federated(cfg: FedMoEConfig, out: Path, validate: bool) -> dict[str, Any]:
    """One federated run: its summary, its curve (round, clock, accuracy, energy, …) and, with ``validate``,
    the final model's accuracy on the validation set."""
    t0 = time.perf_counter()
    run = run_federated(cfg, out, progress=True, force=True)
    rows = run.metrics["rounds"]
    result = {"summary": run.metrics["summary"], "wall_s": time.perf_counter() - t0,
              "curve": [{k: r.get(k) for k in ("round", "stage", "clock_s", "accuracy", "energy_j", "latency_s",
                                               "completed", "upload_bits")} for r in rows]}
    if validate:
        world = world_for(cfg)
        evaluator = ServerEvaluator(world, last_round=1, held_out=world.server_validation_set())
        result["validation_accuracy"] = evaluator.evaluate(1, run.arrays)["accuracy"]
    return result


def cost_to_accuracy(curve: list[dict[str, Any]], threshold: float) -> tuple[float, float] | None:
    """``(virtual time, device energy)`` spent until the first evaluated round whose test accuracy reaches
    ``threshold`` (round 0, before any training, costs nothing); None if no round does."""
    energy = 0.0
    for row in curve:
        energy += row.get("energy_j") or 0.0
        if row.get("accuracy") is not None and row["accuracy"] >= threshold:
            return float(row["clock_s"]), energy
    return None


def against_fedavg(moe: dict[str, Any], base: dict[str, Any], central: dict[str, Any]) -> dict[str, Any]:
    """One seed's ratios of a MoE run: accuracy to the centralised one, time and energy to FedAvg's final accuracy
    over FedAvg's own (None when the MoE run never reaches it)."""
    final = base["summary"]["accuracy"]
    base_cost = cost_to_accuracy(base["curve"], final)
    moe_cost = cost_to_accuracy(moe["curve"], final)
    assert base_cost is not None  # FedAvg reaches its own final accuracy, in its last round at the latest
    ratios: dict[str, Any] = {"accuracy_ratio": moe["summary"]["accuracy"] / central["accuracy"],
                              "time_to_fedavg_ratio": None, "energy_to_fedavg_ratio": None,
                              "fedavg_final_accuracy": final, "fedavg_time_s": base_cost[0],
                              "fedavg_energy_j": base_cost[1]}
    if moe_cost is not None:
        ratios["time_to_fedavg_ratio"] = moe_cost[0] / base_cost[0] if base_cost[0] > 0 else math.inf
        ratios["energy_to_fedavg_ratio"] = moe_cost[1] / base_cost[1] if base_cost[1] > 0 else math.inf
    return ratios


GOALS = {"accuracy_ratio": (">= 0.97", lambda v: v >= 0.97),
         "time_to_fedavg_ratio": ("<= 0.5", lambda v: v <= 0.5),
         "energy_to_fedavg_ratio": ("<= 0.3", lambda v: v <= 0.3)}


def summarise(seeds: list[int], runs: dict[int, dict[str, dict]], central: dict[int, dict]) -> dict[str, Any]:
    """Per variant of ``runs``, mean ± std over the seeds of its final accuracy, validation accuracy, virtual time,
    energy and its ratios (:func:`against_fedavg`); the best MoE variant by validation accuracy, and the targets."""
    table: dict[str, Any] = {}
    names = list(runs[seeds[0]])
    for name in names:
        per_seed = [runs[s][name] for s in seeds]
        row = {"accuracy": mean_std([r["summary"]["accuracy"] for r in per_seed]),
               "virtual_time_s": mean_std([r["summary"]["virtual_time_s"] for r in per_seed]),
               "energy_j": mean_std([r["summary"]["energy_j"] for r in per_seed])}
        if name != BASELINE:
            ratios = [against_fedavg(runs[s][name], runs[s][BASELINE], central[s]) for s in seeds]
            row["validation_accuracy"] = mean_std([r.get("validation_accuracy") for r in per_seed])
            row.update({k: mean_std([r[k] for r in ratios]) for k in GOALS})
        table[name] = row
    moe = [n for n in names if n != BASELINE]
    best = max(moe, key=lambda n: table[n]["validation_accuracy"]["mean"])
    targets = {}
    for key, (goal, ok) in GOALS.items():
        stat = table[best][key]
        met = stat["mean"] is not None and stat["missing"] == 0 and ok(stat["mean"])
        targets[key] = target(stat["mean"], f"{goal} (best MoE variant by validation accuracy: {best}; mean over "
                              f"{len(seeds)} seeds)", met, std=stat["std"], variant=best,
                              seeds_without_value=stat["missing"])
    return {"variants": table, "best_variant": best, "targets": targets}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated names among {', '.join(VARIANTS)} ({BASELINE} is always run)")
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--samples-per-device", type=int, default=800)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--stage1-rounds", type=int, default=10)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=5)
    p.add_argument("--test-samples", type=int, default=4000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run, e.g. wireless.channel.bs_array_gain='codebook'")
    p.add_argument("--fresh", action="store_true", help="rerun the runs kept from an earlier call")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    chosen = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    variants = {name: spec for name, spec in VARIANTS.items() if name in chosen or name == BASELINE}
    torch.set_num_threads(1)
    kept = args.out.parent / "federated_quality_runs"
    t0 = time.perf_counter()
    runs: dict[int, dict[str, dict]] = {}
    central: dict[int, dict] = {}
    for seed in args.seeds:
        configs = {name: bench_config(args, seed, strategy, fed) for name, (strategy, fed) in variants.items()}
        folder = kept / f"seed{seed}"
        mixture = bench_config(args, seed, "expert_wise", {})
        central[seed] = (cached(folder / "centralised", config_key(mixture), args.fresh)
                         or keep(folder / "centralised", config_key(mixture), centralised_on_union(mixture)))
        runs[seed] = {}
        for name, cfg in configs.items():
            key = config_key(cfg)
            runs[seed][name] = (cached(folder / name, key, args.fresh)
                                or keep(folder / name, key, federated(cfg, folder / name / "run", name != BASELINE)))
    summary = summarise(args.seeds, runs, central)
    ref_cfg = bench_config(args, args.seeds[0], "expert_wise", {})
    doc = {
        "benchmark": "federated_quality",
        "machine": machine(),
        "setup": {"seeds": args.seeds, "devices": args.devices, "samples_per_device": args.samples_per_device,
                  "rounds": args.rounds, "stage1_rounds": args.stage1_rounds, "per_round": args.per_round,
                  "local_epochs": args.local_epochs, "test_samples": args.test_samples, "overrides": args.set,
                  "model": ref_cfg.model.model_dump(mode="json"), "train": ref_cfg.train.model_dump(mode="json"),
                  "wireless": ref_cfg.wireless.model_dump(mode="json"), "deadline_s": ref_cfg.federated.deadline_s,
                  "variants": {name: {"strategy": strategy, **fed} for name, (strategy, fed) in variants.items()}},
        "targets": summary["targets"],
        "best_variant": summary["best_variant"],
        "centralised": {"accuracy": mean_std([central[s]["accuracy"] for s in args.seeds]),
                        "per_seed": {str(s): central[s] for s in args.seeds}},
        "variants": summary["variants"],
        "curves_seed": args.seeds[0],
        "curves": {name: runs[args.seeds[0]][name]["curve"] for name in variants},
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    plot(doc, args.out.with_suffix(".png"))
    print(table(doc))
    print(json.dumps(doc["targets"], indent=2))
    return 0


def _pm(stat: dict[str, Any], fmt: str) -> str:
    if stat["mean"] is None:
        return "never"
    text = f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}"
    return text + (f" ({stat['missing']} never)" if stat["missing"] else "")


def table(doc: dict[str, Any]) -> str:
    """The variants side by side (Markdown), as in docs/federated.md."""
    lines = ["| variant | test accuracy | validation accuracy | vs centralised | time to FedAvg's final | "
             "energy to FedAvg's final | virtual time (s) | energy (J) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in doc["variants"].items():
        cells = [_pm(row["accuracy"], ".3f")]
        if name == BASELINE:
            cells += ["", "", "1", "1"]
        else:
            cells += [_pm(row["validation_accuracy"], ".3f"), _pm(row["accuracy_ratio"], ".3f"),
                      _pm(row["time_to_fedavg_ratio"], ".3g"), _pm(row["energy_to_fedavg_ratio"], ".3g")]
        cells += [_pm(row["virtual_time_s"], ".3g"), _pm(row["energy_j"], ".3g")]
        mark = " (best)" if name == doc["best_variant"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, curve in doc["curves"].items():
        label = LABELS.get(name, name)
        rows = [r for r in curve if r.get("accuracy") is not None and r["clock_s"] > 0]
        axes[0].plot([r["clock_s"] for r in rows], [r["accuracy"] for r in rows], marker=".", label=label)
        energy = np.cumsum([r.get("energy_j") or 0.0 for r in curve])
        have = [i for i, r in enumerate(curve) if r.get("accuracy") is not None and energy[i] > 0]
        axes[1].plot(energy[have], [curve[i]["accuracy"] for i in have], marker=".", label=label)
    central = doc["centralised"]["accuracy"]["mean"]
    for ax in axes[:2]:
        ax.axhline(central, color="k", ls="--", lw=1, label="centralised")
        ax.axhline(0.97 * central, color="gray", ls=":", lw=1, label="97 % of centralised")
        ax.set_xscale("log")
        ax.set_ylabel("test beam accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel(f"virtual time (s, log; seed {doc['curves_seed']})")
    axes[1].set_xlabel("device energy spent (J, log)")
    axes[0].legend(fontsize=7)
    names = list(doc["variants"])
    means = [doc["variants"][n]["accuracy"]["mean"] for n in names]
    stds = [doc["variants"][n]["accuracy"]["std"] for n in names]
    axes[2].barh(names, means, xerr=stds, color=["tab:red" if n == doc["best_variant"] else "tab:blue" for n in names])
    axes[2].axvline(central, color="k", ls="--", lw=1)
    axes[2].set_xlabel(f"final test accuracy (mean ± std, {len(doc['setup']['seeds'])} seeds)")
    axes[2].set_xlim(left=min(means) * 0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
