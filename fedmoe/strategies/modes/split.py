"""``mode = "split"`` and ``"splitfed"``: split learning of the mixture over Flower messages,
the devices' experts averaged every round in SplitFed (:mod:`fedmoe.strategies.split_learning`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fedmoe.config import ConfigError, FedMoEConfig
from fedmoe.strategies.modes.base import MODES, Mode, check_devices_per_round, check_link


def check_split_config(cfg: FedMoEConfig) -> None:
    """Fail before Ray starts on a split-learning config: an unknown gate or gate backbone, a bad link
    option, more devices per round than devices or resource blocks, data that cannot fit in memory
    (:func:`fedmoe.federated.world.check_run_memory`)."""
    from fedmoe.federated.world import check_run_memory
    from fedmoe.models.builder import check_model_names

    check_model_names(cfg.model)
    if cfg.split.link != "ideal":
        check_link(cfg.split.link, cfg.split.link_options, "split")
    elif cfg.split.link_options:
        raise ConfigError("split.link_options: the ideal link takes no options")
    check_devices_per_round(cfg, cfg.federated.clients_per_round)
    check_run_memory(cfg)


def serve(grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
          scenario_file: Path | None = None, resume: bool = False, client_state_dir: Path | None = None):
    """:func:`fedmoe.strategies.split_learning.serve_split` (no resume, no device state folder)."""
    from fedmoe.strategies.split_learning import serve_split

    return serve_split(grid, cfg, run_dir, on_round, scenario_file)


def describe(cfg: FedMoEConfig) -> str:
    fed = cfg.federated
    return (f"{cfg.mode} learning run of scenario {cfg.name!r}: {cfg.partition.num_devices} "
            f"devices, {fed.clients_per_round} per round, {fed.rounds} rounds ({fed.stage1_rounds} stage I), "
            f"{cfg.split.link} feature link")


def summarise(run: Any, out: Path) -> str:
    s = run.metrics["summary"]
    acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.1%}"
    return "\n".join([
        f"final accuracy on the devices' held-out data {acc} after {s['rounds']} rounds; virtual time "
        f"{s['virtual_time_s']:.1f} s, energy {s['energy_j']:.1f} J ({s['mean_energy_per_round_j']:.2f} J/round); "
        f"wall {run.wall_s:.0f} s",
        f"wrote {out}/metrics.json, rounds.csv, accuracy.png, energy.png",
    ])


SPLIT = Mode(check=check_split_config, serve=serve, describe=describe, summarise=summarise)
MODES.register("split", SPLIT)
MODES.register("splitfed", SPLIT)
