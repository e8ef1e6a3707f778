"""Which parameters of the mixture are aggregated over whom (``docs/architecture.md``, "A federated round").

Every entry of the mixture's ``state_dict`` falls in exactly one group:

* ``expert/<i>`` — the keys under ``experts.<i>.``: expert ``i``, aggregated only over the
  clients that hold its modalities and computed it this round;
* ``local`` — keys matching one of the glob patterns ``federated.local_keys``: they never
  leave the device (the client keeps them in ``context.state``);
* ``fixed`` — non-floating buffers (counters such as BatchNorm's ``num_batches_tracked``,
  constant masks): sent to clients but never averaged;
* ``shared`` — everything else (gate, task heads, standardiser, constant buffers):
  aggregated over all participants.

On the wire (Flower messages between ``clients/`` and ``strategies/``) each group travels
as **one flat array** named after the group (:class:`PackedLayout`), not as its dozens of
state-dict entries: every Flower ``Array`` costs serialisation, hashing and bookkeeping of
its own, whatever its size. Both ends derive the same layout from the scenario. Every
built-in Flower rule acts element by element or on the concatenation of all arrays, so
a group packed into one vector is aggregated exactly as its entries would be.

The helpers here are plain numpy/torch; Flower records are built in ``clients/`` and
``strategies/``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Mapping, Sequence

import numpy as np
import torch

SHARED = "shared"
LOCAL = "local"
FIXED = "fixed"
_EXPERT_KEY = re.compile(r"^experts\.(\d+)\.")


def expert_group(index: int) -> str:
    """Name of expert ``index``'s group."""
    return f"expert/{index}"


def is_local(key: str, local_patterns: Sequence[str]) -> bool:
    """Whether ``key`` matches one of the glob ``local_patterns``."""
    return any(fnmatch.fnmatchcase(key, p) for p in local_patterns)


def group_of(key: str, local_patterns: Sequence[str] = (), fixed: frozenset[str] | set[str] = frozenset()) -> str:
    """The group of one ``state_dict`` key (module docstring); ``fixed`` lists the non-floating keys."""
    if is_local(key, local_patterns):
        return LOCAL
    if key in fixed:
        return FIXED
    match = _EXPERT_KEY.match(key)
    return expert_group(int(match.group(1))) if match else SHARED


def _is_float(value: torch.Tensor | np.ndarray) -> bool:
    if isinstance(value, torch.Tensor):
        return torch.is_floating_point(value)
    return bool(np.issubdtype(np.asarray(value).dtype, np.floating))


def parameter_groups(state: Mapping[str, torch.Tensor | np.ndarray],
                     local_patterns: Sequence[str] = ()) -> dict[str, list[str]]:
    """``{group: [keys]}`` of a ``state_dict`` (tensors or arrays) in its order; every key in exactly one group."""
    fixed = {k for k, v in state.items() if not _is_float(v)}
    groups: dict[str, list[str]] = {}
    for key in state:
        groups.setdefault(group_of(key, local_patterns, fixed), []).append(key)
    return groups


def expert_index(group: str) -> int | None:
    """``i`` of ``"expert/<i>"``, else None."""
    return int(group.split("/", 1)[1]) if group.startswith("expert/") else None


