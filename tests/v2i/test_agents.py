"""V2I agents ([P002]): outputs meet (9b), (9f); gradient isolation (eq. 12–13); training learns and is seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmoe.v2i.agents import AGENTS, build_agent
from fedmoe.v2i.channel import beamformer
from fedmoe.v2i.env import V2IEnv
from fedmoe.v2i.training import (
    Batch,
    agent_policy,
    collect,
    evaluate,
    make_optimisers,
    spatial_loss,
    temporal_loss,
    train_agent,
    update,
)


def _batch(cfg, agent, slots=16, seed=0) -> Batch:
    return collect(agent, V2IEnv(cfg, 4, seed=seed), slots, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(AGENTS.names()))
def test_every_agent_meets_the_action_constraints(v2i_cfg, name):
    agent = build_agent(v2i_cfg, name)
    batch = _batch(v2i_cfg, agent)
    assert set(torch.unique(batch.actions).tolist()) <= {0.0, 1.0}  # (9f)
    phases = agent.phases(batch.obs)
    assert phases.shape == batch.obs.shape[:-1] + (v2i_cfg.num_antennas,)
    v = beamformer(phases.double())
    torch.testing.assert_close(v.abs(), torch.full_like(v.abs(), 1 / math.sqrt(v2i_cfg.num_antennas)))  # (9b)


def _grads(params):
    return [p.grad for p in params]


def _zero_or_none(grads) -> bool:
    return all(g is None or not g.abs().any() for g in grads)


def test_gradients_are_isolated_between_the_experts(v2i_cfg):
    agent = build_agent(v2i_cfg, "hetero_moe")
    batch = _batch(v2i_cfg, agent)
    adv = torch.randn_like(batch.rewards)
    groups = agent.groups
    spatial_loss(agent, batch.obs, batch.h, 1.0).backward()
    assert not _zero_or_none(_grads(groups["spatial"]))
    assert _zero_or_none(_grads(groups["temporal"])) and _zero_or_none(_grads(groups["critic"]))
    agent.zero_grad(set_to_none=True)
    temporal_loss(agent, batch, adv, 0.2, 0.01).backward()
    assert not _zero_or_none(_grads(groups["temporal"]))
    assert _zero_or_none(_grads(groups["spatial"])) and _zero_or_none(_grads(groups["critic"]))
    # the groups partition the parameters: nothing is shared, nothing is left out
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(agent.parameters()))


def test_the_monolithic_baseline_shares_its_trunk(v2i_cfg):
    agent = build_agent(v2i_cfg, "ppo_mlp")
    batch = _batch(v2i_cfg, agent)
    with torch.no_grad():  # leave the zero start of the heads so that gradients reach the trunk
        agent.heads.weight.normal_(0, 0.1)
    spatial_loss(agent, batch.obs, batch.h, 1.0).backward()
    assert not _zero_or_none(_grads(agent.trunk.parameters()))


def test_update_changes_each_group_only_through_its_own_loss(v2i_cfg):
    agent = build_agent(v2i_cfg, "hetero_moe")
    batch = _batch(v2i_cfg, agent)
    before = {n: [p.detach().clone() for p in ps] for n, ps in agent.groups.items()}
    opts = make_optimisers(agent, v2i_cfg)
    assert set(opts) == {"temporal", "critic", "spatial"}
    update(agent, opts, batch, v2i_cfg)
    for name, ps in agent.groups.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], ps)), name


def test_ablation_does_not_see_the_aoi(v2i_cfg):
    agent = build_agent(v2i_cfg, "hetero_moe_no_aoi")
    obs = torch.rand(2, 5, v2i_cfg.num_vehicles, 3)
    other = obs.clone()
    other[..., 2] = torch.rand_like(other[..., 2]) * 10
    torch.testing.assert_close(agent.schedule_logits(obs)[0], agent.schedule_logits(other)[0])


def test_training_is_seeded_and_learns(v2i_cfg):
    a = train_agent(v2i_cfg, updates=40, seed=3)
    b = train_agent(v2i_cfg, updates=2, seed=3)
    c = train_agent(v2i_cfg, updates=2, seed=3)
    for p, q in zip(b.agent.parameters(), c.agent.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    untrained = evaluate(v2i_cfg, lambda env: agent_policy(build_agent(v2i_cfg, seed=3)), seed=11)
    trained = evaluate(v2i_cfg, lambda env: agent_policy(a.agent), seed=11)
    assert trained["energy_j"] < 0.7 * untrained["energy_j"]
    assert trained["energy_j"] < 40.0  # below vision-only
    assert trained["beam_gain"] > 0.6  # the spatial expert keeps a usable beam
    assert np.isfinite([r["temporal_loss"] for r in a.history]).all()
