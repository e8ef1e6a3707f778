"""The run folder before a run (fedmoe.federated.run_folder): a non-empty folder needs --resume or
--force, and --force replaces a run's outputs only."""

from __future__ import annotations

import pytest

from fedmoe.federated.run_folder import RunFolderError, check_run_folder, clear_run_folder


def test_force_replaces_a_runs_outputs_and_keeps_other_files(tmp_path):
    """Issue 18, finding 7: a run into a folder silently deleted its state and unrelated files."""
    for name in ("checkpoints/resume.npz", "client_state/device_0/round_000001.npz", "metrics.json", "accuracy.png",
                 "notes.txt", "data/own.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    with pytest.raises(RunFolderError,
                       match="not empty \\(accuracy.png, checkpoints, client_state, data and 2 more\\)"):
        check_run_folder(tmp_path, resume=False, force=False)
    assert (tmp_path / "checkpoints" / "resume.npz").is_file()  # refusing changed nothing
    check_run_folder(tmp_path, resume=True, force=False)
    check_run_folder(tmp_path, resume=False, force=True)
    clear_run_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_an_empty_or_missing_folder_needs_nothing(tmp_path):
    check_run_folder(tmp_path, resume=False, force=False)
    check_run_folder(tmp_path / "absent", resume=False, force=False)
