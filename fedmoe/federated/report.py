"""The run folder of ``fedmoe run``: config copy, ``metrics.json``, ``rounds.csv`` and plots.

::

    <out>/config.json              the resolved configuration
    <out>/scenario.toml            the scenario file it came from (when there was one)
    <out>/metrics.json             per-round records (virtual clock, energy, test accuracy) and the final summary
    <out>/rounds.csv               the same per-round table for spreadsheets (appended round by round:
                                   :mod:`fedmoe.federated.live_log`, with devices.csv and tensorboard/)
    <out>/checkpoints/*.pt         global model every ``federated.checkpoint_every`` rounds and final.pt
    <out>/accuracy.png             test accuracy vs rounds and vs virtual time
    <out>/energy.png               energy and latency per round
    <out>/gate_usage.png           expert usage in local training per device class (stage II)
    <out>/policy.png               the gate's choice on the test set by condition, uplink bits by link class
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from fedmoe.files import write_atomic
from fedmoe.models.device_costs import LINK_CLASSES

CSV_COLUMNS = ("round", "stage", "selected", "completed", "failed", "planned_latency_s", "latency_s", "energy_j",
               "clock_s", "upload_bits", "train_loss", "accuracy", "accuracy_los", "accuracy_blocked", "top1", "topk",
               "power_ratio_db", "costly_share_los", "costly_share_blocked",
               "inference_latency_s", "inference_energy_j", "gate_entropy")


def csv_text(columns: Sequence[str], rows: Iterable[dict[str, Any]], header: bool) -> str:
    """``rows`` as CSV lines of ``columns`` (a missing value: empty), with the header line first if ``header``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in columns})
    return buf.getvalue()


