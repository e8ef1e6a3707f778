"""Compressed updates in federated rounds (federated.compression): the devices send their compressors' parts,
the server checks those bytes, decodes, aggregates and charges the bits it received; residuals stay on the
device across rounds and resumes; devices upload only the experts they trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array

from fedmoe.federated.device_state import DeviceStateStore
from fedmoe.federated.local import RoundInstructions, local_update
from fedmoe.federated.parameters import FIXED, LOCAL, SHARED, expert_group, payload_bits
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import NUM_EXAMPLES_KEY, UPLOAD_BITS_KEY, USAGE_KEY
from fedmoe.federated.update_codec import RESIDUAL_PREFIX, UpdateCodec, residual_key
from fedmoe.federated.world import world_for
from fedmoe.flower import to_numpy, to_record
from fedmoe.simulation import run_federated
from fedmoe.strategies.expert_wise import ExpertWise
from tests.federated.conftest import LocalGrid, ReplayGrid, tiny_config

ALL_SENSORS = {"modality_availability": {m: 1.0 for m in ("camera", "lidar", "radar", "gps", "rf")}}
QSGD4 = {"method": "qsgd", "bits": 4}
TOPK = {"method": "topk", "k_fraction": 0.1}


def _cfg(compression, **federated):
    return tiny_config(partition=ALL_SENSORS, federated={"compression": compression, "clip_ratio": 1e12,
                                                         **federated})


def _device_bits(world, codec: UpdateCodec | None = None) -> float:
    """Bits of one device that uploads the shared group, every expert and the fixed buffers."""
    codec = codec or world.codec
    return sum(codec.group_bits(g) for g in world.layout.groups if g != LOCAL)


def _instr(**kw):
    base = dict(server_round=1, stage=1, local_epochs=1, lr=0.01, tau=1.0, cost_weight=0.0, rate_bps=1e7, num_rb=1,
                deadline_s=100.0, fit_standardiser=True)
    return RoundInstructions(**{**base, **kw})


@pytest.mark.parametrize("compression", [QSGD4, TOPK], ids=["qsgd4", "topk"])
def test_device_sends_only_the_parts_of_the_groups_it_trained(compression):
    cfg = tiny_config(federated={"compression": compression})
    world = world_for(cfg)
    glob = state_to_numpy(world.template.state_dict())
    res = local_update(world, 0, glob, None, _instr(modalities=("gps", "rf")))
    usage = res.metrics[USAGE_KEY]
    parts = {k.split("#")[0] for k in res.wire if "#" in k}
    trained = {expert_group(i) for i, u in enumerate(usage) if u > 0}
    assert parts == {SHARED} | trained and 0 < len(trained) < len(usage)  # untrained experts are not sent
    assert res.metrics[UPLOAD_BITS_KEY] == payload_bits(res.wire) == sum(world.codec.group_bits(g)
                                                                          for g in parts | {FIXED})
    assert {residual_key(g) for g in parts} == {k for k in res.local_state if k.startswith(RESIDUAL_PREFIX)}


def test_residual_survives_the_state_folder_and_feeds_the_next_round(tmp_path):
    """The residual is written to the device's .npz versions, read back exactly (no pickle), and the
    next round compresses e + Δ: decoded update + new residual = old residual + new update, bit for bit."""
    world = world_for(tiny_config(federated={"compression": TOPK}))
    glob = state_to_numpy(world.template.state_dict())
    first = local_update(world, 1, glob, None, _instr())
    store = DeviceStateStore(tmp_path, 1)
    store.save(1, first.local_state)
    loaded = store.load_before(2)
    assert set(loaded) == set(first.local_state)
    assert all(np.array_equal(loaded[k], first.local_state[k]) for k in loaded)
    glob2 = world.layout.unpack({**world.layout.pack(glob)})
    second = local_update(world, 1, glob2, loaded, _instr(server_round=2))
    reference = world.layout.pack(glob2)
    decoded, why = world.codec.decode(second.wire, reference)
    assert why is None
    plain = world.layout.pack(second.arrays)
    key = residual_key(SHARED)
    np.testing.assert_array_equal(decoded[SHARED] - reference[SHARED] + second.local_state[key],
                                  (plain[SHARED] - reference[SHARED]) + loaded[key])


def test_selection_plans_with_the_compressed_bits():
    plain = ExpertWise(world_for(tiny_config()))
    world = world_for(tiny_config(federated={"compression": QSGD4}))
    small = ExpertWise(world)
    segs = world.codec.segments[SHARED]
    assert small._param_bits[0] == -(-sum(segs) * 4 // 8) * 8 + 32 * len(segs)
    assert plain._param_bits[0] == sum(segs) * 32
    ratio = small._param_bits[1] / plain._param_bits[1]
    assert np.all((ratio > 0.125) & (ratio < 0.14))


def _first_round(compression, grid_cls=LocalGrid, **grid):
    world = world_for(_cfg(compression, rounds=1, stage1_rounds=1))
    strategy = ExpertWise(world)
    initial = state_to_numpy(world.template.state_dict())
    g = grid_cls(4, **grid)
    result = strategy.start(g, to_record(initial), num_rounds=1)
    return world, strategy, g, {k: v.numpy() for k, v in result.arrays.items()}


def _unpack8(codes, scale, segs):
    """8-bit qsgd decoded by hand: m (code − 127) / 127 with each entry's segment scale."""
    m = np.repeat(scale.astype(np.float64), segs)
    return m * (codes.astype(np.float64) - 127) / 127


