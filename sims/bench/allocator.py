"""Benchmark of the exact allocator against the MILP reference (HiGHS), side by side.

    python -m sims.bench.allocator [--out sims/bench/results/allocator.json] [--repeats 7]

For K = 10, 100, 1000 devices of a default-config drop (:func:`sample_device_profiles`;
devices with a per-RB SNR below 0 dB are not admitted, else the weakest device of a large
drop takes nearly all RBs), times three problems with both solvers on the same instance:

* ``min_latency``: minimum round latency with ``N_rb = 2K`` resource blocks;
* ``weighted_selection``: most local samples (integer weights 50-500) meeting a deadline,
  with ``N_rb = K/2`` (at least 5);
* ``count_selection``: most devices meeting the same deadline and budget.

The deadline is the median over devices of the latency with 4 RBs. Each solver runs once
to warm up, then ``repeats`` times; the median wall time is reported. Objectives must be
identical (latency to 1e-9 relative, selection objectives exactly).
Targets: exact allocator below 20 ms at K = 1000 and at least 20x faster than the MILP.

The MILP of :mod:`fedmoe.wireless.milp` restricts each device's RB count to a window that
provably holds an optimum; for scale, the plain assignment MILP (all ``b``) is also timed
once at K <= 100 (``plain_milp`` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy

from fedmoe.config import WirelessConfig
from fedmoe.wireless.allocator import UplinkInstance, min_round_latency, select_devices
from fedmoe.wireless.devices import allocation_inputs, sample_device_profiles
from fedmoe.wireless.milp import milp_min_round_latency, milp_select_devices
from sims.bench.common import machine, target

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "allocator.json"
SIZES = (10, 100, 1000)
TARGET_MS = 20.0
TARGET_SPEEDUP = 20.0
PLAIN_MAX_K = 100
MIN_SNR_DB = 0.0
PLAIN_TIME_LIMIT_S = 120.0


def make_instance(num_devices: int, seed: int = 0) -> dict[str, Any]:
    """Allocator inputs of a default-config drop, admitting devices with a per-RB SNR of at
    least ``MIN_SNR_DB``: uploads of 0.1-2 Mbit after sensing and 1e8-2e9 FLOPs of local work."""
    cfg = WirelessConfig()
    rng = np.random.default_rng(seed)
    prof = sample_device_profiles(cfg, num_devices, rng, min_snr_db=MIN_SNR_DB)
    return allocation_inputs(prof, cfg, rng.uniform(1e5, 2e6, num_devices), rng.uniform(1e8, 2e9, num_devices))


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``fn`` in ms over ``repeats`` runs after one warm-up; and its result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), result


def bench_size(k: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    kw = make_instance(k, seed)
    rng = np.random.default_rng(seed + 1)
    weights = rng.integers(50, 501, k).astype(float)
    n_lat, n_sel = 2 * k, max(5, k // 2)
    inst = UplinkInstance.from_arrays(kw["bits"], kw["gains"], kw["powers"], kw["fixed_latency"], n_lat,
                                      kw["rb_hz"], kw["noise_psd_w_hz"])
    deadline = float(np.median(inst.latency(np.arange(k), np.full(k, 4))))
    problems = {
        "min_latency": (n_lat, lambda: min_round_latency(num_rb=n_lat, **kw),
                        lambda: milp_min_round_latency(num_rb=n_lat, **kw)),
        "weighted_selection": (n_sel, lambda: select_devices(deadline=deadline, num_rb=n_sel, weights=weights, **kw),
                               lambda: milp_select_devices(deadline=deadline, num_rb=n_sel, weights=weights, **kw)),
        "count_selection": (n_sel, lambda: select_devices(deadline=deadline, num_rb=n_sel, **kw),
                            lambda: milp_select_devices(deadline=deadline, num_rb=n_sel, **kw)),
    }
    rows = []
    plain = None
    if k <= PLAIN_MAX_K:  # the assignment MILP without windows: one timed run, for scale
        t0 = time.perf_counter()
        res = milp_min_round_latency(num_rb=n_lat, window=False, time_limit=PLAIN_TIME_LIMIT_S, **kw)
        plain = {"ms": 1e3 * (time.perf_counter() - t0), "latency": res.latency, "solved": res.feasible}
    for name, (num_rb, exact_fn, milp_fn) in problems.items():
        exact_ms, exact = median_ms(exact_fn, repeats)
        milp_ms, ref = median_ms(milp_fn, repeats)
        if name == "min_latency":
            obj_exact, obj_milp = exact.latency, ref.latency
            identical = bool(abs(obj_exact - obj_milp) <= 1e-9 * abs(obj_milp))
        else:
            obj_exact, obj_milp = exact.objective, ref.objective
            identical = bool(obj_exact == obj_milp)
        rows.append({
            "problem": name, "num_devices": k, "num_rb": num_rb,
            "deadline_s": None if name == "min_latency" else deadline,
            "exact_ms": exact_ms, "milp_ms": milp_ms, "speedup": milp_ms / exact_ms,
            "objective_exact": obj_exact, "objective_milp": obj_milp, "identical": identical,
            "feasible": bool(exact.feasible and ref.feasible),
        })
        if name == "min_latency" and plain is not None:
            rel = abs(plain["latency"] - obj_exact) / abs(obj_exact) if plain["solved"] else float("inf")
            rows[-1]["plain_milp"] = {**plain, "rel_diff": rel, "identical": bool(rel <= 1e-9)}
    return rows


def allocator_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``targets`` object: at the largest K, the exact allocator's slowest time and its smallest speed-up
    over the MILP (min-latency and weighted selection), and whether every optimum equals the MILP's."""
    big = [r for r in rows if r["num_devices"] == max(SIZES) and r["problem"] in ("min_latency", "weighted_selection")]
    slowest = max(r["exact_ms"] for r in big)
    speedup = min(r["speedup"] for r in big)
    identical = all(r["identical"] and r["feasible"] for r in rows)
    return {"exact_ms_at_largest_k": target(slowest, f"< {TARGET_MS:g} ms at K={max(SIZES)}", slowest < TARGET_MS),
            "speedup_over_milp": target(speedup, f">= {TARGET_SPEEDUP:g}x at K={max(SIZES)}",
                                        speedup >= TARGET_SPEEDUP),
            "identical_optima": target(identical, "every optimum equals the MILP's", identical)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [row for k in SIZES for row in bench_size(k, args.repeats, args.seed)]
    targets = allocator_targets(rows)
    result = {
        "benchmark": "allocator",
        "machine": machine(scipy=scipy.__version__),
        "repeats": args.repeats, "seed": args.seed, "min_snr_db": MIN_SNR_DB,
        "results": rows,
        "targets": targets,
    }
    print(f"{'problem':<20}{'K':>6}{'N_rb':>6}{'exact ms':>10}{'MILP ms':>10}{'speedup':>9}  identical")
    for r in rows:
        print(f"{r['problem']:<20}{r['num_devices']:>6}{r['num_rb']:>6}{r['exact_ms']:>10.2f}{r['milp_ms']:>10.1f}"
              f"{r['speedup']:>8.0f}x  {r['identical']}")
    for r in rows:
        if "plain_milp" in r:
            p = r["plain_milp"]
            print(f"plain assignment MILP (no windows), min_latency K={r['num_devices']}: {p['ms']:.0f} ms, "
                  f"relative difference {p['rel_diff']:.1e}")
    print(f"targets (K={max(SIZES)}: exact < {TARGET_MS:g} ms, >= {TARGET_SPEEDUP:g}x MILP): "
          f"{'met' if targets['exact_ms_at_largest_k']['met'] and targets['speedup_over_milp']['met'] else 'NOT met'}; "
          f"identical optima: {targets['identical_optima']['met']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
