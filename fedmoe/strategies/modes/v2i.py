"""``mode = "v2i"``: V2I scheduling agents [P002] trained across base stations, one per
road, averaged per expert (:mod:`fedmoe.strategies.v2i_federated`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fedmoe.config import FedMoEConfig
from fedmoe.strategies.modes.base import MODES, Mode


def check_v2i_config(cfg: FedMoEConfig) -> None:
    """Fail before Ray starts on a V2I config whose agent is not registered (one base station per
    road is a config error already)."""
    from fedmoe.v2i.agents import AGENTS

    AGENTS.check(cfg.v2i.agent.policy, "v2i.agent.policy")


def serve(grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
          scenario_file: Path | None = None, resume: bool = False, client_state_dir: Path | None = None):
    """:func:`fedmoe.strategies.v2i_federated.serve_v2i` (no resume, no device state folder)."""
    from fedmoe.strategies.v2i_federated import serve_v2i

    return serve_v2i(grid, cfg, run_dir, on_round, scenario_file)


def describe(cfg: FedMoEConfig) -> str:
    v = cfg.v2i.federated
    return (f"V2I agent {cfg.v2i.agent.policy} [P002] of scenario {cfg.name!r} across "
            f"{len(v.road_speed_scale)} base stations "
            f"(road speed x{', x'.join(f'{s:g}' for s in v.road_speed_scale)}), "
            f"{v.rounds} rounds of {v.local_updates} local updates")


def summary_lines(doc: dict) -> list[str]:
    """Energy per slot (and gap to the bound) of every policy on every road, and the average."""
    from fedmoe.strategies.v2i_federated import POLICIES

    label = {p: p.replace("_", "-") for p in POLICIES}

    def line(name: str, row: dict) -> str:
        cells = ", ".join(f"{label[p]} {row[p]['energy_j']:.2f} ({row[p]['gap_to_bound']:+.0%}; "
                          f"{row[p]['reliable_slots']:.0%})" for p in POLICIES)
        return f"  {name:<24} {cells}"

    lines = ["energy J/slot (gap to the bound; reliable slots):"]
    lines += [line(f"road {row['road']} (x{row['speed_scale']:g}, {row['snr_db']:g} dB)", row) for row in doc["roads"]]
    lines.append(line("average over roads", doc["average"]))
    return lines


def summarise(run: Any, out: Path) -> str:
    return "\n".join(summary_lines(run.metrics)
                     + [f"wrote {out}/metrics.json, config.json, energy_per_road.png; wall {run.wall_s:.0f} s"])


def rounds(cfg: FedMoEConfig) -> int:
    """The rounds of a run: ``v2i.federated.rounds``."""
    return cfg.v2i.federated.rounds


def progress(record: Any) -> dict[str, Any]:
    """The progress bar's fields after a round: base stations that replied, training energy."""
    energy = "n/a" if record.train_energy_j is None else f"{record.train_energy_j:.2f}J"
    return {"stations": record.completed, "energy": energy}


MODES.register("v2i", Mode(check=check_v2i_config, serve=serve, describe=describe, summarise=summarise,
                           rounds=rounds, progress=progress))
