"""Partitioners: which data each simulated device holds, generated lazily per device.

A device's partition is a pure function of ``(source, config, seed, device_id)``: every
random aspect of it is drawn from its own generator, :func:`device_rng`, keyed on the
seed, the device id and the *name* of the aspect (a stream). So any process can build
device ``d``'s data without building devices ``0 .. d-1`` first, and a new aspect (a new
stream name) never changes the draws of the existing ones.

The entry point is :func:`make_device_partition`; the steps it chains are public too:

==================  =============================================  ==================
aspect              function                                       stream(s)
==================  =============================================  ==================
quantity skew       :func:`local_size`                             ``size``
label skew          ``LABEL_SKEWS[name]`` then                     ``labels``,
                    :func:`resample_to_proportions`                ``data``, ``selection``
modality presence   :func:`device_modalities`,                     ``modalities``
                    :func:`apply_modality_mask`
sensor degradation  :func:`device_degradation`,                    ``degradation``,
                    :func:`apply_degradation`                      ``noise/<m>``, ``dropout/<m>``
==================  =============================================  ==================

For a dataset already in memory, :func:`split_indices` splits its indices eagerly (IID or
the classic per-class Dirichlet split). The maths is in ``docs/partitioning.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fedmoe.config import MODALITIES, ConfigError, PartitionConfig
from fedmoe.data.samples import ISACSamples
from fedmoe.registry import Registry

SampleSource = Callable[[int, np.random.Generator], ISACSamples]
"""``source(n, rng)`` returns ``n`` fresh i.i.d. samples drawn with ``rng``."""

LabelSkew = Callable[[PartitionConfig, int, np.random.Generator], "np.ndarray | None"]
"""``skew(cfg, num_classes, rng)`` returns a device's target class proportions (C,), or
``None`` for "no label skew" (the device keeps the source's own label distribution)."""

LABEL_SKEWS: Registry[LabelSkew] = Registry("label skew")
"""Label-skew rules by name; :attr:`PartitionConfig.label_skew` selects one."""

_UINT64 = 2**64
_SPLIT_KEY = _UINT64 - 1  # "device id" of the streams of the eager split; never a real device


# --------------------------------------------------------------------------- random streams


def stream_key(stream: str) -> int:
    """A stable 64-bit key for a stream name (the first 8 bytes of its SHA-256).

    Python's ``hash`` is salted per process, so it cannot be used here.
    """
    return int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "little")


def _generator(seed: int, key: int, stream: str) -> np.random.Generator:
    """PCG64 seeded by ``SeedSequence`` on the fixed-width words of (seed, key, stream)."""
    words = []
    for value in (seed, key, stream_key(stream)):  # two 32-bit words each: no ambiguity
        words += [value & 0xFFFFFFFF, value >> 32]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(np.array(words, dtype=np.uint32))))


def device_rng(seed: int, device_id: int, stream: str) -> np.random.Generator:
    """The generator of one random aspect (``stream``) of one device.

    Parameters
    ----------
    seed
        Experiment seed, in ``[0, 2**64)``.
    device_id
        Device index, in ``[0, 2**64 - 1)``.
    stream
        Name of the aspect ("size", "labels", ...). Different names give independent
        generators; the same triple gives the same draws in every process.

    Returns
    -------
    numpy.random.Generator
    """
    if not 0 <= seed < _UINT64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if not 0 <= device_id < _SPLIT_KEY:
        raise ValueError(f"device_id must be in [0, 2**64 - 1), got {device_id}")
    return _generator(seed, device_id, stream)


# --------------------------------------------------------------------------- checks


def _check_device(cfg: PartitionConfig, device_id: int) -> None:
    if not 0 <= device_id < cfg.num_devices:
        raise ValueError(f"device_id must be in [0, num_devices={cfg.num_devices}), got {device_id}")


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")