def test_honest_compressed_round_aggregates_the_decoded_updates_and_charges_the_bits_sent():
    world, strategy, grid, final = _first_round({"method": "qsgd", "bits": 8})
    record = strategy.history[0]
    assert record.completed == 4 and record.failed == 0
    sent = world.layout.pack(state_to_numpy(world.template.state_dict()))
    replies = [r for _, r in grid.exchanges if r.content.array_records.get("arrays") is not None]
    bits = [payload_bits(to_numpy(r.content["arrays"])) for r in replies]
    assert record.upload_bits == sum(bits) == sum(r.content["metrics"][UPLOAD_BITS_KEY] for r in replies)
    assert record.upload_bits == 4 * _device_bits(world)  # every device has every sensor: all experts
    for group in [SHARED, expert_group(0), expert_group(3)]:
        segs = world.codec.segments[group]
        num = np.zeros(sum(segs))
        den = 0.0
        for r in replies:
            arrays, metrics = to_numpy(r.content["arrays"]), r.content["metrics"]
            i = None if group == SHARED else int(group.split("/")[1])
            w = float(metrics[NUM_EXAMPLES_KEY]) * (1.0 if i is None else float(metrics[USAGE_KEY][i]))
            num += w * (sent[group].astype(np.float64) + _unpack8(arrays[f"{group}#codes"],
                                                                  arrays[f"{group}#scale"], segs))
            den += w
        got = world.layout.pack(final)[group]
        np.testing.assert_allclose(got, (num / den).astype(np.float32), rtol=1e-5, atol=1e-6)


def _edit(part, fn):
    def tamper(reply):
        arrays = to_numpy(reply.content["arrays"])
        arrays[part] = fn(arrays[part])
        reply.content["arrays"] = to_record(arrays)
    return tamper


def _nan_at_0(a):
    a = a.copy()
    a[0] = np.nan
    return a


def _set(i, value):
    def edit(a):
        a = a.copy()
        a[i] = value if not callable(value) else value(a)
        return a
    return edit


MALFORMED = {
    "codes of the wrong dtype": (QSGD4, "shared#codes", lambda a: a.astype(np.uint16), "dtype"),
    "NaN scale": (QSGD4, "shared#scale", _nan_at_0, "NaN"),
    "code out of range": (QSGD4, "shared#codes", _set(0, 0xFF), "exceeds 14"),
    "too many codes": (QSGD4, "shared#codes", lambda a: np.concatenate([a, a[:1]]), "shape"),
    "index out of range": (TOPK, "shared#index", _set(-1, 2 ** 31), "outside"),
    "duplicate indices": (TOPK, "shared#index", _set(1, lambda a: a[0]), "strictly increasing"),
    "too many values": (TOPK, "shared#value", lambda a: np.concatenate([a, a[:1]]), "shape"),
    "indices as float": (TOPK, "shared#index", lambda a: a.astype(np.float32), "dtype"),
}


