"""Files that are either whole or absent: what every writer of run state uses.

A crash (or ``kill -9``) while writing leaves the previous version of the file, never half
of a new one: the content goes to a temporary file in the same folder, is flushed to the
disk (``fsync``) and then renamed over the target (``os.replace``, atomic on POSIX and
Windows within one file system); the folder is synced too, so the rename itself survives
a power cut.

The commands that write a folder check the path first (:func:`check_folder_target`) and
write into it through :func:`output_folder`, which removes the folder again if the command
fails, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from fedmoe.errors import UsageError


def read_csv_rows(path: Path, error: type[Exception], empty: str) -> list[list[str]]:
    """The non-blank rows of the UTF-8 CSV file ``path`` (a byte-order mark allowed), or ``error`` in one line
    naming the file: not UTF-8, not valid CSV, or no row at all (``empty`` says what was expected). A missing
    or unreadable file raises ``OSError`` for the caller to word."""
    import csv
    import io

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 CSV file") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as err:
        raise error(f"{path}: not a valid CSV file ({err})") from None
    if not rows:
        raise error(f"{path}: {empty}")
    return rows


def write_atomic(path: Path, content: bytes | Callable[[BinaryIO], object], secret: bool = False) -> None:
    """Write ``content`` to ``path`` whole or not at all (module docstring).

    The file gets the mode a plain ``open(path, "w")`` would give it: ``0666`` less the
    process's umask (a user whose umask is ``077`` keeps every file private); ``secret``
    files get ``0600`` whatever the umask.

    Parameters
    ----------
    path : Path
        The file to write (its folder is made if missing).
    content : bytes or callable
        The bytes, or a function that writes them to the open temporary file
        (``lambda f: np.savez(f, **arrays)``, ``lambda f: torch.save(obj, f)``), so that large
        contents are streamed to the disk instead of first being built in memory.
    secret : bool, optional
        Mode ``0600`` (private keys).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600 if secret else 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status`` on Linux 4.7+).

    Elsewhere it is read by setting it and putting it back (``os.umask`` has no read-only
    form), which leaves it wrong for an instant to other threads that create files.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


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


class UnsafeFileError(UsageError):
    """A state file someone else could have written: not this user's, or writable by group or others."""


@contextmanager
def open_private(path: str | Path, what: str = "state file") -> Iterator[BinaryIO]:
    """``path`` open for reading, if this user owns it and nobody else may write it.

    A file the program loads its own state from (the resume state of a run, a device's
    state) must be one this user wrote: a file owned by someone else, or writable by the
    group or by others, could have been planted or changed by another user of the machine,
    so it is refused with an :class:`UnsafeFileError` naming the file, its owner and mode.
    The checks are made on the open file (``fstat``), so the file cannot be swapped between
    the check and the read; anything but a regular file (a FIFO, a device) is refused
    without blocking. Where POSIX owners and modes do not exist (Windows) only the
    regular-file check is made.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str, optional
        What the file is, for the message (``"resume state"``).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{what} {path}: not a regular file")
        if os.name == "posix":
            if st.st_uid != os.geteuid():
                raise UnsafeFileError(f"{what} {path}: owned by uid {st.st_uid}, not by this user (uid "
                                      f"{os.geteuid()}); refusing to load a file another user could have written")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UnsafeFileError(f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets the group or others "
                                      f"write it; refusing to load it (chmod go-w {path} if you trust its content)")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


class PathError(UsageError):
    """A path the user gave cannot be written to (one-line message naming the option and the path)."""


def check_folder_target(path: str | Path, what: str = "--out") -> Path:
    """``path`` if it is a folder, or one can be made there (no file in the way, a writable folder
    above); else a :class:`PathError` naming ``what`` and the path.

    Commands call it before any work, so a bad ``--out`` fails at once, with nothing written.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise PathError(f"{what} {path}: exists and is not a folder")
    _check_parents(path, what)
    return path


def check_file_target(path: str | Path, what: str = "--out") -> Path:
    """``path`` if a file can be written there (it is not a folder, and its folder can be made)."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} {path}: is a folder")
    _check_parents(path, what)
    return path


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing one of ``path`` and its ancestors is a writable folder (or ``path`` itself)."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            if p != path and not p.is_dir():
                raise PathError(f"{what} {path}: {p} is not a folder")
            folder = p if p.is_dir() else p.parent
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PathError(f"{what} {path}: {folder} is not writable")
            return


def first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its ancestors that does not exist (what making ``path``
    would create, and removing it would undo); ``None`` if ``path`` exists."""
    made = None
    for p in (Path(path), *Path(path).parents):
        if os.path.lexists(p):
            break
        made = p
    return made


def remove_made(made: Path | None) -> None:
    """Remove what :func:`first_missing` said a command made (nothing when ``None``)."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


@contextmanager
def output_folder(path: str | Path, what: str = "--out") -> Iterator[Path]:
    """The folder ``path`` (checked by :func:`check_folder_target`), made for the block to write into.

    If the block fails (an error, Ctrl-C), what was made for it is removed again: the folder
    and any parents made with it. A folder that existed before is kept.
    """
    path = check_folder_target(path, what)
    made = first_missing(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        remove_made(made)
        raise
