"""The device side of a round: budgets, uploads, local state, instructions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmoe.federated.local import RoundInstructions, local_update
from fedmoe.federated.parameters import payload_bits, to_numpy
from fedmoe.federated.protocol import ENERGY_KEY, LATENCY_KEY, NUM_EXAMPLES_KEY, UPLOAD_BITS_KEY, USAGE_KEY
from fedmoe.federated.world import world_for
from tests.federated.conftest import tiny_config


def instructions(**kw) -> RoundInstructions:
    base = dict(server_round=1, stage=1, local_epochs=1, lr=1e-3, tau=1.0, cost_weight=1.0, rate_bps=5e6,
                num_rb=10, deadline_s=100.0, fit_standardiser=True)
    return RoundInstructions(**{**base, **kw})


def test_instructions_round_trip_and_name_missing_keys():
    instr = instructions(modalities=("gps", "rf"), proximal_mu=0.5)
    assert RoundInstructions.from_config(instr.to_config()) == instr
    config = instr.to_config()
    del config["rate-bps"]
    with pytest.raises(ValueError, match="rate-bps"):
        RoundInstructions.from_config(config)
    with pytest.raises(ValueError, match="stage"):
        RoundInstructions.from_config({**instr.to_config(), "stage": 3})


@pytest.mark.parametrize("stage", [1, 2])
def test_budget_keeps_experts_of_other_modalities_untouched(tiny_cfg, stage):
    world = world_for(tiny_cfg)
    glob = to_numpy(world.template.state_dict())
    res = local_update(world, 0, glob, None, instructions(stage=stage, modalities=("gps", "rf")))
    names = [e.name for e in world.template.experts]
    for i, name in enumerate(names):
        sent = any(k.startswith(f"experts.{i}.") for k in res.arrays)
        cheap = name.startswith(("gps", "rf"))
        assert sent == (res.metrics[USAGE_KEY][i] > 0)
        if not cheap:
            assert res.metrics[USAGE_KEY][i] == 0 and not sent
    assert res.metrics[UPLOAD_BITS_KEY] == payload_bits(res.arrays)
    assert res.metrics[LATENCY_KEY] > 0 and res.metrics[ENERGY_KEY] > 0
    assert res.metrics[NUM_EXAMPLES_KEY] > 0


def test_local_keys_stay_on_the_device_and_come_back():
    cfg = tiny_config(federated={"local_keys": ["heads.*"]})
    world = world_for(cfg)
    glob = {k: v for k, v in to_numpy(world.template.state_dict()).items() if not k.startswith("heads.")}
    first = local_update(world, 1, glob, None, instructions())
    assert not any(k.startswith("heads.") for k in first.arrays)
    kept = {k: v for k, v in first.local_state.items() if k.startswith("heads.")}
    assert kept
    second = local_update(world, 1, glob, first.local_state, instructions(server_round=2, stage=2))
    moved = [k for k in kept if not np.array_equal(second.local_state[k], kept[k])]
    assert moved, "the device's own heads were trained further from where it left them"
    assert any(k.startswith("critic.") for k in second.local_state)


def test_bad_partition_id_is_refused(tiny_cfg):
    world = world_for(tiny_cfg)
    with pytest.raises(ValueError, match="partition-id"):
        local_update(world, 99, to_numpy(world.template.state_dict()), None, instructions())


def test_frozen_experts_upload_the_gate_only_and_count_one_forward_pass():
    """Stage II under supervised routing with frozen experts: the experts run forward once (``F_i`` per
    sample, not ``3 F_i`` per sample and epoch), nothing but the shared group moves, and no expert is sent."""
    cfg = tiny_config(train={"gate_estimator": "oracle_routing", "routing_trains_experts": False},
                      model={"gate": "gumbel_hard"})
    world = world_for(cfg)
    glob = to_numpy(world.template.state_dict())
    res = local_update(world, 0, glob, None, instructions(stage=2, local_epochs=3, fit_standardiser=False))
    assert res.metrics["expert-usage"] == [0.0] * world.template.num_experts
    assert res.arrays and all(not k.startswith("experts.") for k in res.arrays)
    moved = [k for k in res.arrays if not np.array_equal(res.arrays[k], glob[k])]
    assert moved and all(k.startswith("gate.") for k in moved)
    samples = world.partition(0).samples
    forward = world.template.available(torch.from_numpy(samples.present)).sum(0).numpy()
    assert res.metrics["flops"] == pytest.approx(float(forward @ world.expert_flops))
    trained = local_update(world, 0, glob, None, instructions(stage=1, local_epochs=3, fit_standardiser=False))
    assert trained.metrics["flops"] > 2.5 * res.metrics["flops"]


def test_stage_two_may_run_its_own_number_of_local_epochs():
    cfg = tiny_config(federated={"local_epochs": 2, "stage2_local_epochs": 7})
    assert (cfg.federated.epochs_of_stage(1), cfg.federated.epochs_of_stage(2)) == (2, 7)
    from fedmoe.config import FederatedConfig

    assert FederatedConfig(local_epochs=2).epochs_of_stage(2) == 2  # unset: stage II runs local_epochs too
