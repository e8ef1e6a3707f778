"""Dataset summary and the quick per-modality baselines of ``fedmoe data stats``."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.data.stats import (
    DEFAULT_GROUPS,
    dataset_summary,
    format_baseline_table,
    modality_baselines,
    train_beam_baseline,
)


def test_summary_counts(make_samples):
    s = make_samples(500, seed=1, num_beams=4)
    summary = dataset_summary(s)
    assert summary["num_samples"] == 500
    assert summary["blocked_fraction"] == pytest.approx(s.conditions["blocked"].mean())
    assert summary["bytes_per_sample"] == pytest.approx(s.nbytes / 500)
    assert 1.9 < summary["beam_entropy_bits"] <= 2.0  # ~uniform over 4 beams
    assert set(summary["modality_present_fraction"]) == set(DEFAULT_GROUPS["all"])


def test_baseline_learns_an_informative_modality_and_not_a_useless_one(make_samples):
    """Beam written into the GPS input (plus noise): GPS must be near-perfect, RF at chance."""
    train, test = make_samples(1200, seed=2, num_beams=4), make_samples(400, seed=3, num_beams=4)
    for s in (train, test):
        s.inputs["gps"][:, 0] = s.labels["beam"] + 0.1 * s.inputs["gps"][:, 1]
    gps = train_beam_baseline(train, test, ("gps",), num_classes=4, epochs=15)
    rf = train_beam_baseline(train, test, ("rf",), num_classes=4, epochs=15)
    assert gps.top1["all"] > 0.95
    assert rf.top1["all"] < 0.4
    assert gps.top3["all"] >= gps.top1["all"]
    assert set(gps.top1) == {"all", "los", "blocked"}
    assert gps.bits_per_sample == train.bits_per_sample["gps"]


def test_groups_with_a_missing_modality_are_skipped(make_samples):
    train, test = make_samples(300, seed=4, num_beams=4), make_samples(100, seed=5, num_beams=4)
    for s in (train, test):
        del s.inputs["camera"]
    results = modality_baselines(train, test, 4, groups={"gps": ("gps",), "camera": ("camera",)}, epochs=1)
    assert [r.group for r in results] == ["gps"]
    table = format_baseline_table(results)
    assert table.splitlines()[0].startswith("modalities") and "gps" in table.splitlines()[2]
    assert results[0].as_dict()["modalities"] == ["gps"]


def test_standardisation_uses_training_statistics(make_samples):
    from fedmoe.data.stats import standardised

    train, test = make_samples(200, seed=6), make_samples(50, seed=7)
    test.inputs["rf"] += 100.0
    x_tr, x_te = standardised(train, test, "rf")
    assert np.allclose(x_tr.mean(0).numpy(), 0.0, atol=1e-5)
    assert (x_te.mean(0).numpy() > 50).all()  # the test split is *not* re-centred
