"""Partitioners: determinism, stream independence, label/quantity skew, modalities, degradation, eager split.

Statistical thresholds are derived from the distributions involved (stated at each test),
with margins of about 4 standard errors, never tuned to the observed values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedmoe.config import MODALITIES, PartitionConfig
from fedmoe.data import partition as P
from fedmoe.data.partition import (
    LABEL_SKEWS,
    PoolPolicy,
    device_degradation,
    device_modalities,
    device_rng,
    importance_resample,
    local_size,
    make_device_partition,
    split_indices,
    stream_key,
)
from fedmoe.registry import Registry, UnknownNameError
from tests.data.conftest import partition_arrays

REPO = Path(__file__).resolve().parents[2]
C = 10  # classes of the test source (uniform labels)


def cfg_(**kw) -> PartitionConfig:
    base = {"num_devices": 10_000, "samples_per_device": 200}
    return PartitionConfig(**{**base, **kw})


FULL = dict(label_skew="dirichlet", dirichlet_alpha=0.3, quantity_skew="lognormal", quantity_sigma=0.5,
            modality_availability={"camera": 0.5, "lidar": 0.5, "radar": 0.7, "gps": 0.9, "rf": 0.9},
            degradation_noise=0.3, degradation_dropout=0.2)


def histogram(part: P.DevicePartition, num_classes: int = C) -> np.ndarray:
    return np.bincount(part.samples.labels["beam"], minlength=num_classes) / len(part.samples)


# --------------------------------------------------------------------------- random streams and determinism


def test_device_rng_is_keyed_on_seed_device_and_stream():
    draw = lambda *key: device_rng(*key).integers(0, 2**62, size=4).tolist()  # noqa: E731
    assert draw(3, 7, "size") == draw(3, 7, "size")
    keys = [(3, 7, "size"), (4, 7, "size"), (3, 8, "size"), (3, 7, "labels"), (7, 3, "size")]
    assert len({tuple(draw(*k)) for k in keys}) == len(keys)
    # Pinned: the stream hash is SHA-256 based, not Python's salted hash().
    assert stream_key("size") == 16979764044271377612
    assert device_rng(0, 0, "size").integers(0, 2**32) == 576816027


def test_partition_is_deterministic_in_process(make_source):
    cfg = cfg_(**FULL)
    a, b = (partition_arrays(make_device_partition(make_source(C), cfg, 5, 42, C)) for _ in range(2))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_partition_is_deterministic_in_a_fresh_process(make_source, tmp_path):
    cfg = cfg_(**FULL)
    code = (
        "import sys, json, numpy as np\n"
        "from fedmoe.config import PartitionConfig\n"
        "from fedmoe.data.partition import make_device_partition\n"
        "from tests.data.conftest import partition_arrays, sample_source\n"
        "cfg = PartitionConfig(**json.loads(sys.argv[1]))\n"
        f"part = make_device_partition(sample_source({C}), cfg, 5, 42, {C})\n"
        "np.savez(sys.argv[2], **partition_arrays(part))\n"
    )
    out = tmp_path / "part.npz"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, cfg.model_dump_json(), str(out)], cwd=REPO, env=env, check=True)
    here = partition_arrays(make_device_partition(make_source(C), cfg, 5, 42, C))
    with np.load(out) as there:
        assert sorted(there.files) == sorted(here)
        for k in here:
            np.testing.assert_array_equal(here[k], there[k], err_msg=k)


def test_aspects_use_independent_streams(make_source):
    base = cfg_(**FULL)
    ref = make_device_partition(make_source(C), base, 1, 3, C)
    # Label skew strength changes the labels, not the sensors, their degradation or the size.
    other = make_device_partition(make_source(C), base.model_copy(update={"dirichlet_alpha": 50.0}), 1, 3, C)
    np.testing.assert_array_equal(ref.modalities, other.modalities)
    np.testing.assert_array_equal(ref.degradation.noise, other.degradation.noise)
    np.testing.assert_array_equal(ref.degradation.dropout, other.degradation.dropout)
    assert len(ref.samples) == len(other.samples)
    assert not np.array_equal(ref.label_proportions, other.label_proportions)
    # Sensor settings change the sensors, not the labels or the data selection.
    sensors = base.model_copy(update={"modality_availability": {m: 1.0 for m in MODALITIES}, "degradation_noise": 0.0})
    third = make_device_partition(make_source(C), sensors, 1, 3, C)
    np.testing.assert_array_equal(ref.samples.labels["beam"], third.samples.labels["beam"])
    np.testing.assert_array_equal(ref.samples.conditions["position"], third.samples.conditions["position"])
    np.testing.assert_array_equal(ref.label_proportions, third.label_proportions)


# --------------------------------------------------------------------------- label skew


def test_small_alpha_concentrates_labels_and_separates_devices(make_source):
    """alpha = 0.05, C = 10, n = 200, D = 64 devices.

    Simpson index H = sum_c h_c^2 of a device's histogram h: for p ~ Dir(alpha 1_C) and n
    draws from p, E[H] = (alpha + 1) / (C alpha + 1) * (1 - 1/n) + 1/n (= 0.70; IID: 0.105).
    H lies in [1/C, 1], so its std is at most (1 - 1/C) / 2 (Popoviciu) and the mean over D
    devices is at least E[H] - 4 (1 - 1/C) / (2 sqrt(D)) with overwhelming probability.
    Two independent devices: E||h - h'||^2 = 2 (E[H] - 1/C) (= 1.2; IID: 0.01); the squared
    distance lies in [0, 2] (std <= 1), averaged over D/2 disjoint pairs.
    """
    alpha, n, D = 0.05, 200, 64
    cfg = cfg_(label_skew="dirichlet", dirichlet_alpha=alpha, samples_per_device=n)
    h = np.array([histogram(make_device_partition(make_source(C), cfg, 0, d, C)) for d in range(D)])
    expected_h = (alpha + 1) / (C * alpha + 1) * (1 - 1 / n) + 1 / n
    assert (h**2).sum(1).mean() >= expected_h - 4 * (1 - 1 / C) / (2 * np.sqrt(D))
    pair_d2 = ((h[0::2] - h[1::2]) ** 2).sum(1)
    assert pair_d2.mean() >= 2 * (expected_h - 1 / C) - 4 * 1 / np.sqrt(D / 2)


def test_large_alpha_matches_the_source_distribution(make_source):
    """alpha = 1e4: Pearson's statistic X = n sum_c (h_c - 1/C)^2 / (1/C) of each device against
    the (uniform) source labels is ~ chi2(C - 1) for i.i.d. draws, inflated by at most
    1 + n / (C alpha + 1) for the Dirichlet spread of p_d (sampling without replacement from
    the pool only lowers it). The sum over D devices must stay below the 1 - 1e-6 quantile
    of chi2(D (C - 1)).
    """
    alpha, n, D = 1e4, 200, 40
    cfg = cfg_(label_skew="dirichlet", dirichlet_alpha=alpha, samples_per_device=n)
    h = np.array([histogram(make_device_partition(make_source(C), cfg, 0, d, C)) for d in range(D)])
    pearson = (n * C * ((h - 1 / C) ** 2).sum(1)).sum() / (1 + n / (C * alpha + 1))
    assert pearson <= stats.chi2.ppf(1 - 1e-6, D * (C - 1))


def test_iid_keeps_the_source_draw_and_has_no_proportions(make_source):
    cfg = cfg_()
    part = make_device_partition(make_source(C), cfg, 2, 9, C)
    assert part.label_proportions is None
    clean = make_source(C)(200, device_rng(2, 9, "data"))
    np.testing.assert_array_equal(part.samples.labels["beam"], clean.labels["beam"])


def test_importance_resample_takes_weight_zero_items_last():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [5, 50, 50])
    p = np.array([0.5, 0.5, 0.0])
    idx = importance_resample(labels, p, 55, rng)
    assert len(set(idx.tolist())) == 55
    assert np.all(labels[idx] != 2)  # exactly 55 items have positive weight
    idx = importance_resample(labels, p, 70, rng)
    assert np.sum(labels[idx] == 2) == 15 and np.sum(labels[idx] == 0) == 5
    with pytest.raises(ValueError, match="pool"):
        importance_resample(labels, p, 106, rng)


def test_a_label_skew_registered_by_name_is_used(make_source, monkeypatch):
    skews: Registry = Registry("label skew")
    for name in LABEL_SKEWS:
        skews.register(name, LABEL_SKEWS.get(name))

    @skews.register("single-class")
    def single_class(cfg, num_classes, rng):
        return np.eye(num_classes)[rng.integers(num_classes)]

    monkeypatch.setattr(P, "LABEL_SKEWS", skews)
    part = make_device_partition(make_source(C), cfg_(), 0, 4, C, label_skew="single-class")
    assert np.unique(part.samples.labels["beam"]).tolist() == [int(np.argmax(part.label_proportions))]
    with pytest.raises(UnknownNameError, match="single-class"):
        make_device_partition(make_source(C), cfg_(), 0, 4, C, label_skew="nope")


# --------------------------------------------------------------------------- quantity skew


def test_sizes_without_quantity_skew():
    cfg = cfg_(samples_per_device=37)
    assert {local_size(cfg, 0, d) for d in range(50)} == {37}


def test_lognormal_sizes_have_the_configured_mean():
    """S = exp(mu + sigma Z) with E[S] = s and std s sqrt(exp(sigma^2) - 1); rounding adds <= 0.5."""
    s, sigma, D = 500, 1.0, 10_000
    cfg = cfg_(quantity_skew="lognormal", quantity_sigma=sigma, samples_per_device=s)
    sizes = np.array([local_size(cfg, 7, d) for d in range(D)])
    assert sizes.min() >= 1
    assert abs(sizes.mean() - s) <= 4 * s * np.sqrt(np.expm1(sigma**2)) / np.sqrt(D) + 0.5
    assert sizes.std() > 0.5 * s  # actually skewed (std is 1.31 s)


# --------------------------------------------------------------------------- modalities


@pytest.mark.parametrize("probs", [[0.2, 0.5, 0.7, 0.9, 0.0], [0.05] * 5])
def test_availability_frequencies_and_at_least_one_modality(probs):
    """Marginal presence is p_j + prod_k(1 - p_k) p_j / sum(p) (the fallback adds one ∝ p)."""
    D = 4000
    cfg = cfg_(modality_availability=dict(zip(MODALITIES, probs)))
    masks = np.array([device_modalities(cfg, 11, d) for d in range(D)])
    assert masks.any(axis=1).all()
    p = np.array(probs)
    expected = p + np.prod(1 - p) * p / p.sum()
    assert np.all(np.abs(masks.mean(0) - expected) <= 4 * np.sqrt(expected * (1 - expected) / D) + 1e-12)


def test_missing_modalities_are_zeroed_and_marked_absent(make_source):
    cfg = cfg_(modality_availability={"camera": 0.0, "lidar": 0.0, "radar": 1.0, "gps": 0.0, "rf": 1.0})
    part = make_device_partition(make_source(C), cfg, 0, 0, C)
    assert part.modalities.tolist() == [False, False, True, False, True]
    for j, m in enumerate(MODALITIES):
        assert part.samples.present[:, j].all() == part.modalities[j]
        if not part.modalities[j]:
            assert not part.samples.present[:, j].any() and not part.samples.inputs[m].any()


def test_all_modalities_impossible_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        device_modalities(cfg_(modality_availability={m: 0.0 for m in MODALITIES}), 0, 0)


# --------------------------------------------------------------------------- degradation


def test_no_degradation_leaves_the_data_untouched(make_source):
    part = make_device_partition(make_source(C), cfg_(), 3, 1, C)
    assert not part.degradation.noise.any() and not part.degradation.dropout.any() and not part.dropped.any()
    clean = make_source(C)(200, device_rng(3, 1, "data"))
    assert part.samples.present.all()
    for m in MODALITIES:
        np.testing.assert_array_equal(part.samples.inputs[m], clean.inputs[m])


def test_degradation_levels_are_uniform_in_their_ranges():
    cfg, D = cfg_(degradation_noise=0.8, degradation_dropout=0.4), 400
    levels = [device_degradation(cfg, 0, d) for d in range(D)]
    for name, top in (("noise", 0.8), ("dropout", 0.4)):
        x = np.array([getattr(lv, name) for lv in levels])
        assert x.min() >= 0 and x.max() <= top
        assert abs(x.mean() - top / 2) <= 4 * top / np.sqrt(12 * x.size)  # U[0, top]


def test_dropout_removes_samples_at_the_drawn_rate(make_source):
    n = 2000
    part = make_device_partition(make_source(C), cfg_(samples_per_device=n, degradation_dropout=0.6), 4, 2, C)
    d = part.degradation.dropout
    assert not part.degradation.noise.any()
    for j, m in enumerate(MODALITIES):
        lost = ~part.samples.present[:, j]
        assert lost.sum() == part.dropped[j]
        assert abs(lost.mean() - d[j]) <= 4 * np.sqrt(d[j] * (1 - d[j]) / n) + 1e-12  # Binomial(n, d_j)
        assert not part.samples.inputs[m][lost].any()


def test_noise_is_relative_to_the_feature_std(make_source):
    """x' - x = level * std_f * N(0, 1): the std of (x' - x) / std_f over N values estimates the
    level with relative standard error 1 / sqrt(2 N)."""
    n = 2000
    noisy = make_device_partition(make_source(C), cfg_(samples_per_device=n, degradation_noise=0.8), 4, 2, C)
    clean = make_device_partition(make_source(C), cfg_(samples_per_device=n), 4, 2, C)
    assert noisy.samples.present.all() and not noisy.dropped.any()
    for j, m in enumerate(MODALITIES):
        x, y, level = clean.samples.inputs[m], noisy.samples.inputs[m], noisy.degradation.noise[j]
        assert y.dtype == x.dtype
        if m == "camera":  # rounded and clipped: check the type and that it changed
            assert y.min() >= 0 and y.max() <= 255 and np.abs(y.astype(int) - x).mean() > 0
            continue
        ratio = ((y.astype(np.float64) - x) / x.std(axis=0)).std() / level
        assert abs(ratio - 1) <= 4 / np.sqrt(2 * x.size)


def test_summary_is_json_serialisable(make_source):
    part = make_device_partition(make_source(C), cfg_(**FULL), 0, 0, C)
    summary = json.loads(json.dumps(part.summary()))
    assert summary["num_samples"] == len(part.samples) and set(summary["dropped"]) == set(MODALITIES)


# --------------------------------------------------------------------------- eager split


def assert_valid_split(parts: list[np.ndarray], n: int) -> None:
    assert all(len(p) > 0 for p in parts)
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))  # disjoint and covering


@pytest.mark.parametrize("kw", [dict(), dict(quantity_skew="lognormal"),
                                dict(label_skew="dirichlet", dirichlet_alpha=0.05),
                                dict(label_skew="dirichlet", dirichlet_alpha=100.0)])
def test_eager_split_is_disjoint_covering_and_non_empty(kw):
    labels = np.random.default_rng(0).integers(0, C, size=1000)
    cfg = cfg_(num_devices=50, **kw)
    parts = split_indices(labels, 50, cfg, seed=1)
    assert len(parts) == 50
    assert_valid_split(parts, 1000)
    again = split_indices(labels, 50, cfg, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_eager_dirichlet_fills_empty_devices():
    labels = np.arange(120) % 3
    parts = split_indices(labels, 100, cfg_(label_skew="dirichlet", dirichlet_alpha=0.001), seed=0)
    assert_valid_split(parts, 120)


def test_eager_iid_sizes_follow_the_quantity_skew():
    n, D = 10_000, 40
    labels = np.zeros(n, dtype=int)
    assert {len(p) for p in split_indices(labels, D, cfg_(num_devices=D), 0)} == {n // D}
    cfg = cfg_(num_devices=D, quantity_skew="lognormal")
    weights = np.array([local_size(cfg, 0, d) for d in range(D)])
    sizes = np.array([len(p) for p in split_indices(labels, D, cfg, 0)])
    assert np.all(np.abs(sizes - n * weights / weights.sum()) <= 1)


def test_eager_dirichlet_skews_classes_across_devices():
    """Each class is cut by shares s ~ Dir(alpha 1_K): E[sum_d s_d^2] = (alpha + 1) / (K alpha + 1)
    (0.525 for alpha = 0.05, K = 20; 1/K = 0.05 when even), in [1/K, 1]; 100 classes."""
    alpha, K, classes = 0.05, 20, 100
    labels = np.repeat(np.arange(classes), 50)
    parts = split_indices(labels, K, cfg_(label_skew="dirichlet", dirichlet_alpha=alpha), 3)
    share = np.array([np.bincount(labels[p], minlength=classes) for p in parts]) / 50  # (K, classes)
    expected = (alpha + 1) / (K * alpha + 1)
    assert (share**2).sum(0).mean() >= expected - 4 * (1 - 1 / K) / (2 * np.sqrt(classes)) - 2 / 50


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("device_id", [-1, 10])
def test_device_id_out_of_range(make_source, device_id):
    cfg = cfg_(num_devices=10)
    for call in (lambda: make_device_partition(make_source(C), cfg, 0, device_id, C),
                 lambda: local_size(cfg, 0, device_id), lambda: device_modalities(cfg, 0, device_id),
                 lambda: device_degradation(cfg, 0, device_id)):
        with pytest.raises(ValueError, match="device_id"):
            call()


def test_bad_num_classes_and_labels(make_source):
    with pytest.raises(ValueError, match="num_classes"):
        make_device_partition(make_source(C), cfg_(), 0, 0, 0)
    with pytest.raises(ValueError, match="outside"):  # labels up to 9, only 5 classes declared
        make_device_partition(make_source(C), cfg_(label_skew="dirichlet"), 0, 0, 5)
    with pytest.raises(ValueError, match="'nope' not in samples"):
        make_device_partition(make_source(C), cfg_(label_skew="dirichlet"), 0, 0, C, label_key="nope")


@pytest.mark.parametrize("skew", ["iid", "dirichlet"])
def test_source_returning_the_wrong_number_of_rows(make_source, skew):
    bad = lambda n, rng: make_source(C)(n + 1, rng)  # noqa: E731
    with pytest.raises(ValueError, match=r"returned (\d+) samples, expected (?!\1)\d+"):
        make_device_partition(bad, cfg_(label_skew=skew), 0, 0, C)


def test_split_and_pool_argument_errors():
    with pytest.raises(ValueError, match="num_devices"):
        split_indices(np.zeros(5), 6, cfg_(), 0)
    with pytest.raises(ValueError, match="num_devices"):
        split_indices(np.zeros(5), 0, cfg_(), 0)
    with pytest.raises(ValueError, match="1-D"):
        split_indices(np.zeros((5, 2)), 2, cfg_(), 0)
    with pytest.raises(ValueError, match="factor"):
        PoolPolicy(factor=8, max_factor=4)
    with pytest.raises(ValueError, match="seed"):
        device_rng(-1, 0, "size")
