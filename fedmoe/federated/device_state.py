"""What a device keeps between rounds, on its own disk, so that a resumed run finds it.

A device's local state (the score-function critic, parameters matching
``federated.local_keys``) never leaves it. In memory it lives in Flower's
``context.state``, which is new for every run; a run resumed after a crash
(:mod:`fedmoe.federated.resume`) would start those from scratch and drift from the run
that never stopped. With a state folder the device instead writes its state after every
round it trains::

    <folder>/device_<k>/round_<t>.npz

and, asked to train round ``t``, loads the newest version of a round before ``t`` (to
evaluate after round ``t``, of a round up to ``t``). Every file is written whole or not at
all (:func:`fedmoe.files.write_atomic`) and read back only if this user owns it and nobody
else may write it (:func:`fedmoe.files.open_private`), as arrays whose names and sizes are
checked from their headers before any value is read, never as pickles
(:func:`fedmoe.npzfile.read_npz`). The two newest versions are kept: the server
checkpoints every round, so a run resumes at most one round behind the newest version a
device may have written.

Where the folder is:

* ``node-config`` key ``state-dir`` of the SuperNode (a real deployment: a folder on
  that machine, e.g. ``--node-config "partition-id=0 num-partitions=3 state-dir='/var/lib/fedmoe'"``);
* else ``client-state-dir`` in the message's config, which ``fedmoe run`` sets to
  ``<run>/client_state`` (simulation: every virtual device shares the machine's disk;
  with a multi-node Ray cluster that folder must be on a file system all nodes share);
* else none: the state stays in ``context.state`` only and is lost when the run stops.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fedmoe.files import check_folder_target, open_private, write_atomic
from fedmoe.npzfile import read_npz

NODE_CONFIG_KEY = "state-dir"
MESSAGE_CONFIG_KEY = "client-state-dir"
KEEP_VERSIONS = 2

_VERSION = re.compile(r"^round_(\d+)\.npz$")


class DeviceStateStore:
    """The versions of device ``device_id``'s local state under ``root`` (module docstring)."""

    def __init__(self, root: Path, device_id: int) -> None:
        self.folder = Path(root) / f"device_{int(device_id)}"

    def versions(self) -> list[int]:
        """Rounds with a saved version, ascending."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m[1]) for p in self.folder.iterdir() if (m := _VERSION.match(p.name)))

    def load_before(self, server_round: int) -> dict[str, np.ndarray]:
        """The newest version of a round before ``server_round`` (empty: none yet)."""
        return self._load([r for r in self.versions() if r < server_round])

    def load_up_to(self, server_round: int) -> dict[str, np.ndarray]:
        """The newest version of a round up to and including ``server_round``."""
        return self._load([r for r in self.versions() if r <= server_round])

    def save(self, server_round: int, state: dict[str, np.ndarray]) -> Path:
        """Write the state after ``server_round``; drop all but the :data:`KEEP_VERSIONS` newest."""
        path = self.folder / f"round_{int(server_round):06d}.npz"
        write_atomic(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in state.items()}))
        for old in self.versions()[:-KEEP_VERSIONS]:
            (self.folder / f"round_{old:06d}.npz").unlink(missing_ok=True)
        return path

    def _load(self, rounds: list[int]) -> dict[str, np.ndarray]:
        if not rounds:
            return {}
        path = self.folder / f"round_{rounds[-1]:06d}.npz"
        with open_private(path, "device state") as f:
            return read_npz(f, str(path))


def state_folder(node_config: dict, message_config: dict) -> Path | None:
    """The device's state folder: its node config's ``state-dir``, else the message's
    ``client-state-dir``, else ``None`` (module docstring). A path where no folder can be made
    (a file is in the way) is a one-line :class:`~fedmoe.files.PathError` naming the key, raised
    when the device reads its state, before it trains."""
    for source, key, what in ((node_config, NODE_CONFIG_KEY, "node config"),
                              (message_config, MESSAGE_CONFIG_KEY, "message config")):
        value = source.get(key)
        if value is not None and str(value).strip():
            return check_folder_target(str(value), f"{what} {key}")
    return None
