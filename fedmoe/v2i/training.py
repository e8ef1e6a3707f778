"""Training and evaluation of V2I policies ([P002] Algorithm 1, eq. 11–13).

One update (Algorithm 1, one "episode" of ours being ``B`` parallel episodes):

1. **Rollout** (lines 4–10): ``episode_slots`` slots of ``B`` episodes; the scheduling action is
   sampled from the Bernoulli policy, the reward and the channels are recorded.
2. **Advantage** (line 12): the energy of eq. 3–5 is a sum over vehicles, so the reward of
   eq. 11 is split per vehicle, ``r_k = −(π_k e_vis + P_k E_rec) − (λ/K) max(0, L_BMP − Γ)``
   (summing over ``k`` gives eq. 11), and vehicle ``k``'s log-probability is weighted by its own
   advantage (generalised advantage estimation with the critic's values). This is a variance
   reduction of ours; the penalty term is shared equally because it couples the vehicles.
3. **Temporal loss** (eq. 12, line 13): the score function with the ratio clipped as in PPO,
   ``−Σ min(r A, clip(r, 1 ± ε) A)`` with ``r = P_θ(π|s)/P_θold(π|s)`` (at ``r = 1`` its
   gradient is eq. 12), minus an entropy bonus; ``ppo_epochs`` passes over the batch. The
   critic regresses the returns.
4. **Spatial loss** (eq. 13, line 14): ``L_spat = −λ mean |h_kᴴ v_k|² / ||h_k||²`` on the true
   channels ``h = ĥ + Δh`` (eq. 8). Normalising by ``||h_k||²`` (ours) keeps a near vehicle
   from outweighing a far one by its path loss.
5. **Updates** (lines 16–17): each parameter group of :attr:`Agent.groups` has its own Adam
   optimiser and receives only the gradient of its own loss. For the monolithic baselines,
   which have a single group, the losses are summed and back-propagated together.

Evaluation plays the deterministic policy (``p_n > 1/2``) on a fixed seed, so every policy
meets the same vehicles and noise (:class:`fedmoe.v2i.env.V2IEnv`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fedmoe.config import V2IConfig
from fedmoe.v2i.agents import Agent, build_agent
from fedmoe.v2i.channel import beamformer, normalised_gain, sinr_db, steering_phases
from fedmoe.v2i.env import V2IEnv
from fedmoe.v2i.oracle import best_periods, cycle_costs

SPATIAL_LR = "spatial"


@dataclass
class Batch:
    """One rollout of ``B`` episodes × ``N`` slots (tensors)."""

    obs: torch.Tensor  # (B, N, K, 3)
    actions: torch.Tensor  # (B, N, K) float 0/1
    logp: torch.Tensor  # (B, N, K) log-probability of each vehicle's action under the rollout policy
    rewards: torch.Tensor  # (B, N, K) per-vehicle reward (module docstring, step 2)
    h: torch.Tensor  # (B, N, K, M) complex true channel
    energy_j: float  # mean energy per slot of the rollout


def vehicle_rewards(step, cfg: V2IConfig) -> np.ndarray:
    """``r_k`` of the module docstring (step 2); sums over ``k`` to eq. 11."""
    excess = np.maximum(0.0, step.cost.l_bmp - cfg.gamma)
    return -step.vehicle_energy_j - (cfg.penalty / cfg.num_vehicles) * excess[:, None]


@torch.no_grad()
def collect(agent: Agent, env: V2IEnv, slots: int, generator: torch.Generator) -> Batch:
    """Roll the stochastic policy out for ``slots`` slots (module docstring, step 1)."""
    obs, actions, logp, rewards, channels, energy = [], [], [], [], [], []
    state = None
    for _ in range(slots):
        o = torch.from_numpy(env.observe())
        logits, state = agent.act(o, state)
        prob = torch.sigmoid(logits)
        a = torch.bernoulli(prob, generator=generator)
        step = env.step(a.numpy().astype(bool))
        obs.append(o)
        actions.append(a)
        logp.append(-torch.nn.functional.binary_cross_entropy_with_logits(logits, a, reduction="none"))
        rewards.append(torch.from_numpy(vehicle_rewards(step, env.cfg)).float())
        channels.append(torch.from_numpy(step.h.astype(np.complex64)))
        energy.append(step.cost.energy_j.mean())
    stack = lambda xs: torch.stack(xs, dim=1)  # noqa: E731
    return Batch(stack(obs), stack(actions), stack(logp), stack(rewards), stack(channels), float(np.mean(energy)))


def advantages(rewards: torch.Tensor, values: torch.Tensor, discount: float,
               lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns ``(B, N, K)``; the last slot bootstraps from its own value."""
    n = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    nxt = values[:, -1]
    for t in reversed(range(n)):
        delta = rewards[:, t] + discount * nxt - values[:, t]
        running = delta + discount * lam * running
        adv[:, t] = running
        nxt = values[:, t]
    return adv, adv + values


