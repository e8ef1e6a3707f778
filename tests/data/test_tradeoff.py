"""The trade-off the synthetic world exists for, measured with the quick baselines.

In LoS the cheap modalities (GPS + RF, 224 bits) predict the best beam almost as well as
adding the radar (16 kbit); under blockage they fall far behind. This trains real models
(about a minute on 2 cores) and checks the numbers ``fedmoe data stats`` reports.
"""

from __future__ import annotations

import pytest

from fedmoe.config import DataConfig
from fedmoe.data.stats import modality_baselines
from fedmoe.data.synthetic import generate, train_test_split


@pytest.fixture(scope="module")
def results() -> dict:
    samples = generate(DataConfig(), num_samples=20_000, seed=123)
    train, test = train_test_split(samples, 0.2, seed=0)
    groups = {"gps": ("gps",), "gps+rf": ("gps", "rf"), "gps+rf+radar": ("radar", "gps", "rf")}
    return {r.group: r for r in modality_baselines(train, test, 64, groups=groups, epochs=10, seed=0)}


def best_cheap(results: dict, metric: str, condition: str) -> float:
    """The better of the two cheap groups (GPS alone, GPS + RF) on one metric and condition."""
    return max(getattr(results[g], metric)[condition] for g in ("gps", "gps+rf"))


def test_cheap_modalities_suffice_in_los(results):
    rich = results["gps+rf+radar"]
    assert best_cheap(results, "top3", "los") > 0.95
    assert rich.top3["los"] - best_cheap(results, "top3", "los") < 0.05


def test_blockage_needs_the_costly_modality(results):
    rich = results["gps+rf+radar"]
    for metric in ("top1", "top3"):  # blockage hurts the cheap groups
        assert best_cheap(results, metric, "blocked") < best_cheap(results, metric, "los") - 0.1
    assert rich.top3["blocked"] - best_cheap(results, "top3", "blocked") > 0.08
    assert rich.top1["blocked"] - best_cheap(results, "top1", "blocked") > 0.10
    # The radar's gain is far larger under blockage than in LoS (top-3).
    gain = {c: rich.top3[c] - best_cheap(results, "top3", c) for c in ("los", "blocked")}
    assert gain["blocked"] > 3 * gain["los"]
