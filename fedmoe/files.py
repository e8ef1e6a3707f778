"""Files that are either whole or absent: what every writer of run state uses.

A crash (or ``kill -9``) while writing leaves the previous version of the file, never half
of a new one: the content goes to a temporary file in the same folder, is flushed to the
disk (``fsync``) and then renamed over the target (``os.replace``, atomic on POSIX and
Windows within one file system); the folder is synced too, so the rename itself survives
a power cut.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, content: bytes, secret: bool = False) -> None:
    """Write ``content`` to ``path`` whole or not at all (module docstring); ``secret``: mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not possible, and not needed, on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