def temporal_loss(agent: Agent, batch: Batch, adv: torch.Tensor, clip: float, entropy: float) -> torch.Tensor:
    """Clipped score-function loss of the Bernoulli policy (eq. 12; module docstring, step 3)."""
    logits, _ = agent.schedule_logits(batch.obs)
    logp = -torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.actions, reduction="none")
    ratio = torch.exp(logp - batch.logp)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    p = torch.sigmoid(logits)
    ent = -(p * torch.nn.functional.logsigmoid(logits) + (1 - p) * torch.nn.functional.logsigmoid(-logits))
    return -(surrogate.mean() + entropy * ent.mean())


def spatial_loss(agent: Agent, obs: torch.Tensor, h: torch.Tensor, weight: float) -> torch.Tensor:
    """``−λ mean |hᴴ v|² / ||h||²`` with ``v = e^{jΦ}/√M`` (eq. 10, 13)."""
    v = beamformer(agent.phases(obs))
    return -weight * normalised_gain(h, v).mean()


def make_optimisers(agent: Agent, cfg: V2IConfig) -> dict[str, torch.optim.Optimizer]:
    a = cfg.agent
    return {name: torch.optim.Adam(params, lr=a.spatial_lr if name == SPATIAL_LR else a.lr)
            for name, params in agent.groups.items()}


def update(agent: Agent, optimisers: dict[str, torch.optim.Optimizer], batch: Batch,
           cfg: V2IConfig) -> dict[str, float]:
    """Steps 2–5 of the module docstring on one batch."""
    a = cfg.agent
    with torch.no_grad():
        adv, returns = advantages(batch.rewards, agent.values(batch.obs), a.discount, a.gae)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    scale = returns.abs().mean().clamp_min(1.0)  # value targets in units of the typical return
    isolated = len(optimisers) > 1
    out: dict[str, float] = {}
    for _ in range(a.ppo_epochs):
        for opt in optimisers.values():
            opt.zero_grad(set_to_none=True)
        l_temp = temporal_loss(agent, batch, adv, a.clip, a.entropy)
        l_value = ((agent.values(batch.obs) - returns) / scale).pow(2).mean()
        l_spat = spatial_loss(agent, batch.obs, batch.h, a.spatial_weight)
        if isolated:  # each loss reaches only its own group (Algorithm 1, lines 16-17)
            for loss in (l_temp, l_value, l_spat):
                loss.backward()
        else:
            (l_temp + 0.5 * l_value + l_spat).backward()
        for opt in optimisers.values():
            opt.step()
        out = {"temporal_loss": l_temp.item(), "value_loss": l_value.item(), "spatial_loss": l_spat.item()}
    return out