def draw_samples(source: SampleSource, n: int, rng: np.random.Generator) -> ISACSamples:
    """``source(n, rng)``, checked to be an :class:`ISACSamples` of exactly ``n`` rows."""
    samples = source(n, rng)
    if not isinstance(samples, ISACSamples):
        raise ValueError(f"sample source returned {type(samples).__name__}, expected ISACSamples")
    if len(samples) != n:
        raise ValueError(f"sample source returned {len(samples)} samples, expected {n}")
    return samples


def class_labels(samples: ISACSamples, label_key: str, num_classes: int) -> np.ndarray:
    """``samples.labels[label_key]`` checked to be integer class ids in ``[0, num_classes)``."""
    if label_key not in samples.labels:
        raise ValueError(f"label {label_key!r} not in samples; available: {sorted(samples.labels)}")
    labels = samples.labels[label_key]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label {label_key!r} must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"label {label_key!r} has values outside [0, num_classes={num_classes})")
    return labels


# --------------------------------------------------------------------------- quantity skew


def _draw_size(cfg: PartitionConfig, seed: int, device_id: int) -> int:
    if cfg.quantity_skew == "none":
        return cfg.samples_per_device
    sigma = cfg.quantity_sigma
    mu = np.log(cfg.samples_per_device) - sigma**2 / 2  # E[exp(mu + sigma Z)] = samples_per_device
    size = device_rng(seed, device_id, "size").lognormal(mu, sigma)
    return max(1, int(round(size)))


def local_size(cfg: PartitionConfig, seed: int, device_id: int) -> int:
    """Number of samples device ``device_id`` holds (quantity skew).

    ``"none"``: ``samples_per_device``. ``"lognormal"``: ``max(1, round(S))`` with
    ``S = exp(mu + sigma Z)``, ``Z ~ N(0, 1)``, ``sigma = quantity_sigma`` and
    ``mu = ln(samples_per_device) - sigma^2 / 2``, so that ``E[S] = samples_per_device``.
    """
    _check_device(cfg, device_id)
    return _draw_size(cfg, seed, device_id)


# --------------------------------------------------------------------------- label skew


@LABEL_SKEWS.register("iid")
def iid_proportions(cfg: PartitionConfig, num_classes: int, rng: np.random.Generator) -> None:
    """No label skew: the device draws from the source as it is."""
    return None


