"""Learned V2I policies: [P002]'s heterogeneous MoE (RL-H-MoE) and its learned baselines.

Every agent maps the state ``s_n`` (``K × 3``: radar angle, radar range, AoI; flattened) to

* scheduling logits ``(…, K)``: independent Bernoulli probabilities ``p_n = σ(logits)`` of
  processing each vehicle's camera frame (9f);
* beam phases ``Φ_n`` ``(…, K, M)``, turned into ``v = e^{jΦ}/√M`` (eq. 10,
  :func:`fedmoe.v2i.channel.beamformer`), so the constant modulus (9b) holds for any output.
  The phase head (:func:`phase_map`, ours) outputs a direction correction ``c_k`` and
  per-element offsets ``δ_{k,m}``: ``Φ_{k,m} = π m (sin θ̂_k + 2 c_k / M) + δ_{k,m}`` (``c_k`` in
  units of the main lobe's half-width ``2/M`` in ``sin θ``). A plain linear
  map to ``Φ`` ([P002]'s wording) must grow weights of order ``π M`` to steer a beam, and
  in our runs reached a normalised gain of 0.26 where steering to the radar angle gives 0.83;
  anchoring the phase slope at the radar angle lets the expert learn only the correction;
* per-vehicle state values for the advantage (the critic).

Registered in :data:`AGENTS` (``v2i.agent.policy``):

``hetero_moe``
    [P002]'s RL-H-MoE (Section III, Fig. 2): a temporal expert (LSTM over the state
    sequence → linear → sigmoid), a spatial expert (MLP → phases) and a critic (its own
    LSTM). The three share no parameter, and :attr:`Agent.groups` gives each its own
    optimiser, so the temporal loss (eq. 12) and the spatial loss (eq. 13) reach only their
    own expert ("strict gradient isolation").
``hetero_moe_no_aoi``
    the ablation: the same agent with the AoI column of the state set to zero.
``ppo_mlp``
    "Standard PPO": one MLP trunk on the current state with a scheduling head, a phase head
    and a value head, trained on the sum of the losses (the trunk receives every gradient).
``homogeneous_moe``
    two structurally identical MLP experts, each with the three heads, mixed by a softmax gate
    on the state; trained on the summed losses like ``ppo_mlp``.

Register your own::

    from fedmoe.v2i.agents import AGENTS, Agent

    @AGENTS.register("mine")
    def mine(cfg):            # cfg: V2IConfig
        return MyAgent(cfg)   # an Agent subclass
"""

from __future__ import annotations

import torch
from torch import nn

from fedmoe.config import V2IConfig
from fedmoe.registry import Registry
from fedmoe.v2i.env import NUM_FEATURES

AGENTS: Registry = Registry("V2I agent")

AOI_COLUMN = 2