@pytest.fixture(scope="module")
def replay_cache() -> dict:
    return {}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_compressed_reply_is_a_logged_rejection(kind, replay_cache, caplog):
    compression, part, fn, reason = MALFORMED[kind]
    _, strategy, _, _ = _first_round(compression, ReplayGrid, cache=replay_cache, tamper={2: _edit(part, fn)})
    record = strategy.history[0]
    assert record.completed == 3 and record.rejected == 1
    assert any("node 2: rejected" in f and reason in f for f in record.failures), record.failures


def test_a_part_left_out_is_rejected(replay_cache):
    def drop(reply):
        arrays = to_numpy(reply.content["arrays"])
        del arrays["shared#value"]
        reply.content["arrays"] = to_record(arrays)
    _, strategy, _, _ = _first_round(TOPK, ReplayGrid, cache=replay_cache, tamper={2: drop})
    assert strategy.history[0].rejected == 1 and "sent in part" in strategy.history[0].failures[0]


def test_dense_group_is_not_accepted_when_compression_is_on(replay_cache):
    """A device may not bypass the configured compression (the server only expects the parts)."""
    def dense(reply):
        reply.content["arrays"]["shared"] = Array(np.zeros(3, dtype=np.float32))
    _, strategy, _, _ = _first_round(TOPK, ReplayGrid, cache=replay_cache, tamper={2: dense})
    assert strategy.history[0].rejected == 1 and "unexpected arrays" in strategy.history[0].failures[0]


@pytest.mark.slow
@pytest.mark.parametrize("compression", [QSGD4, TOPK], ids=["qsgd4", "topk"])
def test_ray_run_charges_the_compressed_bits_on_the_clock(compression, tmp_path):
    """Flower on Ray: every device has every sensor and trains every expert in stage I, so each round's bits
    are (replies) × (one device's compressed bits): 4/32 of float32 plus a scale per entry for qsgd-4,
    64 k bits for top-k."""
    cfg = _cfg(compression, rounds=2, stage1_rounds=2, clients_per_round=3)
    cfg = cfg.model_copy(update={"partition": cfg.partition.model_copy(update={"num_devices": 3})})
    run_federated(cfg, tmp_path, progress=False)
    rounds = [r for r in json.loads((tmp_path / "metrics.json").read_text())["rounds"] if r["round"] > 0]
    world = world_for(cfg)
    plain = UpdateCodec(world.layout, None, False)
    per_device, uncompressed = _device_bits(world), _device_bits(world, plain)
    expected_ratio = 0.128 if compression is QSGD4 else 0.2
    assert per_device / uncompressed == pytest.approx(expected_ratio, rel=0.03)
    for r in rounds:
        assert r["completed"] == 3 and r["failed"] == 0
        assert r["upload_bits"] == 3 * per_device


def test_a_sign_flipper_is_flipped_before_compression():
    """federated.faults' sign flip acts on the update before it is compressed, so it reaches the server
    under top-k too: the same k entries, each −s times the honest one."""
    from fedmoe.config import FaultConfig
    from fedmoe.federated.faults import sign_flip

    world = world_for(tiny_config(federated={"compression": TOPK}))
    glob = state_to_numpy(world.template.state_dict())
    honest = local_update(world, 0, glob, None, _instr())
    flipped = local_update(world, 0, glob, None, _instr(),
                           tamper=lambda wire, sent: sign_flip(FaultConfig(sign_flip_scale=2.0), wire, sent))
    assert set(honest.wire) == set(flipped.wire)
    for key, value in honest.wire.items():
        if key.endswith("#value"):
            np.testing.assert_allclose(flipped.wire[key], -2.0 * value, rtol=1e-5, atol=1e-6)
        elif key.endswith("#index"):
            np.testing.assert_array_equal(flipped.wire[key], value)
