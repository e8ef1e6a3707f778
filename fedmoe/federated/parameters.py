"""Which parameters of the mixture are aggregated over whom (DESIGN.md, "Federated learning").

Every entry of the mixture's ``state_dict`` falls in exactly one group:

* ``expert/<i>`` — the keys under ``experts.<i>.``: expert ``i``, aggregated only over the
  clients that hold its modalities and computed it this round;
* ``local`` — keys matching one of the glob patterns ``federated.local_keys``: they never
  leave the device (the client keeps them in ``context.state``);
* ``fixed`` — non-floating buffers (counters such as BatchNorm's ``num_batches_tracked``,
  constant masks): sent to clients but never averaged;
* ``shared`` — everything else (gate, task heads, standardiser, constant buffers):
  aggregated over all participants.

The helpers here are plain numpy/torch; Flower records are built in ``clients/`` and
``strategies/``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Mapping, Sequence

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


def parameter_groups(state: Mapping[str, torch.Tensor], local_patterns: Sequence[str] = ()) -> dict[str, list[str]]:
    """``{group: [keys]}`` of a ``state_dict`` in its order; every key in exactly one group."""
    fixed = {k for k, v in state.items() if not torch.is_floating_point(v)}
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
