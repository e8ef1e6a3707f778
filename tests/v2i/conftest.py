"""Shared V2I fixtures: one torch thread, a small agent configuration that trains in seconds."""

from __future__ import annotations

import pytest

from fedmoe.config import V2IConfig


def small_v2i(**agent) -> V2IConfig:
    """[P002]'s defaults with short rollouts (``agent`` overrides ``v2i.agent`` keys)."""
    base = V2IConfig()
    opts = {"episodes_per_update": 8, "episode_slots": 64, "eval_episodes": 8, "eval_slots": 120, "warmup_slots": 20}
    return base.model_copy(update={"agent": base.agent.model_copy(update={**opts, **agent})})


@pytest.fixture
def v2i_cfg() -> V2IConfig:
    return small_v2i()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread, as in the benchmarks: the agents' operations are small, and on a machine
    whose cores are busy more threads than free cores make them many times slower."""
    from fedmoe.strategies.v2i_federated import torch_threads

    with torch_threads(1):
        yield
