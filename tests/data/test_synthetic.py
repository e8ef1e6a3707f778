"""The embedded synthetic ISAC generator: determinism, shapes, and the physics behind the labels."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import MODALITIES, ChannelConfig, DataConfig, SceneConfig, SensorConfig
from fedmoe.data import synthetic
from fedmoe.data.multipath import compute_multipath, direction_cosine
from fedmoe.data.samples import ISACSamples
from fedmoe.data.scene import draw_scene, segments_blocked
from fedmoe.data.synthetic import generate, synthetic_source, train_test_split
from fedmoe.wireless.antenna import direction_to_beam


@pytest.fixture(scope="module")
def samples() -> ISACSamples:
    return generate(DataConfig(), num_samples=3000, seed=7)


def test_same_seed_same_data_other_seed_other_data(samples):
    again = generate(DataConfig(), num_samples=3000, seed=7)
    for key, arr in samples.inputs.items():
        np.testing.assert_array_equal(arr, again.inputs[key])
    for key, arr in samples.labels.items():
        np.testing.assert_array_equal(arr, again.labels[key])
    other = generate(DataConfig(), num_samples=3000, seed=8)
    assert not np.array_equal(other.labels["beam"], samples.labels["beam"])
    assert not np.array_equal(other.inputs["gps"], samples.inputs["gps"])


def test_seed_defaults_to_the_config_seed():
    a = generate(DataConfig(seed=5), num_samples=50)
    b = generate(DataConfig(), num_samples=50, seed=5)
    np.testing.assert_array_equal(a.inputs["camera"], b.inputs["camera"])


def test_shapes_dtypes_and_sizes_follow_the_config():
    sens = SensorConfig(camera_size=16, lidar_rays=40, radar_range_bins=8, radar_angle_bins=12, rf_beams=4)
    s = generate(DataConfig(sensors=sens), ChannelConfig(codebook_size=32, num_antennas=32), num_samples=300, seed=1)
    assert len(s) == 300
    assert s.inputs["camera"].shape == (300, 3, 16, 16) and s.inputs["camera"].dtype == np.uint8
    assert s.inputs["lidar"].shape == (300, 40)
    assert s.inputs["radar"].shape == (300, 2, 8, 12)
    assert s.inputs["gps"].shape == (300, 6)
    assert s.inputs["rf"].shape == (300, 4)
    for m in ("lidar", "radar", "gps", "rf"):
        assert s.inputs[m].dtype == np.float32 and np.isfinite(s.inputs[m]).all(), m
    assert s.present.all() and s.present.shape == (300, len(MODALITIES))
    assert s.labels["beam"].dtype == np.int64 and s.labels["beam"].min() >= 0 and s.labels["beam"].max() < 32
    assert np.isfinite(s.labels["pathloss_db"]).all() and s.labels["next_position"].shape == (300, 3)
    bits = s.bits_per_sample
    assert bits == {"camera": 3 * 16 * 16 * 8, "lidar": 40 * 16, "radar": 2 * 8 * 12 * 16, "gps": 6 * 32, "rf": 4 * 16}
    # The costly modalities are costly: camera > radar > lidar > RF, GPS.
    assert bits["camera"] > bits["radar"] > bits["lidar"] > max(bits["gps"], bits["rf"])


def test_chunks_are_concatenated_in_order(monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK", 100)
    s = synthetic.generate(DataConfig(), num_samples=250, seed=3)
    assert len(s) == 250
    # The third chunk (50 samples) is child 2 of the seed sequence.
    children = np.random.SeedSequence(3).spawn(3)
    last = synthetic.generate_chunk(DataConfig(), ChannelConfig(), 50, np.random.default_rng(children[2]))
    np.testing.assert_array_equal(s.inputs["lidar"][200:], last.inputs["lidar"])


def _brute_force_blocked(p0: np.ndarray, p1: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                         steps: int = 4001) -> np.ndarray:
    """Independent reference for the slab test: is any of ``steps`` points along each open segment strictly
    inside any of its sample's boxes? (Points at 0.1 % from the ends, as a reflector's own face is not a blocker.)"""
    t = np.linspace(0.001, 0.999, steps)[:, None]
    out = np.zeros(len(p1), dtype=bool)
    for i in range(len(p1)):
        pts = p0[i] + t * (p1[i] - p0[i])
        out[i] = ((pts[:, None, :] > lo[i][None]) & (pts[:, None, :] < hi[i][None])).all(-1).any()
    return out


def test_blocked_flag_is_the_geometry():
    """The samples' ``conditions["blocked"]`` against the scene they were drawn from: the direct path from the
    base station to the user crosses a blocker box, found by walking along it (not by the generator's slab test)."""
    cfg, ch = DataConfig(), ChannelConfig()
    samples = synthetic.generate_chunk(cfg, ch, 500, np.random.default_rng(11))
    scene = draw_scene(cfg.scene, ch.bs_height_m, 500, np.random.default_rng(11))  # the same first draws
    bs = np.broadcast_to(scene.bs, scene.user_pos.shape)
    walked = _brute_force_blocked(bs, scene.user_pos, scene.blk_lo, scene.blk_hi)
    np.testing.assert_array_equal(samples.conditions["blocked"], walked)
    assert 0.1 < walked.mean() < 0.7  # both conditions are well represented


def test_segments_blocked_simple_cases():
    lo = np.array([[[1.0, -1.0, -1.0]]])
    hi = np.array([[[2.0, 1.0, 1.0]]])
    p0 = np.zeros((1, 3))
    assert segments_blocked(p0, np.array([[3.0, 0.0, 0.0]]), lo, hi)[0]
    assert not segments_blocked(p0, np.array([[0.5, 0.0, 0.0]]), lo, hi)[0]  # stops before the box
    assert not segments_blocked(p0, np.array([[3.0, 5.0, 0.0]]), lo, hi)[0]  # passes beside it
    assert not segments_blocked(p0, np.array([[1.0, 0.0, 0.0]]), lo, hi)[0]  # ends on its face (a reflector)
    assert segments_blocked(p0, np.array([[1.5, 0.0, 0.0]]), lo, hi)[0]  # ends deep inside it


def test_los_samples_point_the_best_beam_at_the_user(samples):
    """In LoS the strongest path is the direct one: the best beam is the user's direction."""
    blocked = samples.conditions["blocked"]
    pos = samples.conditions["position"].astype(np.float64)
    u = direction_cosine(pos, np.array([0.0, 0.0, ChannelConfig().bs_height_m]))
    geometric = direction_to_beam(u, ChannelConfig().codebook_size)
    agree = np.abs(geometric - samples.labels["beam"]) <= 1
    assert agree[~blocked].mean() > 0.9
    assert agree[blocked].mean() < agree[~blocked].mean() - 0.2  # blockage moves the best beam elsewhere


def test_blockage_raises_the_path_loss(samples):
    pl, blocked = samples.labels["pathloss_db"], samples.conditions["blocked"]
    assert pl[blocked].mean() > pl[~blocked].mean() + 5.0


def test_gps_is_a_noisy_fix_of_the_position(samples):
    pos = samples.conditions["position"]
    err = samples.inputs["gps"][:, :3] - pos
    sigma = DataConfig().sensors.gps_noise_m
    assert abs(err[:, :2].std() - sigma) < 0.15 * sigma


def test_next_position_follows_the_motion(samples):
    step = np.linalg.norm(samples.labels["next_position"] - samples.conditions["position"], axis=1)
    dt = DataConfig().scene.time_step_s
    assert step.max() < 25.0 * dt + 5.0  # no teleporting: speed <= 20 m/s plus acceleration
    assert step.mean() > 1.0 * dt  # but users do move


def test_uav_fraction_and_uavs_fly(samples):
    uav = samples.conditions["is_uav"]
    assert abs(uav.mean() - SceneConfig().uav_fraction) < 0.04
    assert samples.conditions["position"][uav, 2].min() >= SceneConfig().uav_height_m[0] - 1e-3


def test_no_blockers_means_no_blockage():
    s = generate(DataConfig(scene=SceneConfig(num_blockers=0)), num_samples=400, seed=0)
    assert not s.conditions["blocked"].any()


def test_synthetic_source_is_seeded_by_the_generator():
    src = synthetic_source(DataConfig())
    a = src(64, np.random.default_rng(1))
    b = src(64, np.random.default_rng(1))
    c = src(64, np.random.default_rng(2))
    np.testing.assert_array_equal(a.inputs["rf"], b.inputs["rf"])
    assert not np.array_equal(a.inputs["rf"], c.inputs["rf"])


def test_train_test_split_is_disjoint_and_complete(samples):
    train, test = train_test_split(samples, 0.25, seed=0)
    assert len(train) + len(test) == len(samples) and len(test) == 750
    rows = lambda s: {r.tobytes() for r in s.inputs["gps"]}  # noqa: E731
    assert not rows(train) & rows(test)
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(samples, 1.0)


def test_bad_sample_count():
    with pytest.raises(ValueError, match="num_samples"):
        generate(DataConfig(), num_samples=0)


def test_beam_powers_are_the_codebook_gains_relative_to_the_best():
    """Recompute |w_bᴴ h|² from the channel of the same draw (same seed) and compare."""
    from fedmoe.data.synthetic import generate_chunk
    from fedmoe.wireless.antenna import beam_gains, dft_codebook

    cfg, channel = DataConfig(), ChannelConfig()
    s = generate_chunk(cfg, channel, 200, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    scene = draw_scene(cfg.scene, channel.bs_height_m, 200, rng)
    mp = compute_multipath(scene, cfg.scene, channel, rng)
    g = beam_gains(mp.h.astype(np.complex128), dft_codebook(channel.num_antennas, channel.codebook_size))
    expected = np.maximum(10 * np.log10(g / g.max(axis=1, keepdims=True)), -60.0)
    p = s.labels["beam_power_db"]
    assert p.shape == (200, channel.codebook_size) and p.dtype == np.float32
    np.testing.assert_allclose(p, expected, atol=1e-3)
    np.testing.assert_array_equal(s.labels["beam"], np.argmax(expected, axis=1))
    assert (p.max(axis=1) == 0).all() and (p <= 0).all()
