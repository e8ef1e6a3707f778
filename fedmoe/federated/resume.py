"""Checkpoint and resume of a federated run: the server's whole state after every round.

After each round the server writes ``<run>/checkpoints/resume.pkl`` whole or not at all
(:func:`fedmoe.files.write_atomic`): the global arrays, the strategy's own state (round
records, virtual clock, what the devices reported, the selection RNG, the state of each
group's aggregation rule such as FedAvgM's momentum or FedAdam's moments), the server-side
evaluations so far, the random states of the server process (numpy, ``random``, torch) and
the configuration. ``fedmoe run --resume`` (or ``resume = true`` in the run config of
``flwr run``) reloads it and continues with the next round; with the same config and
seed the resumed run ends with the same global arrays, bit for bit, as a run that was
never stopped (``tests/federated/test_resume.py``).

What the devices keep between rounds (the score-function critic, parameters matching
``federated.local_keys``) is theirs, not the server's: each device writes it after every
round it trains into its own state folder (:mod:`fedmoe.federated.device_state`), so that
a resumed run finds it there.

The file is a pickle (the rules are arbitrary Flower strategies): resume only from a run
folder you wrote yourself, as with any ``torch.load``.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedmoe.config import FedMoEConfig
from fedmoe.errors import UsageError
from fedmoe.files import write_atomic

RESUME_FILE = "resume.pkl"
"""Name of the resume state inside ``<run>/checkpoints/``."""

FORMAT_VERSION = 1


class ResumeError(UsageError):
    """No resume state where one was asked for, or one that does not belong to this run."""


@dataclass
class ServerState:
    """Everything the server needs to continue a run after ``round`` (module docstring)."""

    round: int
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]
    strategy: dict[str, Any]
    evaluations: dict[int, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def resume_path(run_dir: Path) -> Path:
    """Where the resume state of the run in ``run_dir`` lives."""
    return Path(run_dir) / "checkpoints" / RESUME_FILE


def capture_rng() -> dict[str, Any]:
    """The global random states of this process: numpy's legacy generator, ``random`` and torch."""
    return {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned."""
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])


def save_state(run_dir: Path, state: ServerState) -> Path:
    """Write ``state`` atomically to :func:`resume_path` (a crash leaves the previous round's)."""
    path = resume_path(run_dir)
    write_atomic(path, lambda f: pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load_state(run_dir: Path, cfg: FedMoEConfig) -> ServerState:
    """The resume state of ``run_dir``, checked to belong to a run of ``cfg``.

    Raises :class:`ResumeError` (one line) when there is none, when it is not a fedmoe
    resume state, or when its configuration differs from ``cfg`` (naming the keys).
    """
    path = resume_path(run_dir)
    if not path.is_file():
        raise ResumeError(f"nothing to resume in {run_dir}: {path.name} not found under checkpoints/ "
                          "(the run never finished a round there, or wrote to another --out)")
    try:
        state = pickle.loads(path.read_bytes())
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ResumeError(f"{path} is not a readable fedmoe resume state ({type(err).__name__}: {err})") from None
    if not isinstance(state, ServerState):
        raise ResumeError(f"{path} is not a fedmoe resume state (it holds a {type(state).__name__})")
    if state.format_version != FORMAT_VERSION:
        raise ResumeError(f"{path} has format {state.format_version}; this fedmoe reads format {FORMAT_VERSION}")
    differences = config_differences(state.config, cfg.model_dump(mode="json"))
    if differences:
        shown = ", ".join(differences[:4]) + (f" and {len(differences) - 4} more" if len(differences) > 4 else "")
        raise ResumeError(f"cannot resume the run in {run_dir} with another configuration: {shown} differ "
                          "(resume with the scenario and --set values the run started with)")
    if state.round >= cfg.federated.rounds:
        raise ResumeError(f"nothing to resume in {run_dir}: the run finished all {cfg.federated.rounds} rounds")
    return state


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dumps (``"a.b (3 != 4)"``)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(f"{name} (only in {'the run' if key in saved else 'this config'})")
            else:
                out += config_differences(saved[key], current[key], name)
        return out
    if saved != current:
        return [f"{prefix} ({saved!r} != {current!r})"]
    return []
