"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pytest

from fedmoe.config import MODALITIES
from fedmoe.data.samples import ISACSamples


def pytest_configure(config) -> None:
    """Centralised references (fedmoe.federated.reference) are cached in a folder of this test session, never in
    the user's home."""
    import os
    import tempfile

    os.environ["FEDMOE_CACHE"] = tempfile.mkdtemp(prefix="fedmoe-cache-")


def random_samples(n: int, rng: np.random.Generator, num_beams: int = 64) -> ISACSamples:
    """Random (not physical) samples with the synthetic generator's default shapes.

    For tests of code that handles containers (partitioners, I/O, batching), not of the
    generator's physics.
    """
    inputs = {
        "camera": rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8),
        "lidar": rng.random((n, 16), dtype=np.float32),
        "radar": rng.random((n, 2, 4, 4), dtype=np.float32),
        "gps": rng.standard_normal((n, 6)).astype(np.float32),
        "rf": rng.standard_normal((n, 8)).astype(np.float32),
    }
    labels = {
        "beam": rng.integers(0, num_beams, size=n).astype(np.int64),
        "pathloss_db": rng.uniform(80, 140, size=n).astype(np.float32),
        "next_position": rng.standard_normal((n, 3)).astype(np.float32),
    }
    conditions = {
        "blocked": rng.random(n) < 0.4,
        "is_uav": rng.random(n) < 0.25,
        "position": rng.standard_normal((n, 3)).astype(np.float32),
    }
    bits = {m: int(inputs[m][0].size * (8 if m == "camera" else 32)) for m in MODALITIES}
    return ISACSamples(inputs, np.ones((n, len(MODALITIES)), dtype=bool), labels, conditions, bits)


@pytest.fixture
def make_samples() -> Callable[..., ISACSamples]:
    """Factory: ``make_samples(n, seed=0, num_beams=64)`` -> random :class:`ISACSamples`."""

    def _make(n: int, seed: int = 0, num_beams: int = 64) -> ISACSamples:
        return random_samples(n, np.random.default_rng(seed), num_beams)

    return _make


def run_cli_on_ray(scenario: str, out: Path, sets: Iterable[str]) -> int:
    """``fedmoe run --scenario SCENARIO --out OUT --quiet --set K=V …`` in this process: the real
    ServerApp and ClientApp on Flower's Ray backend. Returns the exit code."""
    from fedmoe.cli import main

    return main(["run", "--scenario", scenario, "--out", str(out), "--quiet"] + [a for s in sets for a in ("--set", s)])


@pytest.fixture
def trace_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``trace_file(rows, header="device,time_s,gain_db,blocked", name="trace.csv")`` writes a channel
    trace file (``docs/traces.md``) of the given rows (tuples or strings) and returns its path."""

    def _write(rows: Iterable, header: str = "device,time_s,gain_db,blocked", name: str = "trace.csv") -> Path:
        path = tmp_path / name
        lines = [header] + [r if isinstance(r, str) else ",".join(str(v) for v in r) for r in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    return _write