@dataclass
class TrainResult:
    agent: Agent
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def train_agent(cfg: V2IConfig, agent: Agent | None = None, updates: int | None = None, seed: int | None = None,
                speed_scale: float = 1.0, snr_db: float | None = None,
                optimisers: dict[str, torch.optim.Optimizer] | None = None,
                progress: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``agent`` (default: a fresh ``cfg.agent.policy``) for ``updates`` updates on one road.

    Each update rolls out fresh episodes seeded from ``seed`` and the update's index, so two
    calls with the same arguments give the same parameters.
    """
    import time

    t0 = time.perf_counter()
    a = cfg.agent
    seed = cfg.seed if seed is None else seed
    agent = build_agent(cfg, seed=seed) if agent is None else agent
    optimisers = make_optimisers(agent, cfg) if optimisers is None else optimisers
    gen = torch.Generator().manual_seed(seed)
    history = []
    for i in range(a.updates if updates is None else updates):
        env = V2IEnv(cfg, a.episodes_per_update, seed=seed * 1_000_003 + i, speed_scale=speed_scale, snr_db=snr_db)
        agent.train()
        batch = collect(agent, env, a.episode_slots, gen)
        row = {"update": i, "energy_j": batch.energy_j, **update(agent, optimisers, batch, cfg)}
        history.append(row)
        if progress is not None:
            progress(i, row)
    return TrainResult(agent, history, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ evaluation

Decide = Callable[[np.ndarray, V2IEnv, Any], tuple[np.ndarray, np.ndarray, Any]]
"""``decide(obs (B, K, 3), env, state) -> (schedule (B, K) bool, phases (B, K, M), state)``."""


def agent_policy(agent: Agent) -> Decide:
    """The deterministic policy of a learned agent (``p > 1/2``) with its spatial expert's beams."""
    agent.eval()

    @torch.no_grad()
    def decide(obs, env, state):
        o = torch.from_numpy(obs)
        logits, state = agent.act(o, state)
        return (logits > 0).numpy(), agent.phases(o).numpy(), state

    return decide


def schedule_policy(rule: Callable[[V2IEnv], np.ndarray]) -> Decide:
    """A fixed camera rule with the beam steered to the radar's angle (the learning-free reference beam)."""

    def decide(obs, env, state):
        return rule(env), steering_phases(env.cfg, obs[..., 0]), state

    return decide


def threshold_rule(periods: np.ndarray) -> Callable[[V2IEnv], np.ndarray]:
    """A frame when the AoI would exceed ``T_proc + T_k − 1``: the cycle of period ``T_k`` (``periods`` (K,) or
    (B, K))."""
    return lambda env: env.aoi + 1 > env.cfg.t_proc + np.asarray(periods) - 1


def fixed_policies(cfg: V2IConfig) -> dict[str, Callable[[V2IEnv], Decide]]:
    """The learning-free policies of the benchmark, built per environment (some read its β)."""
    k = cfg.num_vehicles
    common = int(cycle_costs(cfg).sum(0).argmin()) + 1  # best period shared by all vehicles, nominal β
    return {
        "vision_only": lambda env: schedule_policy(lambda e: np.ones_like(e.aoi, dtype=bool)),
        "radar_only": lambda env: schedule_policy(lambda e: np.zeros_like(e.aoi, dtype=bool)),
        "periodic": lambda env: schedule_policy(
            lambda e: np.broadcast_to((e.slot % common) == (np.arange(k) % common), e.aoi.shape)),
        "aoi_threshold": lambda env: schedule_policy(lambda e: e.aoi + 1 > cfg.a_max),
        "threshold_nominal": lambda env: schedule_policy(threshold_rule(best_periods(cfg)[0])),
        "oracle": lambda env: schedule_policy(threshold_rule(best_periods(cfg, env.beta)[0])),
    }


def evaluate(cfg: V2IConfig, make_decide: Callable[[V2IEnv], Decide], seed: int, num_episodes: int | None = None,
             slots: int | None = None, speed_scale: float = 1.0, snr_db: float | None = None) -> dict[str, float]:
    """Time-averaged energy, violations, beam quality and gap to the exact bound on seed ``seed``."""
    a = cfg.agent
    env = V2IEnv(cfg, num_episodes or a.eval_episodes, seed, speed_scale, snr_db)
    decide = make_decide(env)
    slots = slots or a.eval_slots
    warm = min(a.warmup_slots, slots - 1)
    rows: dict[str, list] = {k: [] for k in ("energy", "compute", "sweep", "l_bmp", "bmp", "aoi", "gain", "steer",
                                              "sinr", "frames")}
    state = None
    for n in range(slots):
        obs = env.observe()
        schedule, phases, state = decide(obs, env, state)
        step = env.step(schedule)
        if n < warm:
            continue
        v = beamformer(torch.from_numpy(np.asarray(phases, dtype=np.float64))).numpy()
        h = torch.from_numpy(step.h)
        gain = normalised_gain(h, torch.from_numpy(v)).numpy()
        steer = normalised_gain(
            h, beamformer(torch.from_numpy(steering_phases(cfg, obs[..., 0].astype(np.float64))))).numpy()
        c = step.cost
        for key, val in (("energy", c.energy_j), ("compute", c.compute_j), ("sweep", c.sweep_j), ("l_bmp", c.l_bmp),
                         ("bmp", c.bmp_violation), ("aoi", c.aoi_violation), ("gain", gain.mean(-1)),
                         ("steer", steer.mean(-1)), ("sinr", sinr_db(cfg, step.h, v).mean(-1)),
                         ("frames", np.asarray(schedule).mean(-1))):
            rows[key].append(np.asarray(val, dtype=np.float64))
    m = {k: np.stack(v, axis=1) for k, v in rows.items()}  # (B, slots)
    bound = env.lower_bound_j()
    energy = m["energy"].mean(1)
    return {
        "energy_j": float(energy.mean()), "energy_std_j": float(energy.std()),
        "compute_j": float(m["compute"].mean()), "sweep_j": float(m["sweep"].mean()),
        "mean_l_bmp": float(m["l_bmp"].mean()), "reliable_slots": float(1 - m["bmp"].mean()),
        "aoi_violation_slots": float(m["aoi"].mean()), "frames_per_vehicle_slot": float(m["frames"].mean()),
        "beam_gain": float(m["gain"].mean()), "steering_gain": float(m["steer"].mean()),
        "sinr_db": float(m["sinr"].mean()),
        "lower_bound_j": float(bound.mean()), "gap_to_bound": float(energy.mean() / bound.mean() - 1),
        "episodes": env.num_episodes, "slots": slots - warm,
    }

