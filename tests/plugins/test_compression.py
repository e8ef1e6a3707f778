"""The compressors of fedmoe.plugins.compression against hand values and numpy references: unbiased
stochastic quantisation ([P008]), top-k ([P009]), error feedback, bit counts and the value checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import CompressionConfig
from fedmoe.plugins.compression import (
    StochasticQuantiser,
    TopK,
    compress_arrays,
    compressed_bits,
    decompress_arrays,
    expected_parts,
)
from fedmoe.plugins.validation import ValidatedStrategy


@pytest.mark.parametrize("bits", [4, 8])
def test_quantiser_is_unbiased(bits):
    """Mean of many independent draws within 5 σ of x entry by entry (σ of stochastic rounding between two
    levels m/s apart: (m/s) sqrt(p (1 − p)), p the fractional part of s|x|/m)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=300).astype(np.float32)
    q, draws = StochasticQuantiser(bits), 3000
    mean = np.mean([q.decode(q.encode(x, (x.size,), rng), x.size, (x.size,)).astype(np.float64)
                    for _ in range(draws)], axis=0)
    m, s = float(np.abs(x).max()), q.levels
    p = (s * np.abs(x.astype(np.float64)) / m) % 1.0
    sigma = (m / s) * np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(mean - x) <= 5 * sigma + 1e-6 * m)
    assert np.abs(mean - x).max() > 0  # the draws are random (a deterministic rounding would be biased)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantiser_error_is_below_one_level_per_segment(bits):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=37) * 100, rng.normal(size=20) * 1e-3]).astype(np.float32)
    q, segs = StochasticQuantiser(bits), (37, 20)
    parts = q.encode(x, segs, rng)
    assert parts["codes"].dtype == np.uint8 and parts["codes"].shape == (-(-57 * bits // 8),)
    np.testing.assert_array_equal(parts["scale"], [np.abs(x[:37]).max(), np.abs(x[37:]).max()])
    err = np.abs(q.decode(parts, 57, segs) - x)
    assert np.all(err[:37] < parts["scale"][0] / q.levels * (1 + 1e-6))
    assert np.all(err[37:] < parts["scale"][1] / q.levels * (1 + 1e-6))  # its own scale, not the large one's
    assert q.check(parts, 57, segs) is None


def test_four_bit_codes_by_hand():
    """Values on the levels (s = 7, m = 7) are coded exactly whatever the draw: code s + level, two a byte,
    the first in the low four bits, padding 0."""
    q = StochasticQuantiser(4)
    x = np.array([7, -7, 0, 3, -2], dtype=np.float32)
    parts = q.encode(x, (5,), np.random.default_rng(0))
    np.testing.assert_array_equal(parts["codes"], [14 | 0 << 4, 7 | 10 << 4, 5])
    np.testing.assert_array_equal(parts["scale"], [7.0])
    np.testing.assert_array_equal(q.decode(parts, 5, (5,)), x)


def test_topk_keeps_the_k_largest_magnitudes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=1000).astype(np.float32)
    t = TopK(0.037)
    parts = t.encode(x, (1000,), rng)
    k = 37
    np.testing.assert_array_equal(parts["index"], np.sort(np.argsort(-np.abs(x))[:k]))
    np.testing.assert_array_equal(parts["value"], x[parts["index"]])
    assert parts["index"].dtype == np.uint32 and parts["value"].dtype == np.float32
    dense = t.decode(parts, 1000, (1000,))
    assert np.count_nonzero(dense) == k and np.array_equal(dense[parts["index"]], parts["value"])


@pytest.mark.parametrize("compressor", [TopK(0.05), StochasticQuantiser(4)], ids=["topk", "qsgd4"])
def test_error_feedback_loses_nothing(compressor):
    """Σ_t C(e_t + Δ_t) + e_T = Σ_t Δ_t ([P009]); for top-k each round's split is exact to the bit."""
    rng = np.random.default_rng(4)
    ref = {"w": np.zeros(400, dtype=np.float32)}
    residual: dict[str, np.ndarray] = {}
    sent_sum, true_sum = np.zeros(400), np.zeros(400)
    for _ in range(25):
        delta = rng.normal(size=400).astype(np.float32)
        out, new = compress_arrays({"w": delta}, ref, compressor, residual=residual, rng=rng)
        sent, _ = decompress_arrays(out, ref, compressor)
        if isinstance(compressor, TopK):
            before = delta + residual.get("w", np.zeros(400, dtype=np.float32))
            np.testing.assert_array_equal(sent["w"] + new["w"], before)
        residual = new
        sent_sum += sent["w"]
        true_sum += delta
    np.testing.assert_allclose(sent_sum + residual["w"], true_sum, atol=1e-4)
    assert np.abs(residual["w"]).max() > 0


def test_without_error_feedback_the_dropped_part_is_lost():
    """The control of the test above: no residual, and top-k's sum falls short of the true sum."""
    rng = np.random.default_rng(5)
    ref = {"w": np.zeros(400, dtype=np.float32)}
    sent_sum, true_sum = np.zeros(400), np.zeros(400)
    for _ in range(10):
        delta = rng.normal(size=400).astype(np.float32)
        out, new = compress_arrays({"w": delta}, ref, TopK(0.05), rng=rng)
        assert new == {}
        sent_sum += decompress_arrays(out, ref, TopK(0.05))[0]["w"]
        true_sum += delta
    assert np.abs(sent_sum - true_sum).max() > 1.0


def test_bit_counts_by_hand():
    # 17 entries in segments of 10 and 7
    assert compressed_bits(StochasticQuantiser(4), 17, (10, 7)) == 9 * 8 + 2 * 32  # ⌈17·4/8⌉ bytes of codes
    assert compressed_bits(StochasticQuantiser(8), 17, (10, 7)) == 17 * 8 + 2 * 32
    assert compressed_bits(TopK(0.1), 17) == 2 * (32 + 32)  # k = ⌈1.7⌉
    assert compressed_bits(None, 17) == 17 * 32
    rng = np.random.default_rng(0)
    for c in (StochasticQuantiser(4), TopK(0.1)):
        out, _ = compress_arrays({"a": rng.normal(size=17).astype(np.float32)}, {"a": np.zeros(17, np.float32)}, c,
                                 segments={"a": (10, 7)}, rng=rng)
        assert sum(v.nbytes * 8 for v in out.values()) == compressed_bits(c, 17, (10, 7))


def _honest(compressor, size=12):
    rng = np.random.default_rng(6)
    ref = {"a": rng.normal(size=size).astype(np.float32), "n": np.arange(3)}
    mine = {"a": ref["a"] + rng.normal(size=size).astype(np.float32), "n": np.arange(3)}
    out, _ = compress_arrays(mine, ref, compressor, rng=rng)
    return ref, mine, out


BAD = {
    "index out of range": (TopK(0.25), lambda o: o["a#index"].__setitem__(-1, 12), "outside [0, 12)"),
    "duplicate indices": (TopK(0.25), lambda o: o["a#index"].__setitem__(1, o["a#index"][0]), "strictly increasing"),
    "NaN value": (TopK(0.25), lambda o: o["a#value"].__setitem__(0, np.nan), "NaN"),
    "NaN scale": (StochasticQuantiser(4), lambda o: o["a#scale"].__setitem__(0, np.nan), "scale"),
    "negative scale": (StochasticQuantiser(4), lambda o: o["a#scale"].__setitem__(0, -1.0), "scale"),
    "code 15 in 4 bits": (StochasticQuantiser(4), lambda o: o["a#codes"].__setitem__(0, 0xFF), "exceeds 14"),
    "code 255 in 8 bits": (StochasticQuantiser(8), lambda o: o["a#codes"].__setitem__(0, 255), "exceeds 254"),
    "part missing": (TopK(0.25), lambda o: o.pop("a#value"), "sent in part"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_malformed_parts_are_refused_with_a_reason(kind):
    compressor, edit, reason = BAD[kind]
    ref, _, out = _honest(compressor)
    edit(out)
    arrays, why = decompress_arrays(out, ref, compressor)
    assert arrays is None and reason in why


@pytest.mark.parametrize("compressor", [TopK(0.25), StochasticQuantiser(8)], ids=["topk", "qsgd8"])
def test_expected_parts_fix_dtypes_and_shapes(compressor):
    ref, mine, out = _honest(compressor)
    expected = expected_parts(compressor, ref)
    assert set(out) == set(expected) and expected["n"] is ref["n"]  # the integer array travels as it is
    assert all(out[k].dtype == expected[k].dtype and out[k].shape == expected[k].shape for k in out)
    arrays, why = decompress_arrays(out, ref, compressor)
    assert why is None and np.array_equal(arrays["n"], mine["n"])
    if isinstance(compressor, TopK):  # the 3 largest moves arrive exactly, the rest not at all
        moved = np.flatnonzero(arrays["a"] != ref["a"])
        assert len(moved) == 3 and np.allclose(arrays["a"][moved], mine["a"][moved])


def test_config_names_the_field_of_a_bad_compressor():
    with pytest.raises(ValueError, match="unknown compressor 'zip'"):
        CompressionConfig(method="zip")
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        CompressionConfig(method="qsgd", bits=3)
    assert CompressionConfig().compressor() is None
    assert CompressionConfig(method="topk", k_fraction=0.2).compressor() == TopK(0.2)


def _compressing(reference, compressor, seed, edit=None):
    """A reply edit that sends the digits app's update compressed, as a device using
    :func:`compress_arrays` would (``edit`` then spoils the parts)."""
    from fedmoe.flower import to_numpy, to_record

    def tamper(reply):
        parts, _ = compress_arrays(to_numpy(reply.content["arrays"]), reference, compressor,
                                   rng=np.random.default_rng(seed))
        if edit is not None:
            edit(parts)
        reply.content["arrays"] = to_record(parts)
    return tamper


def test_validated_strategy_decodes_compressed_replies_of_any_flower_app(digits_grid, initial_arrays):
    """Flower's FedAvg on the digits app behind ValidatedStrategy(compressor=TopK): the honest compressed
    replies average to the hand-decoded mean (scatter the k values onto the sent arrays); a reply whose
    indices repeat is rejected with its reason."""
    from flwr.serverapp.strategy import FedAvg

    from fedmoe.flower import to_numpy

    reference = to_numpy(initial_arrays)
    topk = TopK(0.3)
    duplicate = lambda parts: parts["layers.0.weight#index"].__setitem__(1, parts["layers.0.weight#index"][0])  # noqa: E731
    grid = digits_grid(3, tamper={101: _compressing(reference, topk, 1), 102: _compressing(reference, topk, 2),
                                  103: _compressing(reference, topk, 3, duplicate)})
    strategy = ValidatedStrategy(FedAvg(min_available_nodes=3), compressor=topk)
    result = strategy.start(grid, initial_arrays, num_rounds=1)
    assert [(n, "strictly increasing" in r) for _, n, r in strategy.rejected] == [(103, True)]
    honest = [r for m, r in grid.exchanges if m.metadata.message_type == "train" and m.metadata.dst_node_id != 103]
    weights = np.array([float(r.content["metrics"]["num-examples"]) for r in honest])
    got = to_numpy(result.arrays)
    for name, ref in reference.items():
        if ref.dtype.kind != "f":
            continue
        mean = np.zeros(ref.size)
        for r, w in zip(honest, weights):
            arrays = to_numpy(r.content["arrays"])
            dense = ref.astype(np.float64).reshape(-1).copy()
            dense[arrays[f"{name}#index"].astype(np.int64)] += arrays[f"{name}#value"]
            mean += w * dense
        np.testing.assert_allclose(got[name].reshape(-1), mean / weights.sum(), rtol=1e-5, atol=1e-6)
