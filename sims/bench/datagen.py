"""Benchmark of the synthetic ISAC generator: samples/s and bytes/sample at the default size.

    python -m sims.bench.datagen [--num-samples 100000] [--out sims/bench/results/datagen.json]

Also measures building device partitions lazily (``make_device_partition`` for a few
device ids of a 1,000-device federation), which never materialises the other devices.
Target (issue 3): 100k default samples in well under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedmoe.config import DataConfig, PartitionConfig
from fedmoe.data.partition import make_device_partition
from fedmoe.data.synthetic import generate, synthetic_source
from sims.bench.common import machine, target

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "datagen.json"


def bench_generation(num_samples: int, seed: int = 0) -> dict:
    cfg = DataConfig()
    t0 = time.perf_counter()
    samples = generate(cfg, num_samples=num_samples, seed=seed, progress=True)
    elapsed = time.perf_counter() - t0
    per_modality = {m: int(a.nbytes // len(samples)) for m, a in samples.inputs.items()}
    return {
        "num_samples": len(samples),
        "seconds": elapsed,
        "samples_per_second": len(samples) / elapsed,
        "bytes_per_sample": samples.nbytes / len(samples),
        "bytes_per_sample_by_modality": per_modality,
        "uplink_bits_per_sample": samples.bits_per_sample,
        "blocked_fraction": float(samples.conditions["blocked"].mean()),
    }


def bench_lazy_partitions(label_skew: str, num_devices: int = 1000, probe: tuple[int, ...] = (0, 499, 999),
                          seed: int = 0) -> dict:
    """Time to build single devices of a 1,000-device federation (500 samples each), alone."""
    cfg = PartitionConfig(num_devices=num_devices, samples_per_device=500, label_skew=label_skew)
    source = synthetic_source(DataConfig())
    times = []
    for device_id in probe:
        t0 = time.perf_counter()
        part = make_device_partition(source, cfg, seed, device_id, 64)
        times.append(time.perf_counter() - t0)
        assert len(part.samples) > 0
    return {"num_devices": num_devices, "label_skew": label_skew, "samples_per_device": 500,
            "probed_device_ids": list(probe), "seconds_per_device": float(np.median(times)),
            "estimated_seconds_all_devices": float(np.median(times) * num_devices)}


def datagen_targets(gen: dict) -> dict:
    """The ``targets`` object: 100,000 samples generated in under a minute."""
    done = gen["num_samples"] >= 100_000
    return {"seconds_for_100k_samples": target(gen["seconds"] if done else None, "< 60 s for >= 100,000 samples",
                                               done and gen["seconds"] < 60.0)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    gen = bench_generation(args.num_samples)
    lazy = [bench_lazy_partitions(skew) for skew in ("iid", "dirichlet")]
    result = {
        "benchmark": "datagen",
        "machine": machine(),
        "generation": gen,
        "lazy_partitions": lazy,
        "targets": datagen_targets(gen),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{gen['num_samples']} samples in {gen['seconds']:.1f} s = {gen['samples_per_second']:,.0f} samples/s, "
          f"{gen['bytes_per_sample'] / 1e3:.2f} kB/sample")
    for row in lazy:
        print(f"lazy partition ({row['label_skew']}): {row['seconds_per_device']:.2f} s per device")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
