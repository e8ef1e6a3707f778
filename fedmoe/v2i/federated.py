"""What a base station and the server share when the V2I agent is trained across base stations.

Flower-free helpers of ``mode = "v2i"`` (the loop is :mod:`fedmoe.strategies.v2i_federated`, the
base station's handler :mod:`fedmoe.clients.v2i`): each base station's road, the seeds every party
derives from ``v2i.seed`` alone, the state-dict names of each parameter group of an agent,
and one round of local training.
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import torch

from fedmoe.config import V2IConfig
from fedmoe.federated.protocol import PARTITION_KEY
from fedmoe.v2i.agents import Agent, build_agent
from fedmoe.v2i.training import train_agent

LAST_UPDATES = 5
"""A base station reports the mean rollout energy of its last this many local updates of the round."""

OTHER_GROUP = "other"
"""Group of the state-dict entries no optimiser group holds (buffers); none of the registered agents has any."""

_LOCAL, _ALONE, _EVAL = 1, 2, 3  # seed streams


def road(cfg: V2IConfig, station: int) -> tuple[float, float]:
    """``(speed_scale, snr_db)`` of base station ``station``'s road (``v2i.federated``)."""
    fed = cfg.federated
    if not 0 <= station < len(fed.road_speed_scale):
        raise ValueError(f"base station {station} has no road: v2i.federated.road_speed_scale has "
                         f"{len(fed.road_speed_scale)} roads")
    snr = fed.snr_db[station] if fed.snr_db else cfg.snr_db
    return float(fed.road_speed_scale[station]), float(snr)


def _seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def local_seed(cfg: V2IConfig, server_round: int, station: int) -> int:
    """Seed of base station ``station``'s rollouts in round ``server_round`` (from ``v2i.seed``)."""
    return _seed(cfg.seed, _LOCAL, server_round, station)


def alone_seed(cfg: V2IConfig) -> int:
    """Seed of the rollouts of the agent trained alone on road 0."""
    return _seed(cfg.seed, _ALONE)


def eval_seed(cfg: V2IConfig) -> int:
    """Seed of the evaluation episodes (the same for every policy and road)."""
    return _seed(cfg.seed, _EVAL)


def group_keys(agent: Agent) -> dict[str, list[str]]:
    """State-dict names of each parameter group of :attr:`Agent.groups` (buffers: :data:`OTHER_GROUP`)."""
    name_of = {id(p): n for n, p in agent.named_parameters()}
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for group, params in agent.groups.items():
        out[group] = []
        for p in params:
            name = name_of[id(p)]
            if name in owner:
                raise ValueError(f"parameter {name!r} is in groups {owner[name]!r} and {group!r}")
            owner[name] = group
            out[group].append(name)
    rest = [k for k in agent.state_dict() if k not in owner]
    if rest:
        out[OTHER_GROUP] = rest
    return out


def state_arrays(agent: Agent) -> dict[str, np.ndarray]:
    """The agent's state dict as numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in agent.state_dict().items()}


def load_arrays(agent: Agent, arrays: Mapping[str, np.ndarray]) -> Agent:
    """Load a full state dict given as numpy arrays (missing or unknown names are errors)."""
    agent.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}, strict=True)
    return agent


def local_round(cfg: V2IConfig, arrays: Mapping[str, np.ndarray], server_round: int,
                station: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One round of base station ``station``: ``v2i.federated.local_updates`` updates from ``arrays`` on its road.

    The optimisers start fresh (Adam moments are not carried between rounds). Returns the new
    arrays and the metrics of the reply: ``num-episodes`` (updates × ``episodes_per_update``,
    the aggregation weight), ``energy-j`` (mean rollout energy per slot of the last
    :data:`LAST_UPDATES` updates), ``wall-s``.
    """
    t0 = time.perf_counter()
    speed, snr = road(cfg, station)
    agent = load_arrays(build_agent(cfg), arrays)
    updates = cfg.federated.local_updates
    res = train_agent(cfg, agent=agent, updates=updates, seed=local_seed(cfg, server_round, station),
                      speed_scale=speed, snr_db=snr)
    last = [row["energy_j"] for row in res.history[-LAST_UPDATES:]]
    metrics = {PARTITION_KEY: station, "num-episodes": updates * cfg.agent.episodes_per_update,
               "energy-j": float(np.mean(last)), "speed-scale": speed, "snr-db": snr,
               "wall-s": time.perf_counter() - t0}
    return state_arrays(res.agent), metrics
