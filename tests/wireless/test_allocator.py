"""Exact allocator vs. the MILP reference (and brute force on tiny instances)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from fedmoe.config import ChannelConfig
from fedmoe.wireless import allocator
from fedmoe.wireless.allocator import UplinkInstance, min_round_latency, select_devices
from fedmoe.wireless.milp import (
    first_meeting,
    latency_table,
    marginal_allocation,
    milp_min_round_latency,
    milp_select_devices,
)

NUM_INSTANCES = 220
CHUNKS = 10
LAT_REL = 1e-9


def _chunk(i: int) -> range:
    per = NUM_INSTANCES // CHUNKS
    return range(i * per, (i + 1) * per)


def _num_devices(rng: np.random.Generator) -> int:
    """Log-uniform in [1, 200] (many small instances, some near 200)."""
    return int(np.clip(round(np.exp(rng.uniform(0.0, np.log(200.0)))), 1, 200))


_CHANNELS = (ChannelConfig(), ChannelConfig(carrier_ghz=3.5, fading="rician"), ChannelConfig(fading="none"))


def _instance(make_instance, seed: int):
    """Instance ``seed``: varied size, carrier / fading, admission threshold and idle devices."""
    rng = np.random.default_rng(10_000 + seed)
    k = _num_devices(rng)
    kw = make_instance(k, seed=seed, idle_fraction=0.1 if seed % 5 == 0 else 0.0,
                       min_snr_db=(None, 0.0, 10.0)[seed % 3], channel=_CHANNELS[seed % 7 % 3])
    return rng, k, kw


def _inst(kw: dict, num_rb: int) -> UplinkInstance:
    return UplinkInstance.from_arrays(kw["bits"], kw["gains"], kw["powers"], kw["fixed_latency"], num_rb,
                                      kw["rb_hz"], kw["noise_psd_w_hz"])


def _check_latency_allocation(res, kw: dict, num_rb: int) -> None:
    assert res.feasible, res.reason
    inst = _inst(kw, num_rb)
    k = inst.size
    assert res.rb.shape == (k,) and res.rb.min() >= 1 and res.rb.sum() <= num_rb
    t = inst.latency(np.arange(k), res.rb)
    assert res.latency == t.max() == t[res.bottleneck]
    # fewest RBs: one RB less would miss the latency (unless the device holds only one)
    more = res.rb > 1
    if more.any():
        assert np.all(inst.latency(np.flatnonzero(more), res.rb[more] - 1) > res.latency)


def _min_latency_both_paths(monkeypatch, kw: dict, num_rb: int):
    """Solve with the default finish (selection among few candidates) and with the
    weighted-median search alone (enumeration disabled); both must agree exactly."""
    exact = min_round_latency(num_rb=num_rb, **kw)
    with monkeypatch.context() as mp:
        mp.setattr(allocator, "_ENUMERATE_MAX", 0)
        median_only = min_round_latency(num_rb=num_rb, **kw)
    assert median_only.latency == exact.latency and np.array_equal(median_only.rb, exact.rb)
    return exact


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_min_latency_matches_milp(make_instance, monkeypatch, chunk):
    for seed in _chunk(chunk):
        rng, k, kw = _instance(make_instance, seed)
        num_rb = k + int(rng.integers(0, 4 * k + 6))
        exact = _min_latency_both_paths(monkeypatch, kw, num_rb)
        ref = milp_min_round_latency(num_rb=num_rb, **kw)
        _check_latency_allocation(exact, kw, num_rb)
        assert ref.feasible, ref.reason
        assert exact.latency == pytest.approx(ref.latency, rel=LAT_REL), f"seed {seed}, K={k}, N={num_rb}"


def _deadline_and_rbs(rng: np.random.Generator, kw: dict, max_rb: int) -> tuple[float, int]:
    """A deadline that most devices meet with a few RBs (some with one, some not at all), and an
    RB budget below the total they would need, so that the selection is a real choice."""
    inst = _inst(kw, max_rb)
    k = inst.size
    b0 = int(rng.integers(1, 9))
    deadline = float(np.quantile(inst.latency(np.arange(k), np.full(k, b0)), rng.uniform(0.3, 0.95)))
    need = first_meeting(latency_table(inst, max_rb), deadline)
    total = int(need[need <= max_rb].sum())
    return deadline, int(rng.integers(1, max(2, total)))


def _check_selection(res, kw: dict, num_rb: int, deadline: float) -> None:
    inst = _inst(kw, num_rb)
    sel = res.selected
    assert res.rb.sum() <= num_rb
    assert np.all(res.rb[~sel] == 0) and np.all(res.rb[sel] >= 1)
    if sel.any():
        assert np.all(inst.latency(np.flatnonzero(sel), res.rb[sel]) <= deadline)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_count_selection_matches_milp(make_instance, chunk):
    for seed in _chunk(chunk):
        rng, k, kw = _instance(make_instance, seed)
        deadline, num_rb = _deadline_and_rbs(rng, kw, 4 * k + 10)
        exact = select_devices(deadline=deadline, num_rb=num_rb, **kw)
        ref = milp_select_devices(deadline=deadline, num_rb=num_rb, **kw)
        assert exact.feasible == ref.feasible, (seed, exact.reason, ref.reason)
        assert exact.objective == ref.objective == exact.num_selected, f"seed {seed}, K={k}, N={num_rb}"
        assert np.array_equal(exact.rb_needed, ref.rb_needed)
        _check_selection(exact, kw, num_rb, deadline)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_weighted_selection_matches_milp(make_instance, chunk):
    for seed in _chunk(chunk):
        rng, k, kw = _instance(make_instance, seed)
        deadline, num_rb = _deadline_and_rbs(rng, kw, 4 * k + 10)
        weights = rng.integers(0, 50, k).astype(float)  # integers: sums are exact in float64
        exact = select_devices(deadline=deadline, num_rb=num_rb, weights=weights, **kw)
        ref = milp_select_devices(deadline=deadline, num_rb=num_rb, weights=weights, **kw)
        assert exact.feasible == ref.feasible, (seed, exact.reason, ref.reason)
        assert exact.objective == ref.objective, f"seed {seed}, K={k}, N={num_rb}"
        assert exact.objective == weights[exact.selected].sum()
        _check_selection(exact, kw, num_rb, deadline)


def test_weighted_selection_real_weights(make_instance):
    for seed in range(30):
        rng, k, kw = _instance(make_instance, seed)
        deadline, num_rb = _deadline_and_rbs(rng, kw, 4 * k + 10)
        weights = rng.uniform(0.0, 1.0, k)
        exact = select_devices(deadline=deadline, num_rb=num_rb, weights=weights, **kw)
        ref = milp_select_devices(deadline=deadline, num_rb=num_rb, weights=weights, **kw)
        assert exact.objective == pytest.approx(ref.objective, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------- brute force


def _compositions(total_max: int, k: int):
    """All b in {1..}^k with sum <= total_max."""
    for b in itertools.product(range(1, total_max - k + 2), repeat=k):
        if sum(b) <= total_max:
            yield np.array(b)


def test_min_latency_brute_force(make_instance, monkeypatch):
    for seed in range(120):
        rng = np.random.default_rng(seed)
        k = int(rng.integers(1, 4))
        kw = make_instance(k, seed=500 + seed, idle_fraction=0.2)
        num_rb = k + int(rng.integers(0, 6))
        inst = _inst(kw, num_rb)
        best = min(inst.latency(np.arange(k), b).max() for b in _compositions(num_rb, k))
        assert _min_latency_both_paths(monkeypatch, kw, num_rb).latency == best
        assert milp_min_round_latency(num_rb=num_rb, **kw).latency == pytest.approx(best, rel=LAT_REL)
        assert milp_min_round_latency(num_rb=num_rb, window=False, **kw).latency == pytest.approx(best, rel=LAT_REL)


def test_selection_brute_force(make_instance):
    for seed in range(80):
        rng = np.random.default_rng(seed)
        k = int(rng.integers(1, 8))
        kw = make_instance(k, seed=900 + seed)
        deadline, num_rb = _deadline_and_rbs(rng, kw, 12)
        weights = rng.integers(0, 10, k).astype(float)
        need = first_meeting(latency_table(_inst(kw, num_rb), num_rb), deadline)
        best_count, best_weight = 0, 0.0
        for mask in itertools.product([False, True], repeat=k):
            m = np.array(mask)
            if np.all(need[m] <= num_rb) and need[m].sum() <= num_rb:
                best_count = max(best_count, int(m.sum()))
                best_weight = max(best_weight, float(weights[m].sum()))
        assert select_devices(deadline=deadline, num_rb=num_rb, **kw).objective == best_count
        assert select_devices(deadline=deadline, num_rb=num_rb, weights=weights, **kw).objective == best_weight


# ---------------------------------------------------------------------------- scale


def test_k1000_fast_and_valid(make_instance):
    kw = make_instance(1000, seed=7)
    t0 = time.perf_counter()
    res = min_round_latency(num_rb=2000, **kw)
    sel = select_devices(deadline=2.0 * res.latency, num_rb=500, weights=np.arange(1000.0), **kw)
    elapsed = time.perf_counter() - t0
    _check_latency_allocation(res, kw, 2000)
    assert sel.feasible and sel.rb.sum() <= 500
    assert elapsed < 1.0  # the benchmark measures ~10 ms; this only catches accidental blow-ups


def test_more_bandwidth_never_hurts(make_instance):
    kw = make_instance(40, seed=3)
    lat = [min_round_latency(num_rb=n, **kw).latency for n in range(40, 200, 10)]
    assert np.all(np.diff(lat) <= 0) and lat[-1] < lat[0]


# ---------------------------------------------------------------------------- infeasible inputs


def test_infeasible_results(make_instance):
    kw = make_instance(5, seed=1)
    for solve in (min_round_latency, milp_min_round_latency):
        r = solve(num_rb=4, **kw)
        assert not r.feasible and "only 4" in r.reason and r.latency == np.inf and np.all(r.rb == 0)
        r = solve(num_rb=0, **kw)
        assert not r.feasible and "no bandwidth" in r.reason
        r = solve(**{**kw, "rb_hz": 0.0}, num_rb=10)
        assert not r.feasible and "no bandwidth" in r.reason
        r = solve(**{k: (np.zeros(0) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}, num_rb=10)
        assert not r.feasible and "no devices" in r.reason
        gains = kw["gains"].copy()
        gains[2] = 0.0
        r = solve(**{**kw, "gains": gains}, num_rb=10)
        assert not r.feasible and "cannot upload" in r.reason and "device 2" in r.reason
    for solve in (select_devices, milp_select_devices):
        r = solve(deadline=kw["fixed_latency"].min() * 0.5, num_rb=10, **kw)
        assert not r.feasible and "no device can meet the deadline" in r.reason and r.objective == 0
        r = solve(deadline=-1.0, num_rb=10, **kw)
        assert not r.feasible
        r = solve(deadline=100.0, num_rb=0, **kw)
        assert not r.feasible and "no bandwidth" in r.reason
        r = solve(**{k: (np.zeros(0) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}, deadline=1.0,
                  num_rb=10)
        assert not r.feasible and "no devices" in r.reason and r.selected.shape == (0,)


def test_idle_devices_and_dead_device_selection(make_instance):
    kw = make_instance(4, seed=2)
    kw["bits"] = np.zeros(4)
    r = min_round_latency(num_rb=4, **kw)
    assert r.feasible and r.latency == kw["fixed_latency"].max() and np.all(r.rb == 1)
    # an idle device that finishes last: the others get only the RBs needed to finish by then
    kw = make_instance(6, seed=2)
    kw["bits"][0] = 0.0
    kw["fixed_latency"][0] = 0.0
    kw["fixed_latency"][0] = 2.0 * min_round_latency(num_rb=60, **kw).latency
    r = min_round_latency(num_rb=60, **kw)
    assert r.latency == kw["fixed_latency"][0] and r.bottleneck == 0
    _check_latency_allocation(r, kw, 60)
    assert r.rb_used < 60
    kw = make_instance(4, seed=2)
    kw["powers"] = kw["powers"].copy()
    kw["powers"][0] = 0.0
    r = select_devices(deadline=np.inf, num_rb=4, **kw)
    assert r.feasible and not r.selected[0] and r.num_selected == 3 and r.rb_needed[0] == -1


def test_zero_weights_select_nobody(make_instance):
    kw = make_instance(6, seed=4)
    r = select_devices(deadline=np.inf, num_rb=10, weights=np.zeros(6), **kw)
    assert r.feasible and r.num_selected == 0 and r.objective == 0.0


# ---------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("solve,extra", [(min_round_latency, {}), (select_devices, {"deadline": 1.0}),
                                         (milp_min_round_latency, {}), (milp_select_devices, {"deadline": 1.0})])
def test_argument_errors(make_instance, solve, extra):
    kw = {**make_instance(5, seed=1), **extra, "num_rb": 10}
    bad = {
        "bits": ({"bits": -kw["bits"]}, "bits must be >= 0"),
        "shape": ({"gains": kw["gains"][:4]}, "gains has 4 entries"),
        "2d": ({"powers": kw["powers"][None, :]}, "1-D"),
        "nan": ({"fixed_latency": np.full(5, np.nan)}, "finite"),
        "num_rb": ({"num_rb": -1}, "num_rb"),
        "num_rb_float": ({"num_rb": 2.5}, "num_rb"),
        "noise": ({"noise_psd_w_hz": 0.0}, "noise_psd_w_hz"),
        "rb_hz": ({"rb_hz": -1.0}, "rb_hz"),
    }
    for name, (change, match) in bad.items():
        with pytest.raises(ValueError, match=match):
            solve(**{**kw, **change})
    if "deadline" in extra:
        with pytest.raises(ValueError, match="weights"):
            solve(**kw, weights=np.ones(3))
        with pytest.raises(ValueError, match="weights"):
            solve(**kw, weights=-np.ones(5))
        with pytest.raises(ValueError, match="deadline"):
            solve(**{**kw, "deadline": float("nan")})


# ---------------------------------------------------------------------------- MILP helpers


def test_milp_helpers():
    table = np.array([[5.0, 3.0, 2.0], [9.0, 4.0, 1.0]])
    assert np.array_equal(first_meeting(table, 3.0), [2, 3])
    assert np.array_equal(first_meeting(table, 0.5), [4, 4])
    # one RB each, then the slowest device gets the next ones: 9 -> (1, 2); max(5, 4) = 5 -> (2, 2)
    assert np.array_equal(marginal_allocation(table, 4), [2, 2])


def test_fewest_rb_search(make_instance):
    kw = make_instance(50, seed=11)
    n = 30
    inst = _inst(kw, n)
    table = latency_table(inst, n)
    everyone = np.arange(50)
    for target in np.quantile(table, [0.0, 0.1, 0.5, 0.9, 1.0]):
        # sentinel n + 1 = "impossible" must come back unchanged, never n + 2
        got = inst.fewest_rb(everyone, np.ones(50), np.full(50, n + 1), target)
        assert np.array_equal(got, first_meeting(table, target))
    # a closed range is returned as is
    assert np.array_equal(inst.fewest_rb(everyone[:3], [4, 4, 4], [4, 4, 4], -1.0), [4, 4, 4])


def test_knapsack_brute_force():
    from fedmoe.wireless.allocator import _knapsack

    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(1, 11))
        sizes = rng.integers(1, 4 if trial % 2 else 9, n)  # many equal sizes, or mostly distinct
        values = rng.integers(1, 30, n).astype(float)
        cap = int(rng.integers(1, sizes.sum() + 2))
        best = max(values[list(m)].sum() for r in range(n + 1) for m in itertools.combinations(range(n), r)
                   if sizes[list(m)].sum() <= cap)
        got = _knapsack(sizes, values, cap)
        assert sizes[got].sum() <= cap and len(set(got.tolist())) == got.size
        assert values[got].sum() == best, (sizes, values, cap)