@LABEL_SKEWS.register("dirichlet")
def dirichlet_proportions(cfg: PartitionConfig, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Per-device class proportions ``p_d ~ Dir(alpha 1_C)`` (Hsu et al., 2019).

    T.-M. H. Hsu, H. Qi, M. Brown, "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", arXiv:1909.06335, 2019. They draw
    ``q ~ Dir(alpha p)`` around a prior ``p``; with a uniform prior their ``alpha`` is
    ``C * dirichlet_alpha`` here. Small alpha: few classes per device; large: near-uniform.
    """
    return rng.dirichlet(np.full(num_classes, cfg.dirichlet_alpha))


@dataclass(frozen=True)
class PoolPolicy:
    """Size of the candidate pool that :func:`resample_to_proportions` draws.

    Attributes
    ----------
    factor
        The pool starts at ``factor * n`` samples.
    slack
        The pool is "lacking mass" while some class ``c`` holds fewer than
        ``floor(slack * n * p_c)`` samples; it is then doubled (fresh samples appended).
    max_factor
        ...but never beyond ``max_factor * n`` samples (bounds time and memory; a class
        the source rarely produces then ends up under-represented).
    """

    factor: int = 4
    slack: float = 2.0
    max_factor: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.factor <= self.max_factor or self.slack < 1:
            raise ValueError(f"need 1 <= factor <= max_factor and slack >= 1, got {self}")


DEFAULT_POOL = PoolPolicy()


def _normalised(proportions: np.ndarray, num_classes: int) -> np.ndarray:
    p = np.asarray(proportions, dtype=np.float64)
    if p.shape != (num_classes,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"label proportions must be {num_classes} finite non-negative numbers with a positive sum")
    return p / p.sum()


def _lacks_mass(counts: np.ndarray, proportions: np.ndarray, n: int, slack: float) -> bool:
    return bool(np.any(counts < np.floor(slack * n * proportions)))


def draw_pool(
    source: SampleSource,
    n: int,
    proportions: np.ndarray,
    rng: np.random.Generator,
    label_key: str,
    pool: PoolPolicy = DEFAULT_POOL,
) -> tuple[ISACSamples, np.ndarray]:
    """Draw the candidate pool for :func:`resample_to_proportions` (see :class:`PoolPolicy`).

    Returns
    -------
    (pool, labels)
        The pool and its checked class labels.
    """
    num_classes = len(proportions)
    parts = [draw_samples(source, pool.factor * n, rng)]
    labels = [class_labels(parts[0], label_key, num_classes)]
    size = len(parts[0])
    while size < pool.max_factor * n and _lacks_mass(np.bincount(np.concatenate(labels), minlength=num_classes),
                                                     proportions, n, pool.slack):
        extra = min(size, pool.max_factor * n - size)
        parts.append(draw_samples(source, extra, rng))
        labels.append(class_labels(parts[-1], label_key, num_classes))
        size += extra
    merged = parts[0] if len(parts) == 1 else ISACSamples.concat(parts)
    return merged, np.concatenate(labels)


def importance_resample(labels: np.ndarray, proportions: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` pool items drawn without replacement with probability ∝ ``p[y] / q[y]``.

    ``q`` is the pool's empirical label frequency, so the weights are the importance
    ratios target/pool of the labels: sampling-importance-resampling (Rubin, 1988). The
    result approximates ``n`` i.i.d. draws from ``P_d(x, y) = p[y] * P(x | y)``: the
    source's feature distribution within each class, with the class mix replaced by
    ``p`` (a label shift). Sampling is successive (each draw ∝ the remaining weights),
    done in one pass with the keys ``log(u) / w`` of Efraimidis & Spirakis (2006),
    "Weighted random sampling with a reservoir", Inf. Process. Lett. 97(5). Without
    replacement, a class whose target count ``n p_c`` is a sizeable share of its pool
    count ``K_c`` is under-drawn by about ``n p_c / (2 K_c)`` (relative); the pool policy
    keeps that share below ``1 / slack``. Items of weight 0 (``p_c = 0``) come last, in
    random order, so they fill in only when the positive-weight items run out.
    """
    if n > len(labels):
        raise ValueError(f"cannot pick {n} samples from a pool of {len(labels)}")
    counts = np.bincount(labels, minlength=len(proportions))
    weights = proportions[labels] * len(labels) / counts[labels]
    u = 1.0 - rng.random(len(labels))  # in (0, 1]: log(u) is finite
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(u) / weights, -np.inf)
    order = np.lexsort((u, keys))  # ascending by key, ties (weight 0) by u
    return order[::-1][:n]


def resample_to_proportions(
    source: SampleSource,
    n: int,
    proportions: np.ndarray,
    data_rng: np.random.Generator,
    select_rng: np.random.Generator,
    label_key: str = "beam",
    pool: PoolPolicy = DEFAULT_POOL,
) -> ISACSamples:
    """``n`` samples whose labels follow ``proportions``, drawn lazily from ``source``.

    Draws a candidate pool (:func:`draw_pool`) with ``data_rng`` and picks ``n`` of it by
    importance resampling (:func:`importance_resample`) with ``select_rng``. Classes with
    no sample in the pool lose their share; the others' shares are renormalised.
    """
    p = _normalised(proportions, len(proportions))
    candidates, labels = draw_pool(source, n, p, data_rng, label_key, pool)
    return candidates.subset(importance_resample(labels, p, n, select_rng))


# --------------------------------------------------------------------------- modality availability


def availability(cfg: PartitionConfig) -> np.ndarray:
    """Per-modality presence probabilities (M,) in :data:`MODALITIES` order.

    A modality absent from ``cfg.modality_availability`` is always present (1.0).
    """
    return np.array([cfg.modality_availability.get(m, 1.0) for m in MODALITIES])


