"""Run modes by name: ``mode`` of the config selects one; everything that depends on the mode
looks it up here instead of testing ``cfg.mode``.

Built-in modes, one module each, registered in :data:`MODES` as a :class:`Mode`:

* ``federated`` — :mod:`fedmoe.strategies.modes.federated` (loop: :mod:`fedmoe.strategies.federated_learning`);
* ``split``, ``splitfed`` — :mod:`fedmoe.strategies.modes.split` (:mod:`fedmoe.strategies.split_learning`);
* ``distributed`` — :mod:`fedmoe.strategies.modes.distributed` (:mod:`fedmoe.strategies.distributed_experts`);
* ``v2i`` — :mod:`fedmoe.strategies.modes.v2i` (:mod:`fedmoe.strategies.v2i_federated`).

Who asks: the ServerApp (:func:`fedmoe.strategies.server_app.serve_any`: ``serve``, ``resumable``),
``fedmoe run`` (:mod:`fedmoe.simulation`: ``check``, the progress bar's ``rounds`` and ``progress``;
:mod:`fedmoe.cli`: ``describe`` before the run, ``summarise`` after it) and ``fedmoe deploy
local`` (:mod:`fedmoe.deploy.local`: ``check``).

A new mode is a module like those (its check, its ServerApp loop, what ``fedmoe run`` prints)
ending in ``MODES.register("name", Mode(...))``, imported below; the config accepts the
name once it is added to :attr:`fedmoe.config.FedMoEConfig.mode` (with a config section of its
own if it has settings). A mode's serve loop sends its own message types, so the ClientApp
needs handlers for them (:mod:`clients`).
"""

from __future__ import annotations

from fedmoe.config import FedMoEConfig
from fedmoe.strategies.modes import distributed, federated, split, v2i  # noqa: F401  register the built-in modes
from fedmoe.strategies.modes.base import MODES, Mode

__all__ = ["MODES", "Mode", "check_config", "mode_of"]


def mode_of(cfg: FedMoEConfig) -> Mode:
    """The :class:`Mode` of ``cfg.mode`` (an :class:`~fedmoe.registry.UnknownNameError` listing the
    registered modes if there is none)."""
    return MODES.check(cfg.mode, "mode")


def check_config(cfg: FedMoEConfig) -> None:
    """The checks of ``cfg.mode``: what a run needs beyond a valid config, found before Ray or any
    process starts (``fedmoe run``, ``fedmoe deploy local``), and that TensorBoard is installed if the run
    is to write its event files (:func:`fedmoe.federated.live_log.check_tensorboard`)."""
    from fedmoe.federated.live_log import check_tensorboard

    mode_of(cfg).check(cfg)
    check_tensorboard(cfg.report.tensorboard)
