"""A dataset file split for a federated run: the server's test set and each device's training and
held-out data (``data.input``; ``fedmoe run --input``).

The split deals out *units*: single samples (``partition.group = "sample"``) or whole
``seq_index`` sequences (``"sequence"``: a vehicle's pass stays on one device and out of the
test set; rows without a sequence are units of their own). In order:

1. a seeded ``data.test_fraction`` of the units (at least one) is the server's test set;
2. the other units go to the devices by :func:`fedmoe.data.partition.split_indices` on the
   units' labels (a sequence's label is its most frequent beam): ``label_skew = "iid"`` or
   ``"dirichlet"`` (``dirichlet_alpha``), sizes by ``quantity_skew``;
3. a seeded ``data.test_fraction`` of each device's rows (at least one, and at least one
   left to train on) is its held-out data; a device with one row evaluates on it.

Every row is in exactly one of: the test set, a device's training rows, a device's held-out
rows (except the single row of a one-row device, which is both). The sensors and degradation
of each device are applied afterwards, as for generated data (:mod:`fedmoe.data.partition`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedmoe.config import PartitionConfig
from fedmoe.data.partition import split_indices, stream_key
from fedmoe.data.samples import ISACSamples
from fedmoe.errors import UsageError


@dataclass(frozen=True)
class FileSplit:
    """Row indices (sorted int64 arrays) of the server's test set and, per device, of its
    training and held-out rows."""

    test: np.ndarray
    train: list[np.ndarray]
    evaluation: list[np.ndarray]


def unit_ids(samples: ISACSamples, group: str) -> np.ndarray:
    """(N,) dense unit id of each row: its own (``"sample"``) or its ``seq_index`` sequence's (``"sequence"``)."""
    n = len(samples)
    if group == "sample":
        return np.arange(n, dtype=np.int64)
    seq = samples.conditions.get("seq_index")
    if seq is None or not (np.asarray(seq) >= 0).any():
        raise UsageError("partition.group=sequence: the dataset has no seq_index sequences (conditions['seq_index'])")
    seq = np.asarray(seq, dtype=np.int64)
    keys = np.where(seq >= 0, seq, -1 - np.arange(n))  # rows without a sequence: units of their own
    _, ids = np.unique(keys, return_inverse=True)
    return ids.astype(np.int64)


def check_labels(samples: ISACSamples, num_classes: int, what: str) -> None:
    """Training needs a beam label in ``[0, num_classes)`` on every row (unlabelled imports are refused)."""
    labelled = samples.conditions.get("labelled")
    if labelled is not None and not np.asarray(labelled).all():
        raise UsageError(f"{what}: holds unlabelled rows (an unlabelled import is for inference only)")
    beam = samples.labels["beam"]
    bad = np.flatnonzero((beam < 0) | (beam >= num_classes))
    if len(bad):
        raise UsageError(f"{what}: beam label {int(beam[bad[0]])} of row {int(bad[0])} is outside 0..{num_classes - 1} "
                         "(wireless.channel.codebook_size)")


def split_file_dataset(samples: ISACSamples, pcfg: PartitionConfig, test_fraction: float, seed: int,
                       what: str = "the dataset") -> FileSplit:
    """The split of the module docstring; a dataset too small for it is a :class:`UsageError`."""
    ids = unit_ids(samples, pcfg.group)
    units = int(ids.max()) + 1 if len(ids) else 0
    n_test = max(1, int(round(test_fraction * units)))
    if units - n_test < pcfg.num_devices:
        raise UsageError(f"{what}: {units} {pcfg.group}s are too few for a test set of {n_test} and "
                         f"partition.num_devices={pcfg.num_devices} devices")
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream_key("file/test")]))
    order = rng.permutation(units)
    test_units, train_units = order[:n_test], np.sort(order[n_test:])
    beam = samples.labels["beam"]
    unit_label = np.array([np.bincount(beam[ids == u]).argmax() for u in train_units], dtype=np.int64)
    rows_of = {int(u): np.flatnonzero(ids == u) for u in train_units}
    train, evaluation = [], []
    for d, part in enumerate(split_indices(unit_label, pcfg.num_devices, pcfg, seed)):
        rows = np.sort(np.concatenate([rows_of[int(train_units[k])] for k in part]))
        n_eval = min(max(1, int(round(test_fraction * len(rows)))), max(1, len(rows) - 1))
        pick = np.random.default_rng(np.random.SeedSequence([seed, d, stream_key("file/evaluation")]))
        held = np.zeros(len(rows), dtype=bool)
        held[pick.choice(len(rows), n_eval, replace=False)] = True
        evaluation.append(rows[held])
        train.append(rows[~held] if len(rows) > 1 else rows)
    test = np.sort(np.flatnonzero(np.isin(ids, test_units))).astype(np.int64)
    return FileSplit(test, train, evaluation)


@lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int, size: int) -> ISACSamples:
    return ISACSamples.load(path)


def load_dataset_file(path: str | Path) -> ISACSamples:
    """:meth:`ISACSamples.load`, cached per process while the file is unchanged (every virtual client
    of a process reads it once)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such dataset file (data.input)")
    st = p.stat()
    return _load(str(p), st.st_mtime_ns, st.st_size)