def device_modalities(cfg: PartitionConfig, seed: int, device_id: int) -> np.ndarray:
    """Which sensors device ``device_id`` has: (M,) bool in :data:`MODALITIES` order.

    Sensor ``j`` is present independently with probability ``p_j`` (:func:`availability`).
    At least one is guaranteed: when none came up, one sensor ``j`` is added with
    probability ``p_j / sum(p)``. The marginal presence probability is therefore
    ``p_j + prod_k(1 - p_k) * p_j / sum(p)``. All ``p_j = 0`` is a ValueError.
    """
    _check_device(cfg, device_id)
    p = availability(cfg)
    if p.sum() <= 0:
        raise ConfigError("modality_availability gives every modality probability 0; at least one must be > 0")
    u = device_rng(seed, device_id, "modalities").random(len(p) + 1)  # fixed number of draws
    mask = u[:-1] < p
    if not mask.any():
        mask[np.searchsorted(np.cumsum(p) / p.sum(), u[-1], side="right")] = True
    return mask


def _without(samples: ISACSamples, drop: np.ndarray) -> ISACSamples:
    """A copy of ``samples`` where ``drop`` (N, M) marks entries to make absent (False, zeros)."""
    present = samples.present & ~drop
    inputs = dict(samples.inputs)
    for j, m in enumerate(MODALITIES):
        if m in inputs and drop[:, j].any():
            inputs[m] = inputs[m].copy()
            inputs[m][drop[:, j]] = 0
    return ISACSamples(inputs, present, samples.labels, samples.conditions, dict(samples.bits_per_sample))


def apply_modality_mask(samples: ISACSamples, mask: np.ndarray) -> ISACSamples:
    """Remove the modalities a device lacks: ``present[:, j] = False`` and zero arrays for ``~mask[j]``."""
    drop = np.broadcast_to(~np.asarray(mask, dtype=bool), samples.present.shape)
    return _without(samples, drop)


# --------------------------------------------------------------------------- sensor degradation


@dataclass(frozen=True)
class Degradation:
    """A device's sensor degradation levels, (M,) arrays in :data:`MODALITIES` order.

    Attributes
    ----------
    noise
        Extra Gaussian noise std, relative to each feature's std in the device's data.
    dropout
        Probability that a sample loses the modality.
    """

    noise: np.ndarray
    dropout: np.ndarray


def device_degradation(cfg: PartitionConfig, seed: int, device_id: int) -> Degradation:
    """Draw a device's levels: ``noise_j ~ U[0, degradation_noise]``, ``dropout_j ~ U[0, degradation_dropout]``."""
    _check_device(cfg, device_id)
    u = device_rng(seed, device_id, "degradation").random((2, len(MODALITIES)))
    return Degradation(noise=u[0] * cfg.degradation_noise, dropout=u[1] * cfg.degradation_dropout)


