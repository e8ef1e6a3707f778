"""The embedded synthetic multimodal ISAC dataset: seeded, vectorised, chunked.

A sample is one snapshot of the street scene of :mod:`fedmoe.data.scene`, with

* inputs: camera (3 x S x S uint8), lidar (range scan, m), radar (2 x R x A range-angle
  power/velocity map), GPS (current and previous noisy fix, m), RF (wide-beam powers, dBm);
* labels: best narrow beam of the BS codebook, the power of every codebook beam relative
  to the best (dB), multipath path loss (dB), next position of the user after
  ``time_step_s`` (m);
* conditions: ``blocked`` (the direct path crosses a large vehicle), ``is_uav``, ``position``.

Why the gate has something to learn: with a clear line of sight the best beam points at
the user, so the cheap GPS fix (and the coarse RF powers) predict it; when a truck blocks
the direct path the strongest path is a reflection off a facade feature or a lamp post,
whose direction and strength only the BS-side camera, lidar and radar can see.

Determinism: the same (config, seed, number of samples) gives identical arrays in any
process; chunk ``i`` (of :data:`CHUNK` samples) draws from child ``i`` of
``np.random.SeedSequence(seed)``, so the chunks could also be generated in parallel.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from fedmoe.config import MODALITIES, ChannelConfig, DataConfig
from fedmoe.data import sensors
from fedmoe.data.multipath import beam_power_db, compute_multipath
from fedmoe.data.partition import SampleSource
from fedmoe.data.samples import ISACSamples
from fedmoe.data.scene import draw_scene
from fedmoe.errors import UsageError
from fedmoe.memory import check_fits

CHUNK = 2048
"""Samples generated per vectorised step (bounds the temporary memory)."""


def generate_chunk(cfg: DataConfig, channel: ChannelConfig, n: int, rng: np.random.Generator) -> ISACSamples:
    """Draw ``n`` samples with ``rng`` (one vectorised pass, no chunking)."""
    sc, sens = cfg.scene, cfg.sensors
    scene = draw_scene(sc, channel.bs_height_m, n, rng)
    mp = compute_multipath(scene, sc, channel, rng)
    loss_range = sc.scatter_loss_db
    inputs = {
        "camera": sensors.camera(scene, sens, rng, loss_range),
        "lidar": sensors.lidar(scene, sens, rng),
        "radar": sensors.radar(scene, mp, sens, rng, loss_range, float(np.mean(sc.blockage_loss_db))),
        "gps": sensors.gps(scene, sens, rng, sc.time_step_s),
        "rf": sensors.rf(mp, sens, rng),
    }
    dt = sc.time_step_s
    next_pos = scene.user_pos + scene.user_vel * dt + 0.5 * scene.user_acc * dt**2
    power_db = beam_power_db(mp, channel)
    labels = {
        "beam": np.argmax(power_db, axis=1).astype(np.int64),
        "beam_power_db": power_db,
        "pathloss_db": mp.pathloss_db.astype(np.float32),
        "next_position": next_pos.astype(np.float32),
    }
    conditions = {
        "blocked": mp.direct_blocked.copy(),
        "is_uav": scene.is_uav.copy(),
        "position": scene.user_pos.astype(np.float32),
    }
    present = np.ones((n, len(MODALITIES)), dtype=bool)
    return ISACSamples(inputs, present, labels, conditions, sensors.bits_per_sample(sens))


def generate(cfg: DataConfig, channel: ChannelConfig | None = None, num_samples: int | None = None,
             seed: int | np.random.SeedSequence | None = None, progress: bool = False) -> ISACSamples:
    """Generate ``num_samples`` (default ``cfg.num_samples``) samples, seeded by ``seed`` (default ``cfg.seed``).

    Work proceeds in chunks of :data:`CHUNK` samples; ``progress=True`` shows a bar.
    """
    channel = channel or ChannelConfig()
    n = cfg.num_samples if num_samples is None else int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {n}")
    root = (seed if isinstance(seed, np.random.SeedSequence)
            else np.random.SeedSequence(cfg.seed if seed is None else seed))
    sizes = [min(CHUNK, n - start) for start in range(0, n, CHUNK)]
    children = root.spawn(len(sizes))
    parts = []
    with tqdm(total=n, unit="sample", desc="generating", disable=not progress, leave=False) as bar:
        for size, child in zip(sizes, children):
            parts.append(generate_chunk(cfg, channel, size, np.random.default_rng(child)))
            bar.update(size)
    return parts[0] if len(parts) == 1 else ISACSamples.concat(parts)


GENERATION_COPIES = 2
"""Copies of its samples :func:`generate` holds at its peak: the chunks, then their concatenation."""


def sample_bytes(cfg: DataConfig, channel: ChannelConfig | None = None) -> float:
    """Bytes one sample of this generator takes in memory (every input, label and condition), measured
    on two generated samples (the arrays' shapes follow from the sensor settings alone)."""
    probe = generate(cfg, channel, 2, seed=0)
    return probe.nbytes / len(probe)


def check_generation_fits(cfg: DataConfig, channel: ChannelConfig | None, num_samples: int, what: str) -> None:
    """Refuse (:class:`fedmoe.memory.MemoryEstimateError`, one line) to generate ``num_samples`` at once
    when :data:`GENERATION_COPIES` × :func:`sample_bytes` × ``num_samples`` exceeds the memory available.

    A run that cannot fit would otherwise swap or be killed after minutes of work; the
    estimate counts the samples alone (no model, no batches), so it refuses only what
    certainly cannot fit.

    Parameters
    ----------
    cfg, channel
        The generator's settings.
    num_samples : int
        Samples generated at once.
    what : str
        The setting that asks for them, for the message (``"data.num_samples=50000000"``).
    """
    per = sample_bytes(cfg, channel)
    check_fits(GENERATION_COPIES * per * num_samples,
               f"{what} ({num_samples:,} samples of {per / 1e3:.1f} kB, generated at once)")


def synthetic_source(cfg: DataConfig, channel: ChannelConfig | None = None) -> SampleSource:
    """A :data:`SampleSource` ``(n, rng) -> ISACSamples`` drawing fresh samples from this generator.

    Used by the partitioners to build a device's data lazily from (seed, device id).
    """
    channel = channel or ChannelConfig()

    def source(n: int, rng: np.random.Generator) -> ISACSamples:
        seq = np.random.SeedSequence(rng.integers(0, 2**63 - 1, size=4).tolist())
        return generate(cfg, channel, n, seq)

    return source


def train_test_split(samples: ISACSamples, test_fraction: float, seed: int = 0) -> tuple[ISACSamples, ISACSamples]:
    """A seeded random split; samples are i.i.d. so no stratification is needed."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(samples)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise UsageError(f"{n} samples are too few to hold out {test_fraction:.0%} for testing")
    return samples.subset(np.sort(perm[n_test:])), samples.subset(np.sort(perm[:n_test]))