def to_numpy(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A ``state_dict`` as numpy arrays (copies, detached)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def upload_keys(keys: Sequence[str], usage: np.ndarray, local_patterns: Sequence[str] = ()) -> list[str]:
    """What a client sends back: the shared keys and the keys of every expert it computed (``usage > 0``)."""
    out = []
    for key in keys:
        group = group_of(key, local_patterns)
        if group == LOCAL or (group != SHARED and expert_index(group) is None):
            continue
        i = expert_index(group)
        if i is None or usage[i] > 0:
            out.append(key)
    return out


def payload_bits(arrays: Mapping[str, np.ndarray]) -> int:
    """Bits of an update on the uplink: every array at its own width (float32: 32 bits per entry)."""
    return int(sum(a.size * a.dtype.itemsize * 8 for a in arrays.values()))


class PackedLayout:
    """The wire format of a mixture's parameters: one flat array per group (module docstring).

    A group whose entries share one floating dtype is sent as the concatenation of their
    flattened values under the group's name (``"shared"``, ``"expert/3"``, ``"local"``);
    any other entry (the ``fixed`` group, a group mixing dtypes) is sent as it is, under its
    own key. A packed group is sent whole or not at all.

    Parameters
    ----------
    state : mapping
        The model's ``state_dict`` (tensors or arrays): names, shapes, dtypes and order.
    local_patterns : sequence of str
        ``federated.local_keys``.
    """

    def __init__(self, state: Mapping[str, torch.Tensor | np.ndarray], local_patterns: Sequence[str] = ()) -> None:
        arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
                  for k, v in state.items()}
        self.groups = parameter_groups(arrays, local_patterns)
        self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        self.dtypes = {k: v.dtype for k, v in arrays.items()}
        self.packed: dict[str, np.dtype] = {}
        for group, keys in self.groups.items():
            kinds = {self.dtypes[k] for k in keys}
            if group != FIXED and len(kinds) == 1 and np.issubdtype(next(iter(kinds)), np.floating):
                self.packed[group] = next(iter(kinds))

    @property
    def expert_keys(self) -> list[str]:
        """State-dict names of every ``expert/<i>`` group (what SplitFed averages)."""
        return [k for group, keys in self.groups.items() if expert_index(group) is not None for k in keys]

    def wire_keys(self, group: str) -> list[str]:
        """The message keys that carry ``group``: its name if packed, else its entries."""
        return [group] if group in self.packed else list(self.groups[group])

    def pack(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named arrays (any subset of whole groups) → the arrays a message carries."""
        unknown = [k for k in arrays if k not in self.shapes]
        if unknown:
            raise ValueError(f"unknown parameters {unknown[:3]}{'…' if len(unknown) > 3 else ''}")
        out: dict[str, np.ndarray] = {}
        for group, keys in self.groups.items():
            present = [k for k in keys if k in arrays]
            if not present:
                continue
            if group not in self.packed:
                out.update({k: np.asarray(arrays[k]) for k in present})
                continue
            if len(present) != len(keys):
                missing = [k for k in keys if k not in arrays]
                raise ValueError(f"group {group!r} is sent in part (missing {missing[:3]}): send all of it or none")
            dtype = self.packed[group]
            out[group] = np.concatenate([np.asarray(arrays[k], dtype=dtype).reshape(-1) for k in keys])
        return out

    def entries(self, group: str) -> list[tuple[str, str, slice]]:
        """``[(state-dict name, message key, slice)]`` of ``group``: where each entry's values lie in the
        flattened array of the message key that carries it (the group's name if packed, else its own)."""
        if group not in self.packed:
            return [(k, k, slice(0, int(np.prod(self.shapes[k], dtype=np.int64)))) for k in self.groups[group]]
        out, start = [], 0
        for k in self.groups[group]:
            size = int(np.prod(self.shapes[k], dtype=np.int64))
            out.append((k, group, slice(start, start + size)))
            start += size
        return out

    def unpack(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The arrays of a message → named arrays with the model's shapes (inverse of :meth:`pack`)."""
        out: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            value = np.asarray(value)
            if name in self.packed:
                entries = self.entries(name)
                if value.size != entries[-1][2].stop:
                    raise ValueError(f"packed group {name!r} has {value.size} values, the model expects "
                                     f"{entries[-1][2].stop}")
                flat = value.reshape(-1)
                for k, _, where in entries:
                    out[k] = flat[where].reshape(self.shapes[k])
            elif name in self.shapes:
                out[name] = value
            else:
                raise ValueError(f"message carries unknown array {name!r} (a different model or scenario?)")
        return out