def _add_noise(x: np.ndarray, rows: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """``x[rows] + level * std * N(0, 1)``, std per feature over ``rows``; uint8 stays uint8 (rounded, clipped)."""
    out = x.copy()
    values = x[rows].astype(np.float64)
    noisy = values + level * values.std(axis=0) * rng.standard_normal(values.shape)
    if x.dtype == np.uint8:
        noisy = np.clip(np.rint(noisy), 0, 255)
    out[rows] = noisy.astype(x.dtype)
    return out


def apply_degradation(
    samples: ISACSamples, degradation: Degradation, seed: int, device_id: int
) -> tuple[ISACSamples, np.ndarray]:
    """Degrade each modality ``m`` of a device's samples.

    First noise: every present row gets ``x + noise_m * s * N(0, 1)``, ``s`` the
    per-feature std over the present rows (stream ``noise/<m>``; skipped when the level is
    0 or fewer than 2 rows are present). Then dropout: each present row independently
    loses the modality with probability ``dropout_m`` (stream ``dropout/<m>``, one uniform
    per sample, so a higher level drops a superset). A sample may end with no modality.

    Returns
    -------
    (samples, dropped)
        The degraded copy and the number of samples that lost each modality (M,) int64.
    """
    inputs = dict(samples.inputs)
    drop = np.zeros_like(samples.present)
    for j, m in enumerate(MODALITIES):
        rows = samples.present[:, j]
        if m in inputs and degradation.noise[j] > 0 and rows.sum() >= 2:
            inputs[m] = _add_noise(inputs[m], rows, float(degradation.noise[j]),
                                   device_rng(seed, device_id, f"noise/{m}"))
        if degradation.dropout[j] > 0:
            drop[:, j] = rows & (device_rng(seed, device_id, f"dropout/{m}").random(len(rows)) < degradation.dropout[j])
    noisy = ISACSamples(inputs, samples.present, samples.labels, samples.conditions, dict(samples.bits_per_sample))
    return _without(noisy, drop), drop.sum(axis=0).astype(np.int64)


# --------------------------------------------------------------------------- one device


@dataclass(frozen=True)
class DevicePartition:
    """Everything :func:`make_device_partition` produced for one device.

    Attributes
    ----------
    device_id
        The device.
    samples
        Its local data, after label/quantity skew, modality mask and degradation.
    modalities
        (M,) bool: the sensors the device has (:data:`MODALITIES` order).
    degradation
        The degradation levels drawn for it.
    dropped
        (M,) int64: how many samples lost each modality to dropout.
    label_proportions
        Target class proportions (C,) of the label skew, or None when there is none.
    """

    device_id: int
    samples: ISACSamples
    modalities: np.ndarray
    degradation: Degradation
    dropped: np.ndarray
    label_proportions: np.ndarray | None

    def summary(self) -> dict[str, Any]:
        """Plain-Python facts for logs (JSON-serialisable)."""
        per_modality = lambda a: {m: a[j].item() for j, m in enumerate(MODALITIES)}  # noqa: E731
        return {
            "device_id": self.device_id,
            "num_samples": len(self.samples),
            "modalities": [m for m, on in zip(MODALITIES, self.modalities) if on],
            "noise": per_modality(self.degradation.noise),
            "dropout": per_modality(self.degradation.dropout),
            "dropped": per_modality(self.dropped),
            "label_proportions": None if self.label_proportions is None else self.label_proportions.tolist(),
        }


def make_device_partition(
    source: SampleSource,
    cfg: PartitionConfig,
    seed: int,
    device_id: int,
    num_classes: int,
    label_key: str = "beam",
    *,
    label_skew: str | None = None,
    pool: PoolPolicy = DEFAULT_POOL,
) -> DevicePartition:
    """Build device ``device_id``'s local data lazily and deterministically.

    Size (:func:`local_size`) -> label skew (``LABEL_SKEWS[label_skew or
    cfg.label_skew]``: None draws ``n`` samples straight from ``source``, proportions go
    through :func:`resample_to_proportions`) -> sensors (:func:`device_modalities`) ->
    degradation (:func:`device_degradation`, :func:`apply_degradation`).

    Parameters
    ----------
    source
        ``source(n, rng)`` -> ``n`` fresh i.i.d. samples.
    cfg
        The partition settings.
    seed
        Experiment seed.
    device_id
        In ``[0, cfg.num_devices)``.
    num_classes
        Number of classes of ``labels[label_key]`` (e.g. the beam codebook size).
    label_key
        The label the label skew acts on.
    label_skew
        Registered label-skew name overriding ``cfg.label_skew``.
    pool
        Candidate-pool policy of the importance resampling.

    Raises
    ------
    ValueError
        Device id out of range, ``num_classes < 1``, a source returning the wrong number
        of samples, labels outside ``[0, num_classes)``.
    """
    _check_device(cfg, device_id)
    _check_num_classes(num_classes)
    rng = lambda stream: device_rng(seed, device_id, stream)  # noqa: E731
    n = local_size(cfg, seed, device_id)
    proportions = LABEL_SKEWS.get(label_skew or cfg.label_skew)(cfg, num_classes, rng("labels"))
    if proportions is None:
        samples = draw_samples(source, n, rng("data"))
    else:
        proportions = _normalised(proportions, num_classes)
        samples = resample_to_proportions(source, n, proportions, rng("data"), rng("selection"), label_key, pool)
    mask = device_modalities(cfg, seed, device_id)
    degradation = device_degradation(cfg, seed, device_id)
    samples, dropped = apply_degradation(apply_modality_mask(samples, mask), degradation, seed, device_id)
    return DevicePartition(device_id, samples, mask, degradation, dropped, proportions)


# --------------------------------------------------------------------------- eager split


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer sizes summing to ``total``, proportional to ``weights`` (largest remainder)."""
    quotas = total * weights / weights.sum()
    sizes = np.floor(quotas).astype(np.int64)
    extra = np.argsort(-(quotas - sizes), kind="stable")[: total - sizes.sum()]
    sizes[extra] += 1
    return sizes


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty part one index taken from the currently largest part (in part order)."""
    for d in range(len(parts)):
        if len(parts[d]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            parts[d], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return parts


def _iid_split(num_items: int, num_devices: int, cfg: PartitionConfig, seed: int) -> list[np.ndarray]:
    weights = np.array([_draw_size(cfg, seed, d) for d in range(num_devices)], dtype=np.float64)
    perm = _generator(seed, _SPLIT_KEY, "split/iid").permutation(num_items)
    return np.split(perm, np.cumsum(_apportion(num_items, weights))[:-1])


def _dirichlet_split(labels: np.ndarray, num_devices: int, alpha: float, seed: int) -> list[np.ndarray]:
    rng = _generator(seed, _SPLIT_KEY, "split/dirichlet")
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(num_devices, alpha))) * len(members)).astype(np.int64)[:-1]
        for d, piece in enumerate(np.split(members, cuts)):
            chunks[d].append(piece)
    return [np.concatenate(c) for c in chunks]


