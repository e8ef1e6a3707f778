"""``mode = "distributed"``: distributed experts over noisy links with a channel-aware gate
[P004]: each expert on its own device (:mod:`fedmoe.strategies.distributed_experts`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fedmoe.config import FedMoEConfig
from fedmoe.strategies.modes.base import MODES, Mode, check_link


def check_distributed_config(cfg: FedMoEConfig) -> None:
    """Fail before Ray starts on a distributed-experts config with a bad link option (too few devices
    for the experts is a config error already)."""
    check_link(cfg.distributed.link, cfg.distributed.link_options, "distributed")


def serve(grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
          scenario_file: Path | None = None, resume: bool = False, client_state_dir: Path | None = None):
    """:func:`fedmoe.strategies.distributed_experts.serve_distributed` (no resume, no device state folder)."""
    from fedmoe.strategies.distributed_experts import serve_distributed

    return serve_distributed(grid, cfg, run_dir, on_round, scenario_file)


def describe(cfg: FedMoEConfig) -> str:
    d = cfg.distributed
    return (f"distributed experts [P004] of scenario {cfg.name!r}: {d.num_experts} experts "
            f"on devices, {d.dataset} data, {d.link} links, SNR {', '.join(f'{s:g}' for s in d.eval_snr_db)} dB")


def summarise(run: Any, out: Path) -> str:
    doc = run.metrics
    lines = [f"ideal-link accuracy {doc['ideal_link_accuracy']:.1%}; accuracy naive -> channel-aware gate:"]
    for snr in doc["results"]["naive"]:
        a, b = doc["results"]["naive"][snr]["accuracy"], doc["results"]["aware"][snr]["accuracy"]
        lines.append(f"  {float(snr):5.1f} dB: {a:.1%} -> {b:.1%} ({100 * (b - a):+.1f} points)")
    lines.append(f"wrote {out}/metrics.json, accuracy_vs_snr.png; wall {run.wall_s:.0f} s")
    return "\n".join(lines)


MODES.register("distributed", Mode(check=check_distributed_config, serve=serve, describe=describe,
                                   summarise=summarise))
