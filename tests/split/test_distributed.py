"""Distributed experts with a channel-aware gate ([P004]): the mechanics of both stages."""

from __future__ import annotations

import copy

import pytest
import torch

from fedmoe.split.distributed import (
    DistributedMoE,
    SplitTrainConfig,
    accuracy_at,
    draw_snr,
    fixed_snr,
    stage2_loss,
    train_stage1,
    train_stage2,
)
from fedmoe.split.links import AnalogLink, DigitalLink


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


def test_channel_input_is_the_distortion_in_db_relative_to_the_mean():
    model = DistributedMoE(torch.nn.Identity(), 4, 2, 3)
    d = torch.tensor([[1.0, 0.1, 1e-3], [1e-2, 1e-3, 1e-5]])
    torch.testing.assert_close(model.channel_input(d), torch.tensor([[13.3333, 3.3333, -16.6667],
                                                                     [13.3333, 3.3333, -16.6667]]), atol=1e-3, rtol=0)
    absolute = DistributedMoE(torch.nn.Identity(), 4, 2, 3, csi_scale=0.25, csi_relative=False)
    torch.testing.assert_close(absolute.channel_input(d[:1]), torch.tensor([[0.0, -0.25, -0.75]]))
    with pytest.raises(ValueError, match="csi_scale"):
        DistributedMoE(torch.nn.Identity(), 4, 2, 3, csi_scale=0.0)


def test_stage2_losses_match_their_formulas():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 3, generator=g)
    per_expert = torch.rand(5, 3, generator=g) * 4
    probs = logits.softmax(dim=1)
    mixture = -torch.log((probs * torch.exp(-per_expert)).sum(dim=1)).mean()
    torch.testing.assert_close(stage2_loss(logits, per_expert, "mixture"), mixture)
    torch.testing.assert_close(stage2_loss(logits, per_expert, "expected"), (probs * per_expert).sum(dim=1).mean())
    with pytest.raises(ValueError, match="objective"):
        stage2_loss(logits, per_expert, "dense")
    with pytest.raises(ValueError, match="stage2_objective"):
        SplitTrainConfig(stage2_objective="dense")


def test_mixture_gradient_is_bounded_when_every_copy_is_drowned():
    # one sample whose every expert is drowned (huge losses) and one with a clear best expert: the mixture's
    # logit gradient is g − posterior, at most 1 per entry, and the drowned sample does not swamp the other
    logits = torch.zeros(2, 3, requires_grad=True)
    per_expert = torch.tensor([[200.0, 210.0, 220.0], [0.1, 3.0, 3.0]])
    stage2_loss(logits, per_expert, "mixture").backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().max()) <= 0.5 + 1e-6
    assert float(logits.grad[1].abs().sum()) > 0.3 * float(logits.grad[0].abs().sum())


def test_aware_gate_learns_to_route_around_a_bad_link(toy):
    # identical experts: only the links tell them apart, so the aware gate must learn to pick the best one
    model, x, y, _, _ = toy
    twin = copy.deepcopy(model)
    for e in twin.experts[1:]:
        e.load_state_dict(twin.experts[0].state_dict())
    link = DigitalLink()
    train_stage2(twin, x, y, link, aware=True, cfg=SplitTrainConfig(stage2_epochs=40, batch_size=64,
                                                                     snr_db_range=(5.0, 20.0)))
    snr = fixed_snr(len(x), 3, 12.0, fading=True, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        choice = twin.gate_logits(twin.backbone(x), link.distortion(snr), aware=True).argmax(dim=1)
    assert float((choice == snr.argmax(dim=1)).float().mean()) > 0.7  # chance: 1/3
    aware = accuracy_at(twin, x, y, link, 12.0, aware=True, repeats=3)
    assert aware > accuracy_at(twin, x, y, link, 12.0, aware=False, repeats=3) + 0.05