def split_indices(labels: np.ndarray, num_devices: int, cfg: PartitionConfig, seed: int) -> list[np.ndarray]:
    """Split the indices of an in-memory dataset among ``num_devices`` devices.

    ``cfg.label_skew == "iid"``: a random permutation cut into sizes proportional to the
    devices' :func:`local_size` draws (equal sizes, up to one, without quantity skew).
    ``"dirichlet"``: for each class, its indices are shuffled and cut among the devices by
    proportions ``~ Dir(alpha 1_K)``, as Flower Datasets' ``DirichletPartitioner`` does
    (without its self-balancing; Yurochkin et al., 2019). ``quantity_skew`` is ignored
    there: the split already makes sizes unequal.

    Every device gets at least one index: each empty device takes one from the currently
    largest device. Parts are disjoint, cover ``range(len(labels))`` and are sorted.

    Parameters
    ----------
    labels
        (N,) class of each item.
    num_devices
        Number of parts (``cfg.num_devices`` is not used here).
    cfg
        ``label_skew``, ``dirichlet_alpha``, quantity skew settings.
    seed
        Experiment seed.

    Returns
    -------
    list of (n_d,) int64 arrays
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if num_devices < 1 or len(labels) < num_devices:
        raise ValueError(f"need 1 <= num_devices <= len(labels) = {len(labels)}, got num_devices={num_devices}")
    if cfg.label_skew == "iid":
        parts = _iid_split(len(labels), num_devices, cfg, seed)
    elif cfg.label_skew == "dirichlet":
        parts = _dirichlet_split(labels, num_devices, cfg.dirichlet_alpha, seed)
    else:
        raise ValueError(f"split_indices supports label_skew 'iid' and 'dirichlet', got {cfg.label_skew!r}")
    return [np.sort(p).astype(np.int64) for p in _fill_empty(parts)]
