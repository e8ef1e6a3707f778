"""The run folder of ``fedmoe run`` (and of the ServerApp's ``run-dir``) before and after a run.

Before: a run starts in a missing or empty folder, continues the run saved there
(``--resume``), or replaces an earlier run's outputs when told to (``--force``). A folder
with anything in it is otherwise refused, naming what is there, so that a typo in
``--out`` never deletes an earlier run's state or writes over files that are not a run's
(:func:`check_run_folder`). ``--force`` removes only the names a run writes
(:data:`RUN_OUTPUTS`, :func:`clear_run_folder`); anything else in the folder stays.

After a failure (an error, a full disk, Ctrl-C): nothing may look finished, so the files
only a finished run writes (:data:`FINISHED_OUTPUTS`: ``checkpoints/final.pt`` and the
report) are removed. The state of the last complete round stays when the run can
continue from it (``fedmoe run --resume``), with the per-round files written so far
(:data:`LIVE_OUTPUTS`); otherwise the folder is removed if this run
made it, as every command removes the folder it made when it fails, or else the run's
outputs in it are (:func:`discard_failed_run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedmoe.config import FedMoEConfig
from fedmoe.errors import UsageError
from fedmoe.files import remove_made

CHECKPOINTS = "checkpoints"
CLIENT_STATE = "client_state"
"""Where, inside the run folder, the virtual devices keep their local state (:mod:`fedmoe.federated.device_state`)."""

FINISHED_OUTPUTS: tuple[str, ...] = (
    "checkpoints/final.pt", "scenario.toml", "metrics.json", "accuracy.png", "energy.png",
    "gate_usage.png", "policy.png", "energy_per_road.png", "accuracy_vs_snr.png")
"""What only a finished run writes (the final model, the report of every mode: :mod:`fedmoe.federated.report`,
:mod:`fedmoe.strategies.v2i_federated`, :mod:`fedmoe.strategies.distributed_experts`)."""

LIVE_OUTPUTS: tuple[str, ...] = ("config.json", "rounds.csv", "devices.csv", "tensorboard", "report.html")
"""What a run writes as it goes (:mod:`fedmoe.federated.live_log`) and ``fedmoe report``'s default page: a failed
run that can resume keeps them (they show the rounds so far), other failed runs lose them with the rest."""

RUN_OUTPUTS: tuple[str, ...] = (CHECKPOINTS, CLIENT_STATE, *LIVE_OUTPUTS,
                                *(n for n in FINISHED_OUTPUTS if "/" not in n))
"""Every name a run writes at the top of its folder: what ``--force`` removes."""


class RunFolderError(UsageError):
    """A run folder that holds something and was given neither ``--resume`` nor ``--force`` (one line)."""


def check_run_folder(out: Path, resume: bool, force: bool, what: str = "--out") -> None:
    """Refuse a run folder that holds anything unless the run resumes there or ``force`` (module
    docstring); a :class:`RunFolderError` naming what is there. Nothing is changed.

    Parameters
    ----------
    out : Path
        The run folder (already checked to be a folder or makeable,
        :func:`fedmoe.files.check_folder_target`).
    resume : bool
        The run continues the run saved there (the folder is left as it is).
    force : bool
        The outputs of an earlier run there may be replaced (:func:`clear_run_folder`).
    what : str, optional
        How the message names the folder (``--out``, ``run config run-dir``).
    """
    out = Path(out)
    if resume or force or not out.is_dir():
        return
    present = sorted(p.name for p in out.iterdir())
    if present:
        shown = ", ".join(present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
        raise RunFolderError(f"{what} {out}: not empty ({shown}); add --resume to continue the run saved there, or "
                             f"--force to replace an earlier run's outputs ({', '.join(RUN_OUTPUTS[:4])}, …; other "
                             "files are kept), or choose another folder")


def clear_run_folder(out: Path) -> None:
    """Remove the outputs of an earlier run in ``out`` (:data:`RUN_OUTPUTS`, what ``--force``
    replaces); every other file stays."""
    if Path(out).is_dir():
        _remove(Path(out), RUN_OUTPUTS)


def discard_failed_run(out: Path, cfg: FedMoEConfig, made: Path | None) -> None:
    """After a failed run in ``out``: remove what looks finished, keep a state to resume from (module docstring).

    Parameters
    ----------
    out : Path
        The run folder.
    cfg : FedMoEConfig
        The run's config (the saved state must be one ``--resume`` accepts with it).
    made : Path or None
        The outermost folder this run created (:func:`fedmoe.files.first_missing` before it
        started), ``None`` if ``out`` existed.
    """
    from fedmoe.federated.resume import ResumeError, load_state

    out = Path(out)
    _remove(out, FINISHED_OUTPUTS)
    try:
        load_state(out, cfg)
        return  # the state of the last complete round stays: `fedmoe run --resume` continues from it
    except ResumeError:
        pass
    if made is not None:
        remove_made(made)
    else:
        _remove(out, RUN_OUTPUTS)


def _remove(folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
