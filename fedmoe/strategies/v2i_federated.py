"""Federated training of the V2I scheduling-and-beamforming agent across base stations (``mode = "v2i"``).

[P002] trains one RL-H-MoE agent (LSTM temporal expert for the camera schedule, MLP
spatial expert for the beams, a critic; :mod:`fedmoe.v2i.agents`) at one base station.
Everything in this module is ours: several base stations, each on its own road section
(its own vehicle speeds ``v2i.federated.road_speed_scale[r]`` and radar SNR
``v2i.federated.snr_db[r]``), train one shared agent without sharing their rollouts. This
ServerApp loop

1. discovers the base stations (the ``query`` handler of :mod:`fedmoe.clients.app`; base station
   ``r`` is ``partition-id`` ``r``);
2. initialises the global agent from ``v2i.seed`` (:func:`fedmoe.v2i.agents.build_agent`);
3. for ``v2i.federated.rounds`` rounds sends the global state dict to every base station
   (``train.v2i``, :mod:`fedmoe.clients.v2i`), which runs ``v2i.federated.local_updates`` updates
   of :func:`fedmoe.v2i.training.train_agent` on its road and returns its state dict, and
   averages the replies expert-wise (:class:`V2IFederated`, :func:`aggregate_groups`);
4. evaluates on every road, on one evaluation seed shared by all policies: the federated
   agent, the same agent trained alone on road 0 for as many updates as one base station
   performed in all rounds (``rounds × local_updates``; ``v2i.federated.alone_updates``
   changes it; on the server, Adam state kept throughout), vision-only (a camera frame
   every slot: ``K · e_vis`` J/slot), and the oracle (each vehicle's exact optimal cycle
   for its own drift rate, which attains the per-episode lower bound;
   :func:`fedmoe.v2i.training.fixed_policies`);
5. writes ``metrics.json``, ``config.json`` and ``energy_per_road.png`` to the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmoe.config import FedMoEConfig
from fedmoe.federated.protocol import ENERGY_KEY, ReplyError, read_number
from fedmoe.federated.world import config_json
from fedmoe.flower import to_record
from fedmoe.strategies.validation import read_arrays, short_reason
from fedmoe.v2i.agents import Agent, build_agent
from fedmoe.v2i.federated import alone_seed, eval_seed, group_keys, load_arrays, road, state_arrays
from fedmoe.v2i.training import agent_policy, evaluate, fixed_policies, train_agent

log = logging.getLogger(__name__)

TRAIN_V2I = f"{MessageType.TRAIN}.v2i"
POLICIES = ("federated", "alone", "vision_only", "oracle")
"""The policies evaluated on every road, in the order of the report."""
REPORTED = ("energy_j", "reliable_slots", "gap_to_bound", "beam_gain", "lower_bound_j")
"""Keys of :func:`fedmoe.v2i.training.evaluate` kept in the report."""


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (then restore the previous number).

    The server trains the alone agent and evaluates with as many threads as a base station
    has CPUs (``federated.client_cpus``): the agent's operations are small, and on a busy
    machine more threads than free cores slow them down many times over (2 training updates
    at the defaults: 2.4 s with 1 thread, 31 s with 2, on 2 cores with one taken by another process).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def aggregate_groups(global_arrays: Mapping[str, np.ndarray],
                     replies: Sequence[tuple[Mapping[str, np.ndarray], float]],
                     groups: Mapping[str, Sequence[str]]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    r"""Episode-weighted average of every parameter group over the replies that carry it.

    .. math::
        \bar\theta_g = \frac{\sum_{r \in R_g} n_r \, \theta_{r,g}}{\sum_{r \in R_g} n_r}

    where :math:`R_g` are the replies holding every state-dict entry of group :math:`g` and
    :math:`n_r` is reply :math:`r`'s weight (its episodes). A group no reply carries keeps its
    global value.

    Parameters
    ----------
    global_arrays : Mapping[str, np.ndarray]
        The global state dict of the round (what every base station received).
    replies : Sequence[tuple[Mapping[str, np.ndarray], float]]
        ``(state dict, weight)`` of every base station that replied; weights must be positive.
    groups : Mapping[str, Sequence[str]]
        State-dict names of each group (:func:`fedmoe.v2i.federated.group_keys`).

    Returns
    -------
    tuple[dict[str, np.ndarray], dict[str, int]]
        The new global state dict (each entry in its global dtype) and, per group, how many
        replies were averaged into it.
    """
    for _, w in replies:
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"aggregation weights must be positive, got {w!r}")
    out = {k: np.array(v, copy=True) for k, v in global_arrays.items()}
    used: dict[str, int] = {}
    for group, keys in groups.items():
        holding = [(arrays, w) for arrays, w in replies if all(k in arrays for k in keys)]
        used[group] = len(holding)
        if not holding:
            continue
        total = sum(w for _, w in holding)
        for k in keys:
            acc = sum(w * np.asarray(arrays[k], dtype=np.float64) for arrays, w in holding)
            out[k] = (acc / total).astype(np.asarray(global_arrays[k]).dtype)
    return out, used


def group_motion(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
                 replies: Sequence[tuple[Mapping[str, np.ndarray], float]],
                 groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    r"""Per group, how far the round moved it and how far the base stations disagreed.

    ``step`` is :math:`\|\bar\theta_g - \theta_g\|_2` (new against old global);
    ``spread`` the episode-weighted RMS of :math:`\|\theta_{r,g} - \bar\theta_g\|_2` over the
    replies that carry the group (0 without replies).
    """
    out = {}
    for group, keys in groups.items():
        step = math.sqrt(sum(float(np.sum((np.asarray(after[k], np.float64) - before[k]) ** 2)) for k in keys))
        holding = [(a, w) for a, w in replies if all(k in a for k in keys)]
        total = sum(w for _, w in holding)
        sq = sum(w * sum(float(np.sum((np.asarray(a[k], np.float64) - after[k]) ** 2)) for k in keys)
                 for a, w in holding)
        out[group] = {"step": step, "spread": math.sqrt(sq / total) if total else 0.0}
    return out


@dataclass
class V2IRoundRecord:
    """One round of federated V2I training."""

    round: int
    completed: int
    failed: int
    num_episodes: int
    train_energy_j: float | None  # episode-weighted mean of the replies' ``energy-j`` (None without replies)
    wall_s: float
    stations: list[int] = field(default_factory=list)
    station_energy_j: dict[str, float] = field(default_factory=dict)
    groups_averaged: dict[str, int] = field(default_factory=dict)
    group_motion: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class V2IRun:
    """What :func:`serve_v2i` produced."""

    metrics: dict[str, Any]
    wall_s: float
    agent: Agent | None = field(repr=False, default=None)


class V2IFederated:
    r"""Federated training of one V2I agent across base stations, averaged expert-wise.

    The agent's parameters fall into the groups of :attr:`fedmoe.v2i.agents.Agent.groups`:
    for ``hetero_moe`` the temporal expert (LSTM and scheduling head), the critic and the
    spatial expert (beam MLP); a monolithic agent has one group ``all``. After round
    :math:`t` every group is the episode-weighted average over the base stations
    :math:`R_g^t` that replied with it:

    .. math::
        \theta_g^{t+1} = \frac{\sum_{r \in R_g^t} n_r \, \theta_{r,g}^{t}}{\sum_{r \in R_g^t} n_r},
        \qquad n_r = U \cdot B

    where :math:`\theta_{r,g}^{t}` is group :math:`g` after base station :math:`r`'s
    :math:`U` = ``v2i.federated.local_updates`` local updates of :math:`B` =
    ``v2i.agent.episodes_per_update`` episodes each, started from :math:`\theta^t`. The
    groups never mix, so the spatial expert is averaged only with spatial experts, as each
    trains on its own loss ([P002]'s gradient isolation). While every base station runs
    the same number of episodes the weights are equal and each group's average is
    FedAvg's; the weights matter once base stations report different episode counts.

    A base station whose reply is an error, fails :func:`fedmoe.strategies.validation.read_arrays`
    against the global state dict (unknown names, other dtypes or shapes, a blob that is not the
    ``.npy`` of its metadata, NaN/Inf), has no finite positive ``num-episodes`` or finite
    non-negative ``energy-j``, or does not reply within ``split.message_timeout_s``, is
    logged and left out of that round; a round with no replies keeps the global agent.

    Every base station **must** honour the message's ``config`` and ``arrays``
    (:mod:`fedmoe.clients.v2i` does):

    * ``"scenario"`` — the fedmoe config as JSON; the base station trains
      ``v2i.agent.policy`` with the ``v2i.agent`` settings on road
      ``v2i.federated.road_speed_scale[partition-id]`` at radar SNR
      ``v2i.federated.snr_db[partition-id]`` (or ``v2i.snr_db``);
    * ``"phase"`` — ``"train"``;
    * ``"round"`` — the server round; the rollouts are seeded from ``(v2i.seed, round, partition-id)``;
    * ``arrays`` — the full state dict to start from; the reply's ``arrays`` hold the full
      state dict after training and its ``metrics["num-episodes"]`` the weight :math:`n_r`.

    Parameters
    ----------
    cfg : FedMoEConfig
        The configuration; ``cfg.mode`` should be ``"v2i"`` (it guarantees one base station
        per road). ``cfg.v2i.federated.rounds`` rounds run.
    on_round : Callable[[V2IRoundRecord], None] | None (default: None)
        Called after every round (progress bars).
    """

    def __init__(self, cfg: FedMoEConfig, on_round: Callable[[V2IRoundRecord], None] | None = None) -> None:
        roads = len(cfg.v2i.federated.road_speed_scale)
        if cfg.partition.num_devices != roads:
            raise ValueError(f"one base station per road: v2i.federated.road_speed_scale has {roads} roads, "
                             f"partition.num_devices={cfg.partition.num_devices}")
        self.cfg = cfg
        self.v2i = cfg.v2i
        self.scenario_json = config_json(cfg)
        self.on_round = on_round
        self.agent = build_agent(self.v2i, seed=self.v2i.seed)
        self.groups = group_keys(self.agent)
        self.arrays = state_arrays(self.agent)
        self.node_of: dict[int, int] = {}
        self.history: list[V2IRoundRecord] = []

    # ------------------------------------------------------------------ rounds

    def _collect(self, grid: Grid, server_round: int,
                 failures: list[str]) -> dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """Send the global agent to every base station; the usable replies by station."""
        timeout = self.cfg.split.message_timeout_s
        record = to_record(self.arrays)
        msgs = []
        for station, node in sorted(self.node_of.items()):
            config = ConfigRecord({"scenario": self.scenario_json, "phase": "train", "round": server_round})
            msgs.append(Message(content=RecordDict({"config": config, "arrays": record}),
                                message_type=TRAIN_V2I, dst_node_id=node))
        station_of = {n: s for s, n in self.node_of.items()}
        out: dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
        answered = set()
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            station = station_of.get(reply.metadata.src_node_id)
            if station is None:
                continue
            answered.add(station)
            problem = None
            if reply.has_error():
                problem = short_reason(reply.error.reason)
            elif "arrays" not in reply.content.array_records or "metrics" not in reply.content.metric_records:
                problem = "reply lacks 'arrays' or 'metrics'"
            else:
                metrics = dict(reply.content["metrics"])
                # names, metadata, .npy headers and lengths before anything is decoded; then finite values
                arrays, problem = read_arrays(reply.content["arrays"], self.arrays)
                if problem is None:
                    try:
                        weight = read_number(metrics, "num-episodes")
                        read_number(metrics, ENERGY_KEY, nonnegative=True)
                        if weight <= 0:
                            problem = f"num-episodes {metrics.get('num-episodes')!r} is not positive"
                    except ReplyError as err:
                        problem = str(err)
                if problem is None:
                    out[station] = (arrays, metrics)
            if problem is not None:
                failures.append(f"base station {station}: {problem}")
                log.warning("v2i round %d: base station %d failed, left out: %s", server_round, station, problem)
        for station in sorted(set(self.node_of) - answered):
            failures.append(f"base station {station}: no reply within {timeout:g} s")
            log.warning("v2i round %d: base station %d did not reply within %g s, left out", server_round, station,
                        timeout)
        return out

    def train_round(self, grid: Grid, server_round: int) -> V2IRoundRecord:
        """One round: local training at every base station, expert-wise average (class docstring)."""
        t0 = time.perf_counter()
        failures: list[str] = []
        replies = self._collect(grid, server_round, failures)
        weighted = [(arrays, float(m["num-episodes"])) for arrays, m in replies.values()]
        before = self.arrays
        if weighted:
            self.arrays, used = aggregate_groups(before, weighted, self.groups)
        else:
            used = {g: 0 for g in self.groups}
            log.warning("v2i round %d: no base station replied; the global agent is kept", server_round)
        episodes = int(sum(w for _, w in weighted))
        energy = (sum(float(m["num-episodes"]) * float(m["energy-j"]) for _, m in replies.values()) / episodes
                  if episodes else None)
        record = V2IRoundRecord(
            round=server_round, completed=len(replies), failed=len(self.node_of) - len(replies), num_episodes=episodes,
            train_energy_j=energy, wall_s=time.perf_counter() - t0, stations=sorted(replies),
            station_energy_j={str(s): float(m["energy-j"]) for s, (_, m) in sorted(replies.items())},
            groups_averaged=used, group_motion=group_motion(before, self.arrays, weighted, self.groups),
            failures=failures)
        self.history.append(record)
        log.info("v2i round %d: %d/%d base stations, rollout energy %s J/slot, %.1f s", server_round,
                 record.completed, len(self.node_of), "n/a" if energy is None else f"{energy:.2f}", record.wall_s)
        return record

    # ------------------------------------------------------------------ evaluation

    def alone_updates(self) -> int:
        """``v2i.federated.alone_updates``, by default ``rounds × local_updates`` (one base station's share)."""
        fed = self.v2i.federated
        return fed.rounds * fed.local_updates if fed.alone_updates is None else fed.alone_updates

    def train_alone(self) -> tuple[Agent, float]:
        """The agent from the same initialisation trained on road 0 only for :meth:`alone_updates` updates."""
        speed, snr = road(self.v2i, 0)
        agent = build_agent(self.v2i, seed=self.v2i.seed)
        res = train_agent(self.v2i, agent=agent, updates=self.alone_updates(), seed=alone_seed(self.v2i),
                          speed_scale=speed, snr_db=snr)
        return res.agent, res.wall_s

    def evaluate_roads(self, agents: Mapping[str, Agent]) -> list[dict[str, Any]]:
        """Every road: each learned agent of ``agents`` and the fixed vision-only and oracle policies."""
        fixed = fixed_policies(self.v2i)
        makers = {name: (lambda env, a=agent: agent_policy(a)) for name, agent in agents.items()}
        makers.update({name: fixed[name] for name in ("vision_only", "oracle")})
        seed = eval_seed(self.v2i)
        rows = []
        for r in range(len(self.v2i.federated.road_speed_scale)):
            speed, snr = road(self.v2i, r)
            row: dict[str, Any] = {"road": r, "speed_scale": speed, "snr_db": snr}
            for name, make in makers.items():
                res = evaluate(self.v2i, make, seed, speed_scale=speed, snr_db=snr)
                row[name] = {k: res[k] for k in REPORTED}
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ run

    def run(self, grid: Grid) -> dict[str, Any]:
        """Discover the base stations, run every round, evaluate; the metrics document."""
        from fedmoe.strategies.discovery import discover_devices

        t0 = time.perf_counter()
        fed, a = self.v2i.federated, self.v2i.agent
        devices = discover_devices(grid, self.cfg.partition.num_devices, self.scenario_json)
        self.node_of = {info.device_id: node for node, info in devices.items()}
        for r in range(1, fed.rounds + 1):
            record = self.train_round(grid, r)
            if self.on_round is not None:
                self.on_round(record)
        train_s = time.perf_counter() - t0
        load_arrays(self.agent, self.arrays)
        with torch_threads(self.cfg.federated.client_cpus):
            alone, alone_s = self.train_alone()
            t1 = time.perf_counter()
            roads = self.evaluate_roads({"federated": self.agent, "alone": alone})
            eval_s = time.perf_counter() - t1
        average = {p: {k: float(np.mean([row[p][k] for row in roads])) for k in REPORTED} for p in POLICIES}
        return {
            "mode": "v2i", "policy": a.policy, "base_stations": len(self.node_of), "rounds_run": fed.rounds,
            "local_updates": fed.local_updates, "episodes_per_update": a.episodes_per_update,
            "alone_updates": self.alone_updates(), "eval_seed": eval_seed(self.v2i),
            "eval_episodes": a.eval_episodes, "eval_slots": a.eval_slots, "warmup_slots": a.warmup_slots,
            "groups": {g: len(k) for g, k in self.groups.items()},
            "rounds": [asdict(rec) for rec in self.history], "roads": roads, "average": average,
            "train_wall_s": train_s, "alone_train_s": alone_s, "eval_wall_s": eval_s,
            "wall_s": time.perf_counter() - t0,
        }


def plot_energy_per_road(doc: dict[str, Any], path: Path) -> None:
    """Energy per slot of every policy on every road, with each road's lower bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roads = doc["roads"]
    x = np.arange(len(roads))
    width = 0.8 / len(POLICIES)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, p in enumerate(POLICIES):
        ax.bar(x + (i - (len(POLICIES) - 1) / 2) * width, [row[p]["energy_j"] for row in roads], width,
               label=p.replace("_", "-"))
    for xi, row in zip(x, roads):
        ax.hlines(row["oracle"]["lower_bound_j"], xi - 0.45, xi + 0.45, colors="k", linestyles="--",
                  label="lower bound" if xi == 0 else None)
    ax.set_xticks(x, [f"road {row['road']}\n×{row['speed_scale']:g} speed, {row['snr_db']:g} dB" for row in roads])
    ax.set(ylabel="energy, J/slot",
           title=f"{doc['policy']}: {doc['base_stations']} base stations, {doc['rounds_run']} rounds × "
                 f"{doc['local_updates']} updates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def serve_v2i(grid: Grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
              scenario_file: Path | None = None) -> V2IRun:
    """Run :class:`V2IFederated` on ``grid``.

    Parameters
    ----------
    grid : Grid
        The Flower grid; ``partition.num_devices`` base stations must connect.
    cfg : FedMoEConfig
        The configuration (``mode = "v2i"``).
    run_dir : Path | None
        Where ``metrics.json``, ``config.json`` and ``energy_per_road.png`` go (None: nowhere).
    on_round : Callable | None (default: None)
        Called with every :class:`V2IRoundRecord`.
    scenario_file : Path | None (default: None)
        The scenario file the run came from (unused; kept for the signature of
        :func:`fedmoe.strategies.server_app.serve_any`).

    Returns
    -------
    V2IRun
        The metrics document, the wall time and the federated agent.
    """
    t0 = time.perf_counter()
    loop = V2IFederated(cfg, on_round)
    doc = loop.run(grid)
    if run_dir is not None:
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
        (out / "metrics.json").write_text(json.dumps(doc, indent=2))
        plot_energy_per_road(doc, out / "energy_per_road.png")
    return V2IRun(doc, time.perf_counter() - t0, loop.agent)
