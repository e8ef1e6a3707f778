"""The container every fedmoe data source produces: inputs per modality, labels, conditions.

A sample may lack modalities: ``present[i, j]`` says whether sample ``i`` has modality
``MODALITIES[j]``. An absent modality's array slot holds zeros (never stale data), and
only modalities a source provides at all appear in ``inputs``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from fedmoe.config import MODALITIES
from fedmoe.errors import UsageError
from fedmoe.files import write_atomic
from fedmoe.npzfile import Member, NpzError, read_npz

LABEL_KEYS: tuple[str, ...] = ("beam", "pathloss_db", "next_position")
"""Task labels: best beam index (classification), path loss in dB and next position in m (regression).

A source may also give ``beam_power_db`` (N, B): every beam's power relative to the best,
dB (``<= 0``), which the power-ratio score and the ``soft_power`` objective need."""


@dataclass
class ISACSamples:
    """A batch of multimodal ISAC samples (struct of arrays, first axis = sample).

    Attributes
    ----------
    inputs
        modality name -> array of shape (N, ...); camera is uint8, the rest float32.
    present
        (N, len(MODALITIES)) bool; column order is :data:`fedmoe.config.MODALITIES`.
    labels
        ``beam`` (N,) int64, ``pathloss_db`` (N,) float32, ``next_position`` (N, 3) float32;
        optionally ``beam_power_db`` (N, B) float32, each beam's power relative to the best (dB).
    conditions
        per-sample facts that are not model inputs: ``blocked`` (N,) bool (the LoS path is
        obstructed), ``is_uav`` (N,) bool, ``position`` (N, 3) float32 (true position, m).
    bits_per_sample
        modality name -> uplink size of one sample of that modality, in bits.
    """

    inputs: dict[str, np.ndarray]
    present: np.ndarray
    labels: dict[str, np.ndarray]
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    bits_per_sample: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.present)
        if self.present.shape != (n, len(MODALITIES)) or self.present.dtype != np.bool_:
            raise ValueError(f"present must be a bool array of shape (N, {len(MODALITIES)}), got {self.present.shape}")
        for group, arrays in (("inputs", self.inputs), ("labels", self.labels), ("conditions", self.conditions)):
            for key, arr in arrays.items():
                if len(arr) != n:
                    raise ValueError(f"{group}[{key!r}] has {len(arr)} rows, expected {n}")
        unknown = set(self.inputs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")

    def __len__(self) -> int:
        return len(self.present)

    def has(self, modality: str) -> np.ndarray:
        """Per-sample availability of ``modality`` (N,) bool."""
        return self.present[:, MODALITIES.index(modality)]

    def subset(self, index: np.ndarray | slice) -> "ISACSamples":
        """Rows ``index`` (an integer array, bool mask or slice) as a new container."""
        pick = lambda d: {k: v[index] for k, v in d.items()}  # noqa: E731
        return ISACSamples(pick(self.inputs), self.present[index], pick(self.labels), pick(self.conditions),
                           dict(self.bits_per_sample))

    @staticmethod
    def concat(parts: list["ISACSamples"]) -> "ISACSamples":
        """Stack containers that hold the same keys."""
        if not parts:
            raise ValueError("nothing to concatenate")
        cat = lambda name: {k: np.concatenate([getattr(p, name)[k] for p in parts]) for k in getattr(parts[0], name)}  # noqa: E731
        return ISACSamples(cat("inputs"), np.concatenate([p.present for p in parts]), cat("labels"),
                           cat("conditions"), dict(parts[0].bits_per_sample))

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each modality's input (without the batch axis)."""
        return {m: tuple(a.shape[1:]) for m, a in self.inputs.items()}

    @property
    def nbytes(self) -> int:
        arrays = [*self.inputs.values(), *self.labels.values(), *self.conditions.values(), self.present]
        return int(sum(a.nbytes for a in arrays))

    @staticmethod
    def file_path(path: str | Path) -> Path:
        """Where :meth:`save` writes for ``path``: ``path`` with the ``.npz`` suffix."""
        path = Path(path)
        return path if path.suffix == ".npz" else path.with_suffix(".npz")

    def save(self, path: str | Path) -> Path:
        """Write an uncompressed ``.npz`` whole or not at all (:func:`fedmoe.files.write_atomic`)."""
        path = self.file_path(path)
        payload = self.to_arrays()
        write_atomic(path, lambda f: np.savez(f, **payload))
        return path

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The named arrays :meth:`save` writes (``present``, ``inputs/<m>``, ``labels/<k>``,
        ``conditions/<k>``, ``bits/names``, ``bits/values``); :meth:`from_arrays` reads them back."""
        payload: dict[str, np.ndarray] = {"present": self.present}
        for group in ("inputs", "labels", "conditions"):
            for key, arr in getattr(self, group).items():
                payload[f"{group}/{key}"] = arr
        payload["bits/names"] = np.array(list(self.bits_per_sample), dtype=str)
        payload["bits/values"] = np.array(list(self.bits_per_sample.values()), dtype=np.int64)
        return payload

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], what: str) -> "ISACSamples":
        """The container of :meth:`to_arrays`' arrays, whose headers passed :func:`check_dataset_members`
        (other keys are ignored); a :class:`~fedmoe.errors.UsageError` starting with ``what`` if they do
        not make one."""
        groups: dict[str, dict[str, np.ndarray]] = {"inputs": {}, "labels": {}, "conditions": {}}
        for key, value in arrays.items():
            group, _, name = key.partition("/")
            if group in groups:
                groups[group][name] = value
        try:
            bits = dict(zip(arrays["bits/names"].tolist(), (int(v) for v in arrays["bits/values"])))
            return cls(groups["inputs"], arrays["present"], groups["labels"], groups["conditions"], bits)
        except (KeyError, ValueError, TypeError) as err:
            raise UsageError(f"{what} ({err})") from None

    @classmethod
    def load(cls, path: str | Path) -> "ISACSamples":
        """Read a file written by :meth:`save`; a wrong or damaged file gives a
        :class:`~fedmoe.errors.UsageError` (a ``ValueError``) naming it.

        The file may come from anyone, so nothing is decompressed before its layout passes
        (:func:`check_dataset_members`: the keys :meth:`save` writes, plain numeric dtypes,
        one row per sample everywhere) and its arrays fit in the memory available
        (:func:`fedmoe.npzfile.read_npz`); object arrays (pickles) are never loaded.
        """
        path = Path(path)
        if path.is_dir():
            raise UsageError(f"{path}: is a folder, not a dataset file")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such dataset file")
        what = f"{path}: not a fedmoe dataset file"
        if not zipfile.is_zipfile(path):
            raise UsageError(f"{what} (not an .npz archive; make one with `fedmoe data make`)")
        try:
            arrays = read_npz(path, what, check=lambda members: check_dataset_members(members, what))
        except NpzError as err:
            raise UsageError(str(err)) from None
        return cls.from_arrays(arrays, what)


_PLAIN_KINDS = "biuf"
"""Dtype kinds a dataset array may have: booleans, integers, floats (never objects or records)."""


def check_dataset_members(members: Mapping[str, Member], what: str) -> None:
    """The layout :meth:`ISACSamples.save` writes, checked from the arrays' headers alone.

    ``present`` is a ``(N, len(MODALITIES))`` boolean array; ``bits/names`` (text) and
    ``bits/values`` (integers) have one entry per modality at most; every other key is
    ``inputs/<modality>``, ``labels/<name>`` or ``conditions/<name>``, with booleans, integers
    or floats and ``N`` rows. Anything else is a :class:`~fedmoe.errors.UsageError` starting
    with ``what``.

    Parameters
    ----------
    members : Mapping[str, Member]
        The archive's arrays as their headers declare them (:func:`fedmoe.npzfile.read_npz`).
    what : str
        The start of every message (the file, and that it is not a dataset).
    """
    required = ("present", "bits/names", "bits/values")
    missing = [k for k in required if k not in members]
    if missing:
        raise UsageError(f"{what} (it lacks {', '.join(missing)})")
    present, names, values = (members[k] for k in required)
    if present.dtype != np.bool_ or len(present.shape) != 2 or present.shape[1] != len(MODALITIES):
        raise UsageError(f"{what} (present is {present.dtype}{list(present.shape)}, expected "
                         f"bool[N, {len(MODALITIES)}])")
    n = present.shape[0]
    if names.dtype.kind != "U" or len(names.shape) != 1 or names.shape[0] > len(MODALITIES):
        raise UsageError(f"{what} (bits/names is {names.dtype}{list(names.shape)}, expected at most "
                         f"{len(MODALITIES)} modality names)")
    if values.dtype.kind not in "iu" or values.shape != names.shape:
        raise UsageError(f"{what} (bits/values is {values.dtype}{list(values.shape)}, expected "
                         f"{names.shape[0]} integers)")
    for key, m in members.items():
        if key in required:
            continue
        group, _, name = key.partition("/")
        if (group not in ("inputs", "labels", "conditions") or not name
                or (group == "inputs" and name not in MODALITIES)):
            raise UsageError(f"{what} (unexpected array {key!r})")
        if m.dtype.kind not in _PLAIN_KINDS or m.dtype.fields is not None:
            raise UsageError(f"{what} ({key} has dtype {m.dtype}, expected booleans, integers or floats)")
        if not m.shape or m.shape[0] != n:
            rows = m.shape[0] if m.shape else "no"
            raise UsageError(f"{what} ({key} has {rows} rows, the file has {n} samples)")
