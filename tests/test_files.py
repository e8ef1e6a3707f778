"""fedmoe.files.write_atomic: the file is whole or absent, written from bytes or streamed by a function, with
the mode the umask gives; fedmoe.npzfile.read_npz: an archive's names and sizes are checked before its values."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.files import write_atomic


def test_bytes_and_streamed_content_land_whole(tmp_path):
    write_atomic(tmp_path / "a" / "b.bin", b"abc")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"abc"
    write_atomic(tmp_path / "x.npz", lambda f: np.savez(f, w=np.arange(3)))
    with np.load(tmp_path / "x.npz") as z:
        assert z["w"].tolist() == [0, 1, 2]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.bin"
    write_atomic(target, b"old")

    def half_then_fail(f):
        f.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o027, 0o640), (0o022, 0o644), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    """Issue 18, finding 7: ``write_atomic`` forced 0644, so a user with umask 077 still wrote
    files every local user could read. It gives what ``open()`` would: 0666 less the umask."""
    import os
    import stat

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "plain.json", b"{}")
        write_atomic(tmp_path / "key.pem", b"secret", secret=True)
        with open(tmp_path / "reference", "wb"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "reference").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


def test_read_npz_refuses_from_the_headers_what_would_not_fit(tmp_path):
    """fedmoe.npzfile.read_npz: the declared sizes are summed before any value is read."""
    from fedmoe.npzfile import NpzError, read_npz

    np.savez(tmp_path / "a.npz", w=np.zeros(1000), v=np.zeros(24, dtype=np.float32))
    assert read_npz(tmp_path / "a.npz", "a.npz", max_bytes=8096)["v"].dtype == np.float32
    with pytest.raises(NpzError, match="a.npz: its arrays declare 7.9 KiB, more than the 7.9 KiB allowed"):
        read_npz(tmp_path / "a.npz", "a.npz", max_bytes=8095)
    seen = []
    read_npz(tmp_path / "a.npz", "a.npz", check=lambda members: seen.append(
        {k: (m.dtype.str, m.shape) for k, m in members.items()}))
    assert seen == [{"w": ("<f8", (1000,)), "v": ("<f4", (24,))}]


def test_read_npz_refuses_members_that_are_not_arrays(tmp_path):
    import zipfile

    from fedmoe.npzfile import NpzError, read_npz

    with zipfile.ZipFile(tmp_path / "b.npz", "w") as zf:
        zf.writestr("w.npy", b"\x93NUMPY garbage")
        zf.writestr("run.sh", b"echo hi")
    with pytest.raises(NpzError, match="member 'run.sh' is not an array"):
        read_npz(tmp_path / "b.npz", "b.npz")


def test_available_memory_is_read_from_meminfo(tmp_path):
    """fedmoe.memory: MemAvailable (kiB) from /proc/meminfo's format; a refusal names the estimate."""
    from fedmoe.memory import MemoryEstimateError, available_bytes, check_fits

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:    2097152 kB\n")
    assert available_bytes(meminfo) == 2 * 1024**3
    check_fits(2 * 1024**3, "exactly all of it", available=2 * 1024**3)
    with pytest.raises(MemoryEstimateError, match="x needs about 3.0 GiB of memory, more than the 2.0 GiB"):
        check_fits(3 * 1024**3, "x", available=2 * 1024**3)
