"""What a real device prepares from the scenario, kept in its state folder between messages.

On Flower's deployment runtime every message to a SuperNode runs in a fresh
``flwr-clientapp`` process (Flower 1.41 has no mode that keeps one alive), so whatever a
device derives from the scenario would be derived again per message: its generated
training data (1–3 s on two cores) and the experts' counted FLOPs (whose
``FlopCounterMode`` imports ``torch._dynamo``, 1–3.5 s). A device whose SuperNode has a
state folder (node config ``state-dir``, :mod:`fedmoe.federated.device_state`) keeps
them there instead::

    <state-dir>/prepared/partition-<k>-<key>.npz     device k's training data (DevicePartition)
    <state-dir>/prepared/evaluation-<k>-<key>.npz    device k's held-out data
    <state-dir>/prepared/experts-<key>.npz           every expert's counted cost (ExpertCost)

``key`` is the SHA-256 of what determines the content — the config sections the
generator or the model builder reads (:func:`partition_key`, :func:`experts_key`), a
format number and the digest of fedmoe's own source (:func:`code_digest`) — so a changed
config or changed code finds no file under its key and rebuilds. When an entry is written
the older ones of the same name are removed.

A cache file is trusted only if it passes every check, else it is rebuilt and rewritten
(the refusal is recorded in :attr:`PreparedCache.events`, never raised): this user owns it
and nobody else may write it (:func:`fedmoe.files.open_private`); its arrays' names, dtypes
and sizes pass from the headers before any value is read and values are read with
``allow_pickle=False`` (:func:`fedmoe.npzfile.read_npz`); the key stored in it equals the
expected key; the SHA-256 of its arrays equals the digest stored with them (a flipped byte
anywhere is caught); and the data has the rows and input shapes the scenario says.

In simulation (``fedmoe run``) a Ray worker keeps partitions in memory
(``federated.partition_cache``) and nothing is written here: only a SuperNode's own
``state-dir`` enables this cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from fedmoe.data.samples import ISACSamples, check_dataset_members
from fedmoe.errors import UsageError
from fedmoe.files import open_private, write_atomic
from fedmoe.npzfile import Member, read_npz

FOLDER = "prepared"
FORMAT = 1
"""Bumped when the layout of a cache file changes."""

_META = ("cache/key", "cache/digest")
_PARTITION_EXTRA = ("partition/dropped", "partition/proportions")
_EXPERT_KEYS = ("experts/names", "experts/flops", "experts/params", "experts/input_bits")


class CacheRejected(UsageError):
    """A cache file that failed a check (one line naming the file and the check); it is rebuilt."""


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of every ``.py`` file of the running ``fedmoe`` package (relative path and bytes, sorted):
    the code that generated a cached entry must be the code that reads it."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _key(kind: str, parts: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, "format": FORMAT, "code": code_digest(), **parts}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def partition_key(cfg, device_id: int) -> str:
    """The key of device ``device_id``'s generated data: ``data``, ``wireless.channel`` (the synthetic
    source and the codebook) and ``partition`` sections, and the device."""
    return _key("partition", {"data": cfg.data.model_dump(mode="json"),
                              "channel": cfg.wireless.channel.model_dump(mode="json"),
                              "partition": cfg.partition.model_dump(mode="json"), "device": int(device_id)})


def experts_key(cfg, shapes: Mapping[str, tuple[int, ...]], bits: Mapping[str, int]) -> str:
    """The key of the experts' counted costs: the ``model`` section, the codebook size, the inputs'
    shapes and uplink bits."""
    return _key("experts", {"model": cfg.model.model_dump(mode="json"),
                            "beams": int(cfg.wireless.channel.codebook_size),
                            "shapes": {m: list(s) for m, s in sorted(shapes.items())},
                            "bits": {m: int(b) for m, b in sorted(bits.items())}})


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes (sorted by name; the cache's own keys excluded)."""
    digest = hashlib.sha256()
    for name in sorted(k for k in arrays if k not in _META):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


