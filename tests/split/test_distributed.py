"""Distributed experts with a channel-aware gate (paper 004): the mechanics of both stages."""

from __future__ import annotations

import pytest
import torch

from fedmoe.split.distributed import (DistributedMoE, SplitTrainConfig, accuracy_at, draw_snr, train_stage1,
                                      train_stage2)
from fedmoe.split.links import AnalogLink


@pytest.fixture(scope="module")
def toy():
    """Four Gaussian classes in 6-D, a linear backbone, 3 experts."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=g) * 3
    y = torch.randint(0, 4, (400,), generator=g)
    x = centres[y] + torch.randn(400, 6, generator=g)
    torch.manual_seed(0)
    model = DistributedMoE(torch.nn.Linear(6, 8), feature_dim=8, num_classes=4, num_experts=3, hidden=16)
    cfg = SplitTrainConfig(stage1_epochs=15, stage2_epochs=3, batch_size=64)
    losses = train_stage1(model, x, y, cfg)
    return model, x, y, cfg, losses


def test_stage1_learns_under_ideal_links(toy):
    model, x, y, _, losses = toy
    assert losses[-1] < losses[0]
    assert accuracy_at(model, x, y, None, None, aware=False) > 0.9


def test_aware_gate_starts_as_the_stage1_gate(toy):
    model, x, _, _, _ = toy
    model.init_aware_gate()
    z = model.backbone(x)
    d = torch.rand(len(x), 3)  # whatever the distortion, zero weights on it
    torch.testing.assert_close(model.gate_logits(z, d, aware=True), model.gate_logits(z, None, aware=False))


def test_stage2_trains_only_the_gate(toy):
    model, x, y, cfg, _ = toy
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("aware_gate.")}
    before = {k: v.clone() for k, v in model.aware_gate.state_dict().items()}
    train_stage2(model, x, y, AnalogLink(), aware=True, cfg=cfg)
    for k, v in model.state_dict().items():
        if k in frozen:
            torch.testing.assert_close(v, frozen[k], msg=k)
    assert any(not torch.equal(before[k], v) for k, v in model.aware_gate.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


def test_noise_hurts_and_high_snr_recovers_the_ideal_accuracy(toy):
    model, x, y, _, _ = toy
    ideal = accuracy_at(model, x, y, None, None, aware=False)
    noisy = accuracy_at(model, x, y, AnalogLink(), -10.0, aware=False, repeats=2)
    clean = accuracy_at(model, x, y, AnalogLink(), 60.0, aware=False, repeats=2)
    assert noisy < ideal - 0.1
    assert clean == pytest.approx(ideal, abs=0.02)


def test_snr_draws_cover_the_range_and_fade_per_expert():
    g = torch.Generator().manual_seed(3)
    snr = draw_snr(5000, 4, (10.0, 40.0), fading=False, generator=g)
    db = 10 * torch.log10(snr)
    assert float(db.min()) >= 10.0 - 1e-4 and float(db.max()) <= 40.0 + 1e-4
    assert torch.allclose(snr[:, 0], snr[:, 3])  # one mean SNR per sample without fading
    faded = draw_snr(20000, 4, (20.0, 20.0), fading=True, generator=g)
    assert float(faded.mean()) == pytest.approx(100.0, rel=0.05)  # E|h|² = 1


def test_bad_shapes_are_clear_errors(toy):
    model, x, _, _, _ = toy
    with pytest.raises(ValueError, match="snr must have shape"):
        model.expert_outputs(model.backbone(x[:5]), AnalogLink(), torch.ones(5, 2))
    with pytest.raises(ValueError, match="at least 2 experts"):
        DistributedMoE(torch.nn.Identity(), 4, 2, 1)
    with pytest.raises(ValueError, match="distortion"):
        model.gate_logits(model.backbone(x[:2]), None, aware=True)
