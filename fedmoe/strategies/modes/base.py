"""What every place that depends on ``mode`` needs to know of one mode (:class:`Mode`), the
registry of modes (:data:`MODES`), and the config checks several modes share.

Nothing here imports a mode: the modes import this module and register themselves
(:mod:`fedmoe.strategies.modes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fedmoe.config import ConfigError, FedMoEConfig
from fedmoe.registry import Registry

ServeFunction = Callable[..., Any]
"""``serve(grid, cfg, run_dir, on_round=None, scenario_file=None, resume=False, client_state_dir=None) -> run``:
the ServerApp's loop of a mode on a Flower ``Grid``; it writes ``run_dir`` (when not ``None``), calls
``on_round`` with each round's record and returns the run (``run.metrics``, ``run.wall_s``)."""


def federated_rounds(cfg: FedMoEConfig) -> int:
    """The rounds of a run: ``federated.rounds``."""
    return cfg.federated.rounds


def round_progress(record: Any) -> dict[str, Any]:
    """The progress bar's fields after a round of the mixture (a federated or split-learning round record)."""
    return {"stage": record.stage, "devices": record.completed, "clock": f"{record.clock_s:.1f}s",
            "loss": f"{record.train_loss:.3f}"}


@dataclass(frozen=True)
class Mode:
    """One value of ``mode``: how its runs are checked, served, announced and summed up.

    Attributes
    ----------
    check : Callable[[FedMoEConfig], None]
        What a run needs beyond a valid config (registered names, link options, devices per
        round ...), checked before Ray or any process starts (``fedmoe run``, ``fedmoe deploy
        local``); a one-line error naming the config field.
    serve : ServeFunction
        The ServerApp's loop (:data:`ServeFunction`).
    describe : Callable[[FedMoEConfig], str]
        What ``fedmoe run`` prints before the run starts, after ``"fedmoe <version>: "``.
    summarise : Callable[[Any, Path], str]
        What ``fedmoe run`` prints when the run (``serve``'s result) has written its folder ``out``.
    resumable : bool (default: False)
        Whether a run checkpoints its whole state and can continue (``fedmoe run --resume``).
    rounds : Callable[[FedMoEConfig], int] (default: :func:`federated_rounds`)
        The rounds of a run (the length of ``fedmoe run``'s progress bar).
    progress : Callable[[Any], dict] (default: :func:`round_progress`)
        The progress bar's fields after a round, from the record ``serve`` passes to ``on_round``.
    """

    check: Callable[[FedMoEConfig], None]
    serve: ServeFunction
    describe: Callable[[FedMoEConfig], str]
    summarise: Callable[[Any, Path], str]
    resumable: bool = False
    rounds: Callable[[FedMoEConfig], int] = federated_rounds
    progress: Callable[[Any], dict[str, Any]] = round_progress


MODES: Registry[Mode] = Registry("mode")
"""Modes by name (``mode`` of the config)."""


def check_devices_per_round(cfg: FedMoEConfig, per_round: int) -> None:
    """``per_round`` devices need a resource block each, and ``clients_per_round`` cannot exceed the devices."""
    num_rb = cfg.wireless.uplink.num_resource_blocks
    if per_round > num_rb:
        raise ConfigError(f"federated.clients_per_round={per_round} exceeds the {num_rb} uplink resource blocks "
                          "(each selected device needs one at least)")
    if cfg.federated.clients_per_round > cfg.partition.num_devices:
        raise ConfigError(f"federated.clients_per_round={cfg.federated.clients_per_round} exceeds "
                          f"partition.num_devices={cfg.partition.num_devices}")


def check_link(name: str, options: dict, field: str) -> None:
    """A feature link ``name`` accepts ``options`` (``field`` is the config section: ``split``, ``distributed``)."""
    from fedmoe.split.links import make_link

    try:
        make_link(name, **dict(options))
    except TypeError as err:  # an option the link does not take
        raise ConfigError(f"{field}.link_options: {err}") from None
    except ValueError as err:  # a value it refuses (its message names the option)
        raise ConfigError(str(err)) from None