@dataclass
class PreparedCache:
    """The ``prepared/`` folder of one state folder (module docstring).

    ``events`` records what each lookup did, e.g. ``("partition-0", "hit")``, ``("partition-0",
    "miss")``, ``("partition-0", "rejected: ...")``: the ClientApp logs them and tests read them.
    """

    root: Path
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.root) / FOLDER

    def path(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key}.npz"

    # ------------------------------------------------------------------ generic

    def load(self, name: str, key: str, check: Callable[[Mapping[str, Member]], None]) -> dict[str, np.ndarray] | None:
        """The arrays of entry ``name`` under ``key``, or ``None`` (missing, or refused: recorded in ``events``)."""
        path = self.path(name, key)
        if not path.is_file():
            self.events.append((name, "miss"))
            return None
        what = f"prepared {name} {path}"
        try:
            with open_private(path, "prepared data") as f:
                arrays = read_npz(f, what, check=lambda members: self._check_meta(members, check, what))
            stored_key = str(arrays["cache/key"].reshape(-1)[0])
            if stored_key != key:
                raise CacheRejected(f"{what}: made for key {stored_key[:12]}…, expected {key[:12]}…")
            if str(arrays["cache/digest"].reshape(-1)[0]) != arrays_digest(arrays):
                raise CacheRejected(f"{what}: its arrays do not match the digest stored with them (damaged)")
        except (UsageError, OSError) as err:
            self.events.append((name, f"rejected: {err}"))
            return None
        self.events.append((name, "hit"))
        return arrays

    @staticmethod
    def _check_meta(members: Mapping[str, Member], check: Callable[[Mapping[str, Member]], None], what: str) -> None:
        for key in _META:
            m = members.get(key)
            if m is None or m.dtype.kind != "U" or m.shape != (1,):
                raise CacheRejected(f"{what}: {key} missing or not one string")
        check({k: m for k, m in members.items() if k not in _META})

    def save(self, name: str, key: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write entry ``name`` under ``key`` whole or not at all (with its key and digest); remove the
        older entries of the same name."""
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload["cache/key"] = np.array([key])
        payload["cache/digest"] = np.array([arrays_digest(payload)])
        path = self.path(name, key)
        write_atomic(path, lambda f: np.savez(f, **payload))
        pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{32}}\.npz$")
        for old in self.folder.iterdir():
            if old != path and pattern.match(old.name):
                old.unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ samples

    def load_samples(self, name: str, key: str, rows: int, shapes: Mapping[str, tuple[int, ...]],
                     extra: Mapping[str, Callable[[Member], bool]] | None = None
                     ) -> tuple[ISACSamples, dict[str, np.ndarray]] | None:
        """Entry ``name`` as samples (``rows`` of them, inputs of ``shapes``) and its ``extra`` arrays (each
        checked from its header by its predicate; absent ones allowed), or ``None``."""
        extra = dict(extra or {})
        what = f"prepared {name} {self.path(name, key)}"

        def check(members: Mapping[str, Member]) -> None:
            for k, ok in extra.items():
                if k in members and not ok(members[k]):
                    raise CacheRejected(f"{what}: {k} is {members[k].dtype}{list(members[k].shape)}")
            check_dataset_members({k: m for k, m in members.items() if k not in extra}, what)
            if members["present"].shape[0] != rows:
                raise CacheRejected(f"{what}: {members['present'].shape[0]} samples, the scenario gives {rows}")
            for m, shape in shapes.items():
                got = members.get(f"inputs/{m}")
                if got is not None and tuple(got.shape[1:]) != tuple(shape):
                    raise CacheRejected(f"{what}: inputs/{m} has shape {list(got.shape[1:])}, expected {list(shape)}")

        arrays = self.load(name, key, check)
        if arrays is None:
            return None
        try:
            samples = ISACSamples.from_arrays({k: v for k, v in arrays.items() if k not in extra}, what)
        except UsageError as err:
            self.events[-1] = (name, f"rejected: {err}")
            return None
        return samples, {k: arrays[k] for k in extra if k in arrays}

    def save_samples(self, name: str, key: str, samples: ISACSamples,
                     extra: Mapping[str, np.ndarray] | None = None) -> Path:
        return self.save(name, key, {**samples.to_arrays(), **dict(extra or {})})


def partition_extra(num_modalities: int, num_classes: int) -> dict[str, Callable[[Member], bool]]:
    """Header checks of a cached partition's own arrays: ``dropped`` (M,) integers, ``proportions`` (C,) floats."""
    return {"partition/dropped": lambda m: m.dtype.kind in "iu" and m.shape == (num_modalities,),
            "partition/proportions": lambda m: m.dtype.kind == "f" and m.shape == (num_classes,)}


def check_expert_members(num_experts: int | None) -> Callable[[Mapping[str, Member]], None]:
    """Header check of a cached expert-cost table: names (text) and three integer columns of equal length."""
    def check(members: Mapping[str, Member]) -> None:
        if set(members) != set(_EXPERT_KEYS):
            raise CacheRejected(f"expert costs: arrays {sorted(members)}, expected {sorted(_EXPERT_KEYS)}")
        n = members["experts/names"].shape
        wrong_count = num_experts is not None and len(n) == 1 and n[0] != num_experts
        if members["experts/names"].dtype.kind != "U" or len(n) != 1 or wrong_count:
            raise CacheRejected(f"expert costs: names are {members['experts/names'].dtype}{list(n)}")
        for k in _EXPERT_KEYS[1:]:
            if members[k].dtype.kind not in "iu" or members[k].shape != n:
                raise CacheRejected(f"expert costs: {k} is {members[k].dtype}{list(members[k].shape)}")
    return check