def round_rows(history: Sequence[Any], evaluations: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Round records merged with the test metrics of the same round (round 0: the initial model)."""
    rows = []
    if 0 in evaluations:
        rows.append({"round": 0, "stage": 0, "clock_s": 0.0, "energy_j": 0.0, "latency_s": 0.0, **evaluations[0]})
    for rec in history:
        row = asdict(rec) if not isinstance(rec, dict) else dict(rec)
        row.update(evaluations.get(row["round"], {}))
        rows.append(row)
    return rows


def final_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Last evaluated scores (``accuracy`` is the main score, ``score`` names it), the costly-sensor share by
    condition and uplink bits per sample by link class, total virtual time and energy, rounds completed."""
    evaluated = [r for r in rows if "accuracy" in r]
    trained = [r for r in rows if r["round"] > 0]
    last = evaluated[-1] if evaluated else {}
    return {
        "rounds": len(trained),
        "score": last.get("score"),
        "accuracy": last.get("accuracy"),
        "top1": last.get("top1"),
        "topk": last.get("topk"),
        "power_ratio_db": last.get("power_ratio_db"),
        "costly_share_los": last.get("costly_share_los"),
        "costly_share_blocked": last.get("costly_share_blocked"),
        "uplink_bits_by_class": last.get("uplink_bits"),
        "accuracy_los": last.get("accuracy_los"),
        "accuracy_blocked": last.get("accuracy_blocked"),
        "inference_latency_s": last.get("inference_latency_s"),
        "inference_energy_j": last.get("inference_energy_j"),
        "best_accuracy": max((r["accuracy"] for r in evaluated), default=None),
        "virtual_time_s": trained[-1]["clock_s"] if trained else 0.0,
        "energy_j": float(sum(r.get("energy_j", 0.0) for r in trained)),
        "mean_energy_per_round_j": float(sum(r.get("energy_j", 0.0) for r in trained) / max(len(trained), 1)),
        "failed_updates": int(sum(r.get("failed", 0) for r in trained)),
    }


def time_to_accuracy(rows: list[dict[str, Any]], target: float) -> float | None:
    """Virtual time of the first evaluated round whose accuracy reaches ``target`` (None if never)."""
    for r in rows:
        if r.get("accuracy") is not None and r["accuracy"] >= target:
            return float(r["clock_s"])
    return None


def metrics_document(rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``metrics.json``: the final summary, the round rows and ``extra`` facts of the run."""
    return {"summary": final_summary(rows), "rounds": rows, **(extra or {})}


def write_run(out: Path, config: dict[str, Any], doc: dict[str, Any], scenario_file: Path | None = None,
              expert_names: Sequence[str] | None = None, rounds_csv: bool = True) -> None:
    """Write config, ``doc`` (:func:`metrics_document`) as metrics.json, rounds.csv (unless ``rounds_csv`` is
    false: the run appended it round by round, :mod:`fedmoe.federated.live_log`) and the plots."""
    rows = doc["rounds"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if scenario_file is not None and scenario_file.is_file():
        (out / "scenario.toml").write_text(scenario_file.read_text())
    write_atomic(out / "metrics.json", json.dumps(doc, indent=2, default=_jsonable).encode())
    if rounds_csv:
        write_atomic(out / "rounds.csv", csv_text(CSV_COLUMNS, rows, header=True).encode())
    plot_run(out, rows, expert_names)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def plot_run(out: Path, rows: list[dict[str, Any]], expert_names: Sequence[str] | None = None) -> None:
    """accuracy.png, energy.png and gate_usage.png from the round rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = [r for r in rows if r.get("accuracy") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, x_key, label in ((axes[0], "round", "round"), (axes[1], "clock_s", "virtual time (s)")):
        for key, name in (("accuracy", "all"), ("accuracy_los", "LoS"), ("accuracy_blocked", "blocked")):
            ax.plot([r[x_key] for r in ev], [r.get(key) for r in ev], marker="o" if key == "accuracy" else None,
                    ms=3, label=name, lw=2 if key == "accuracy" else 1)
        ax.set_xlabel(label)
        ax.set_ylabel(f"test beam {ev[-1].get('score', 'top1') if ev else 'accuracy'}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Global model on the server's held-out set")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    trained = [r for r in rows if r["round"] > 0]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    rounds = [r["round"] for r in trained]
    ax.bar(rounds, [r["energy_j"] for r in trained], color="tab:orange", label="energy (all devices)")
    ax.set_xlabel("round")
    ax.set_ylabel("energy per round (J)")
    ax2 = ax.twinx()
    ax2.plot(rounds, [r["latency_s"] for r in trained], "k.-", label="round latency")
    ax2.set_ylabel("round latency (s, slowest device)")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "energy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.8))
    chosen = ev[-1].get("gate_usage_by_class") if ev else None
    stage2 = [r for r in trained if r.get("stage") == 2 and r.get("usage_by_class")]
    if chosen:  # what the gate selects on the server's test set, by the link class of the sample's device
        by_class, title, ylabel = chosen, "Gate's choice on the test set by link class (final model)", \
            "share of test samples"
    elif stage2:  # no evaluation: the devices' own training usage in the stage-II rounds
        classes = sorted({c for r in stage2 for c in r["usage_by_class"]})
        by_class = {}
        for c in classes:
            seen = [r["usage_by_class"][c] for r in stage2 if c in r["usage_by_class"]]
            by_class[c] = [sum(u[i] for u in seen) / len(seen) for i in range(len(seen[0]))]
        title, ylabel = "Expert usage in local training by device class (stage II rounds)", "share of local samples"
    else:
        by_class = {}
    if by_class:
        order = [c for c in LINK_CLASSES if c in by_class] + sorted(c for c in by_class if c not in LINK_CLASSES)
        num_experts = len(by_class[order[0]])
        width = 0.8 / len(order)
        for j, c in enumerate(order):
            ax.bar([i + j * width for i in range(num_experts)], by_class[c], width, label=f"{c} uplink")
        names = list(expert_names) if expert_names else [str(i) for i in range(num_experts)]
        ax.set_xticks([i + 0.4 - width / 2 for i in range(num_experts)], names, rotation=30, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.set_title(title)
    else:
        ax.text(0.5, 0.5, "no stage-II round", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out / "gate_usage.png", dpi=120)
    plt.close(fig)
    if ev and ev[-1].get("usage_by_condition"):
        plot_policy(out / "policy.png", ev[-1], expert_names)


def plot_policy(path: Path, row: dict[str, Any], expert_names: Sequence[str] | None = None) -> None:
    """policy.png: what the gate selects on the test set, by condition (left) and uplink bits by link class (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usage = row["usage_by_condition"]
    num = len(usage["los"])
    names = list(expert_names) if expert_names else [str(i) for i in range(num)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for j, (cond, colour) in enumerate((("los", "tab:green"), ("blocked", "tab:red"))):
        axes[0].bar([i + 0.4 * j for i in range(num)], usage[cond], 0.4, color=colour, label=cond)
    axes[0].set_xticks([i + 0.2 for i in range(num)], names, rotation=30, fontsize=8)
    axes[0].set_ylabel("share of test samples")
    axes[0].set_title(f"gate's choice: costly sensors for {row.get('costly_share_los', float('nan')):.0%} of LoS, "
                      f"{row.get('costly_share_blocked', float('nan')):.0%} of blocked", fontsize=9)
    axes[0].legend()
    bits = {k: v for k, v in (row.get("uplink_bits") or {}).items() if k != "all"}
    order = [c for c in LINK_CLASSES if c in bits] + [c for c in bits if c not in LINK_CLASSES]
    axes[1].bar(order, [bits[c] for c in order], color="tab:blue")
    axes[1].set_ylabel("uplink bits per sample")
    axes[1].set_title("what each link class sends", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
