"""``mode = "federated"``: federated rounds of the mixture, the strategy ``federated.strategy``
over the devices (:mod:`fedmoe.strategies.federated_learning`); the only mode whose runs resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fedmoe.config import ConfigError, FedMoEConfig
from fedmoe.strategies.modes.base import MODES, Mode, check_devices_per_round


def check_federated_config(cfg: FedMoEConfig) -> None:
    """Fail before Ray starts: unknown strategy, aggregator, selection policy, gate or gate backbone,
    bad aggregator options, more devices per round than resource blocks (:class:`~fedmoe.config.ConfigError`
    / :class:`~fedmoe.registry.UnknownNameError`, naming the field), data that cannot fit in memory
    (:func:`fedmoe.federated.world.check_run_memory`)."""
    from fedmoe.federated.selection import SELECTION_POLICIES
    from fedmoe.federated.world import check_run_memory
    from fedmoe.models.builder import check_model_names
    from fedmoe.strategies import AGGREGATORS, STRATEGIES, make_aggregator

    fed = cfg.federated
    check_strategy = getattr(STRATEGIES.check(fed.strategy, "federated.strategy"), "check", None)
    if check_strategy is not None:  # what the strategy needs of the config (e.g. fedbuff's concurrency)
        check_strategy(cfg)
    SELECTION_POLICIES.check(fed.selection, "federated.selection")
    AGGREGATORS.check(fed.aggregator, "federated.aggregator")
    try:
        make_aggregator(fed.aggregator, dict(fed.aggregator_options))
    except ValueError as err:
        raise ConfigError(f"federated.aggregator_options: {err}") from None
    check_model_names(cfg.model)
    check_devices_per_round(cfg, cfg.partition.num_devices if fed.selection == "all" else fed.clients_per_round)
    check_run_memory(cfg)


def serve(grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
          scenario_file: Path | None = None, resume: bool = False, client_state_dir: Path | None = None):
    """:func:`fedmoe.strategies.federated_learning.serve`."""
    from fedmoe.strategies.federated_learning import serve as serve_federated

    return serve_federated(grid, cfg, run_dir, on_round, scenario_file, resume, client_state_dir)


def describe(cfg: FedMoEConfig) -> str:
    fed = cfg.federated
    return (f"federated run of scenario {cfg.name!r}: {cfg.partition.num_devices} devices, "
            f"{fed.rounds} rounds ({fed.stage1_rounds} stage I), strategy {fed.strategy} over {fed.aggregator}, "
            f"selection {fed.selection}")


def summarise(run: Any, out: Path) -> str:
    s = run.metrics["summary"]
    bits = ", ".join(f"{c} {b:,.0f}" for c, b in (s["uplink_bits_by_class"] or {}).items())
    return "\n".join([
        f"final test accuracy ({s['score']}) {s['accuracy']:.1%} (LoS {s['accuracy_los']:.1%}, "
        f"blocked {s['accuracy_blocked']:.1%}; "
        f"top-1 {s['top1']:.1%}, power ratio {s['power_ratio_db']:.2f} dB) after {s['rounds']} rounds; "
        f"virtual time {s['virtual_time_s']:.1f} s, energy {s['energy_j']:.1f} J "
        f"({s['mean_energy_per_round_j']:.2f} J/round); wall {run.wall_s:.0f} s",
        f"camera/lidar/radar used for {s['costly_share_los']:.0%} of LoS and {s['costly_share_blocked']:.0%} of "
        f"blocked samples; uplink bits per sample by link class: {bits}",
        f"wrote {out}/metrics.json, rounds.csv, accuracy.png, energy.png, gate_usage.png, policy.png, checkpoints/",
    ])


MODES.register("federated", Mode(check=check_federated_config, serve=serve, describe=describe, summarise=summarise,
                                 resumable=True))
