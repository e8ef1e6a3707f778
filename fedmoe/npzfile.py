"""Reading ``.npz`` archives that may be hostile: names and sizes first, values after, never pickles.

``np.load(path)[key]`` decompresses a member before anything can look at it, so a small
archive can make a reader allocate gigabytes (a 1 MB deflated member of zeros grew to
1.4 GB before the dataset loader noticed it was not a dataset), and with
``allow_pickle=True`` an archive runs code. :func:`read_npz` instead

1. lists the members from the zip directory (no data read) and refuses more than
   ``max_members``, names that are not ``<key>.npy`` and duplicates;
2. reads each member's ``.npy`` header only (magic, dtype, shape: at most
   ``max_header_size`` bytes are decompressed) and refuses object dtypes (they are pickles)
   and a member whose size in the zip directory is not exactly header + values, so that
   the declared shapes bound what reading will allocate;
3. refuses when the arrays together declare more bytes than ``max_bytes`` (default: the
   memory this machine has available, :func:`fedmoe.memory.available_bytes`);
4. hands the headers to the caller's ``check`` (expected keys, dtypes, shapes), and only
   then
5. reads the values with ``allow_pickle=False``.

Every refusal is a one-line :class:`NpzError` (a :class:`~fedmoe.errors.UsageError`) that
starts with the ``what`` the caller gave, e.g. the file's path.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, TypeVar

import numpy as np

from fedmoe.errors import UsageError
from fedmoe.memory import available_bytes, format_bytes

T = TypeVar("T")

MAX_MEMBERS = 10_000
"""Default bound on the arrays of one archive (each header is read before any value)."""

MAX_HEADER_SIZE = 10_000
"""Longest ``.npy`` header read, bytes (numpy's own default bound)."""

_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError, KeyError,
                OverflowError, TypeError)
"""What zipfile and numpy raise on a damaged or crafted archive (besides OSError for the disk itself)."""


class NpzError(UsageError):
    """An ``.npz`` archive that is not what the reader expects, found before its values are read."""


@dataclass(frozen=True)
class Member:
    """One array of an archive, as its ``.npy`` header declares it.

    Attributes
    ----------
    key : str
        The name ``np.savez`` was given (the zip member's name without ``.npy``).
    dtype : numpy.dtype
        The values' dtype (never an object dtype).
    shape : tuple[int, ...]
        The array's shape.
    """

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the values (exact Python integers: no overflow on absurd shapes)."""
        count = 1
        for s in self.shape:
            count *= int(s)
        return count * self.dtype.itemsize


def read_npz(source: str | Path | BinaryIO, what: str, check: Callable[[Mapping[str, Member]], None] | None = None,
             max_bytes: int | None = None, max_members: int = MAX_MEMBERS) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, read only after its names and sizes pass (module docstring).

    Parameters
    ----------
    source : str, Path or binary file
        The archive (an open file is read from its current position's archive, e.g. one
        opened after an ownership check, :func:`fedmoe.files.open_private`).
    what : str
        How errors name the archive (its path, say).
    check : callable, optional
        ``check(members)`` with ``{key: Member}`` before any value is read; raises to refuse
        (its exception propagates unchanged).
    max_bytes : int, optional
        Most bytes the values may declare together; default the memory available.
    max_members : int, optional
        Most arrays the archive may hold.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``{key: array}`` in the archive's order.
    """
    try:
        zf = zipfile.ZipFile(source)
    except _READ_ERRORS as err:
        raise NpzError(f"{what}: not an .npz archive ({_one_line(err)})") from None
    with zf:
        members = _guarded(what, lambda: _members(zf, what, max_members))
        total = sum(m.nbytes for m, _ in members.values())
        limit = available_bytes() if max_bytes is None else max_bytes
        if limit is not None and total > limit:
            raise NpzError(f"{what}: its arrays declare {format_bytes(total)}, more than the "
                           f"{format_bytes(limit)} allowed (the memory available); nothing was read")
        if check is not None:
            check({key: m for key, (m, _) in members.items()})
        return {key: _guarded(what, lambda: _values(zf, info, member, what)) for key, (member, info) in members.items()}


def _guarded(what: str, read: Callable[[], T]) -> T:
    """``read()``, with what zipfile and numpy raise on a damaged or crafted archive as an :class:`NpzError`."""
    try:
        return read()
    except _READ_ERRORS as err:
        if isinstance(err, UsageError):
            raise
        raise NpzError(f"{what}: not a readable .npz archive ({type(err).__name__}: {_one_line(err)})") from None


def _values(zf: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member, what: str) -> np.ndarray:
    """The values of one member whose header passed (step 5); ``allow_pickle=False``."""
    with zf.open(info) as fp:
        values = np.lib.format.read_array(fp, allow_pickle=False, max_header_size=MAX_HEADER_SIZE)
    if values.shape != member.shape or values.dtype != member.dtype:
        raise NpzError(f"{what}: {member.key} is not the array its header declared")
    return values


def _members(zf: zipfile.ZipFile, what: str, max_members: int) -> dict[str, tuple[Member, zipfile.ZipInfo]]:
    """Every member's header (steps 1–2 of the module docstring), in the archive's order."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise NpzError(f"{what}: holds {len(infos)} members, more than the {max_members} allowed")
    keys: list[str] = []
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise NpzError(f"{what}: member {info.filename!r} is not an array (.npy)")
        keys.append(info.filename[:-len(".npy")])
    if len(set(keys)) != len(keys):
        twice = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise NpzError(f"{what}: member {twice}.npy appears twice")
    out: dict[str, tuple[Member, zipfile.ZipInfo]] = {}
    for key, info in zip(keys, infos):
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_HEADER_SIZE)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_HEADER_SIZE)
            else:
                raise NpzError(f"{what}: {key} has .npy format {version}, which this reader does not know")
            header_end = fp.tell()
        if dtype.hasobject:
            raise NpzError(f"{what}: {key} holds Python objects (a pickle), which are never loaded")
        if any(int(s) < 0 for s in shape):
            raise NpzError(f"{what}: {key} declares a negative dimension {shape}")
        member = Member(key, dtype, tuple(int(s) for s in shape))
        if info.file_size != header_end + member.nbytes:
            raise NpzError(f"{what}: {key} declares {member.shape} of {dtype} ({format_bytes(member.nbytes)}) "
                           f"but its member holds {format_bytes(info.file_size - header_end)}")
        out[key] = (member, info)
    return out


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