def phase_map(raw: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """``Φ_{k,m} = π m (sin θ̂_k + 2 c_k / M) + δ_{k,m}`` from ``raw`` ``(…, K, 1 + M)`` = ``(c_k, δ_k)``
    (module docstring)."""
    m = raw.shape[-1] - 1
    u = torch.sin(obs[..., 0]) + raw[..., 0] * (2.0 / m)
    return torch.pi * u[..., None] * torch.arange(m, dtype=raw.dtype) + raw[..., 1:]


def _zero(layer: nn.Linear) -> nn.Linear:
    """Start a phase head at zero: the first beams point at the radar angle (:func:`phase_map`)."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(inputs: int, hidden: int, outputs: int, zero_last: bool = False) -> nn.Sequential:
    last = nn.Linear(hidden, outputs)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         _zero(last) if zero_last else last)


class Agent(nn.Module):
    """Base class: ``(B, N, K, 3)`` state sequences in, logits/phases/values out (module docstring).

    ``recurrent`` agents carry a state between slots (:meth:`act`); ``groups`` maps an
    optimiser name to its parameters. With one group every loss updates every parameter.
    """

    recurrent = False

    def __init__(self, cfg: V2IConfig, mask_aoi: bool = False) -> None:
        super().__init__()
        self.k, self.m = cfg.num_vehicles, cfg.num_antennas
        self.inputs = self.k * NUM_FEATURES
        self.mask_aoi = mask_aoi

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        if self.mask_aoi:
            obs = obs.clone()
            obs[..., AOI_COLUMN] = 0.0
        return obs.reshape(*obs.shape[:-2], self.inputs)

    # the three outputs -------------------------------------------------------------------------
    def schedule_logits(self, obs: torch.Tensor, state=None) -> tuple[torch.Tensor, object]:
        """Logits ``(B, N, K)`` of a state sequence ``(B, N, K, 3)`` and the carried state."""
        raise NotImplementedError

    def phases(self, obs: torch.Tensor) -> torch.Tensor:
        """Beam phases ``(…, K, M)`` of states ``(…, K, 3)``."""
        raise NotImplementedError

    def _phases_from(self, raw: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """:func:`phase_map` of a flat raw output ``(…, K (1 + M))``."""
        return phase_map(raw.reshape(*obs.shape[:-2], self.k, 1 + self.m), obs)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-vehicle values ``(B, N, K)`` of a state sequence."""
        raise NotImplementedError

    @property
    def groups(self) -> dict[str, list[nn.Parameter]]:
        return {"all": list(self.parameters())}

    def act(self, obs: torch.Tensor, state=None) -> tuple[torch.Tensor, object]:
        """Logits ``(B, K)`` of one slot's states ``(B, K, 3)``, carrying the recurrent state."""
        logits, state = self.schedule_logits(obs[:, None], state)
        return logits[:, 0], state


class HeteroMoE(Agent):
    """[P002]'s RL-H-MoE: LSTM temporal expert, MLP spatial expert, separate critic (module docstring)."""

    recurrent = True

    def __init__(self, cfg: V2IConfig, mask_aoi: bool = False) -> None:
        super().__init__(cfg, mask_aoi)
        h = cfg.agent.hidden
        self.temporal = nn.LSTM(self.inputs, h, batch_first=True)
        self.policy_head = nn.Linear(h, self.k)
        self.spatial = _mlp(self.inputs, 2 * h, self.k * (1 + self.m), zero_last=True)
        self.critic = nn.LSTM(self.inputs, h, batch_first=True)
        self.value_head = nn.Linear(h, self.k)

    def schedule_logits(self, obs, state=None):
        out, state = self.temporal(self._flat(obs), state)
        return self.policy_head(out), state

    def phases(self, obs):
        return self._phases_from(self.spatial(self._flat(obs)), obs)

    def values(self, obs):
        out, _ = self.critic(self._flat(obs))
        return self.value_head(out)

    @property
    def groups(self):
        return {"temporal": [*self.temporal.parameters(), *self.policy_head.parameters()],
                "critic": [*self.critic.parameters(), *self.value_head.parameters()],
                "spatial": list(self.spatial.parameters())}


class _SharedHeads(Agent):
    """An agent whose ``_outputs`` returns (logits, raw phases, values) from one forward pass."""

    def _outputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def schedule_logits(self, obs, state=None):
        return self._outputs(obs)[0], None

    def phases(self, obs):
        return self._phases_from(self._outputs(obs)[1], obs)

    def values(self, obs):
        return self._outputs(obs)[2]


class MonolithicMLP(_SharedHeads):
    """"Standard PPO": a shared MLP trunk with scheduling, phase and value heads."""

    def __init__(self, cfg: V2IConfig) -> None:
        super().__init__(cfg)
        h = 2 * cfg.agent.hidden
        self.trunk = nn.Sequential(nn.Linear(self.inputs, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        self.width = self.k * (1 + self.m)
        self.heads = _zero(nn.Linear(h, self.k + self.width + self.k))

    def _outputs(self, obs):
        out = self.heads(self.trunk(self._flat(obs)))
        return out[..., :self.k], out[..., self.k:self.k + self.width], out[..., -self.k:]


class HomogeneousMoE(_SharedHeads):
    """Structurally identical MLP experts (each with all three heads) mixed by a softmax gate."""

    def __init__(self, cfg: V2IConfig, num_experts: int = 2) -> None:
        super().__init__(cfg)
        self.experts = nn.ModuleList([MonolithicMLP(cfg) for _ in range(num_experts)])
        self.gate = nn.Linear(self.inputs, num_experts)

    def _outputs(self, obs):
        g = torch.softmax(self.gate(self._flat(obs)), dim=-1)
        outs = [e._outputs(obs) for e in self.experts]
        return tuple(sum(g[..., i:i + 1] * o[j] for i, o in enumerate(outs)) for j in range(3))


AGENTS.register("hetero_moe", lambda cfg: HeteroMoE(cfg))
AGENTS.register("hetero_moe_no_aoi", lambda cfg: HeteroMoE(cfg, mask_aoi=True))
AGENTS.register("ppo_mlp", lambda cfg: MonolithicMLP(cfg))
AGENTS.register("homogeneous_moe", lambda cfg: HomogeneousMoE(cfg))


def build_agent(cfg: V2IConfig, name: str | None = None, seed: int | None = None) -> Agent:
    """The registered agent ``name`` (default ``cfg.agent.policy``), initialised from ``seed``
    (default ``cfg.seed``)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return AGENTS.get(cfg.agent.policy if name is None else name)(cfg)
