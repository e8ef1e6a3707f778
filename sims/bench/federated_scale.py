"""Scale of the federated simulation: 10,000 devices, 1,000 per round (scenario ``many_weak_devices``).

    python -m sims.bench.federated_scale [--rounds 3] [--devices 10000] [--per-round 1000]

Reports seconds per round (wall), the start-up and device discovery (QUERY to every node),
and the peak RSS summed over this process and all Ray processes (:mod:`sims.bench.memory`,
an upper bound). The uplink has a 200 kHz resource block for each device of a round
(:func:`sims.bench.common.uplink_hz`: 200 MHz for 1,000). Partitions are built lazily by each client (no cache:
``federated.partition_cache = 0``), so the driver never holds the devices' data.
Targets (issue 19): peak memory < 8 GiB and <= 60 s per round after the first, at 10,000 devices
with 1,000 per round.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedmoe.scenarios import load_scenario
from fedmoe.simulation import run_federated
from sims.bench.common import machine, target, uplink_hz
from sims.bench.memory import PeakMemory

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "federated_scale.json"


def scale_targets(devices: int, per_round: int, peak_gib: float, seconds_per_round: float | None) -> dict:
    """The ``targets`` object of issue 19: at 10,000 devices with 1,000 per round, peak memory of all processes
    < 8 GiB and <= 60 s per round after the first; a run at a smaller size does not meet them."""
    at_size = devices >= 10_000 and per_round >= 1_000
    size = f"(measured at {devices} devices, {per_round} per round)"
    return {"peak_memory": target(peak_gib, f"< 8 GiB at 10,000 devices, 1,000 per round {size}",
                                  at_size and peak_gib < 8.0),
            "seconds_per_round": target(seconds_per_round, f"<= 60 s after the first round at 10,000 devices, "
                                        f"1,000 per round {size}",
                                        at_size and seconds_per_round is not None and seconds_per_round <= 60.0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--per-round", type=int, default=1_000)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    cfg = load_scenario("many_weak_devices", {
        "partition": {"num_devices": args.devices},
        "wireless": {"uplink": {"total_bandwidth_hz": uplink_hz(args.per_round)}},
        "federated": {"rounds": args.rounds, "stage1_rounds": min(1, args.rounds), "clients_per_round": args.per_round,
                      "checkpoint_every": 0}})
    stamps, records = [], []

    def on_round(rec) -> None:
        stamps.append(time.perf_counter())
        records.append({"round": rec.round, "completed": rec.completed, "failed": rec.failed,
                        "virtual_latency_s": rec.latency_s})

    t0 = time.perf_counter()
    with PeakMemory() as mem:
        run = run_federated(cfg, None, progress=True, on_round=on_round)
    per_round = np.diff([t0] + stamps)
    doc = {"benchmark": "federated_scale",
           "machine": machine(),
           "setup": {"devices": args.devices, "per_round": args.per_round, "rounds": args.rounds,
                     "uplink_bandwidth_hz": uplink_hz(args.per_round),
                     "scenario": "many_weak_devices"},
           "first_round_incl_startup_and_discovery_s": float(per_round[0]),
           "seconds_per_round_after_first": float(np.mean(per_round[1:])) if len(per_round) > 1 else None,
           "round_s": per_round.tolist(), "rounds": records, "total_s": time.perf_counter() - t0,
           "peak_rss_gib_all_processes": mem.peak_rss_bytes / 2**30,
           "peak_rss_gib_driver": mem.peak_self_bytes / 2**30,
           "final_accuracy": run.metrics["summary"]["accuracy"],
           "targets": scale_targets(args.devices, args.per_round, mem.peak_rss_bytes / 2**30,
                                    float(np.mean(per_round[1:])) if len(per_round) > 1 else None)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v for k, v in doc.items() if k not in ("round_s", "rounds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
