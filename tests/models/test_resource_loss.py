"""The resource-aware loss of [P001] eq. 9 (plus the router auxiliary losses)."""

from __future__ import annotations

import math

import pytest
import torch

from fedmoe.config import TaskWeights
from fedmoe.models.gates import GateOutput
from fedmoe.models.heads import TaskOutputs, task_loss
from fedmoe.training import resource_aware_loss, score_function_loss


def test_cost_term_is_the_expected_cost_of_the_gate():
    task = torch.tensor(1.0)
    probs = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    costs = torch.tensor([[0.2, 0.6, 1.0], [0.1, 0.5, 0.9]])
    # mean over samples of Σ_i g_i C_i = ((0.1 + 0.3) + 0.1) / 2 = 0.25
    assert float(resource_aware_loss(task, probs, costs, 2.0, {}, 0.0, 0.0)) == pytest.approx(1.0 + 2.0 * 0.25)
    assert float(resource_aware_loss(task, probs, costs, 0.0, {}, 0.0, 0.0)) == pytest.approx(1.0)
    assert float(resource_aware_loss(task, probs, None, 5.0, {}, 0.0, 0.0)) == pytest.approx(1.0)


def test_aux_terms_and_gradients():
    logits = torch.zeros(2, 3, requires_grad=True)
    probs = logits.softmax(1)
    costs = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    aux = {"z_loss": torch.tensor(4.0), "load_balance": torch.tensor(1.5)}
    loss = resource_aware_loss(torch.tensor(0.0), probs, costs, 1.0, aux, 0.1, 0.2)
    assert float(loss.detach()) == pytest.approx(2 / 3 + 0.4 + 0.3, rel=1e-5)
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # the cost pushes probability to the free expert


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="costs have shape"):
        resource_aware_loss(torch.tensor(0.0), torch.ones(2, 3) / 3, torch.ones(2, 4), 1.0, {}, 0.0, 0.0)


def sampled_gate(logits: torch.Tensor, choice: list[int]) -> GateOutput:
    selected = torch.zeros(logits.shape, dtype=torch.bool)
    selected[torch.arange(len(choice)), torch.tensor(choice)] = True
    log_prob = torch.log_softmax(logits, 1)[selected]
    probs = logits.softmax(1)
    return GateOutput(selected.float(), selected, logits, probs, {}, log_prob)


def test_score_function_reinforces_the_choice_of_the_better_sample():
    logits = torch.zeros(2, 3, requires_grad=True)
    per_sample = torch.tensor([1.0, 3.0])  # sample 0 did better with expert 0 than sample 1 with expert 1
    out = sampled_gate(logits, [0, 1])
    loss = score_function_loss(per_sample, out, None, 0.0, 0.0, 0.0)
    # leave-one-out baselines 3 and 1: advantages −2 and +2, log π = log(1/3)
    assert float(loss.detach()) == pytest.approx(2.0 + (-2 + 2) / 2 * math.log(1 / 3))
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[1, 1]  # raise π(expert 0 | x_0), lower π(expert 1 | x_1)


def test_score_function_charges_the_cost_of_what_was_drawn_and_fits_the_critic():
    logits = torch.zeros(2, 3, requires_grad=True)
    costs = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    out = sampled_gate(logits, [0, 1])
    critic = torch.tensor([0.5, 0.5], requires_grad=True)
    loss = score_function_loss(torch.tensor([1.0, 1.0]), out, costs, 2.0, 0.0, 0.0, baseline=critic)
    # r = [1, 3]; advantages vs the critic [0.5, 2.5]; critic loss mean((0.5 − r)²) = (0.25 + 6.25) / 2
    expected = 1.0 + (0.5 + 2.5) / 2 * math.log(1 / 3) + 3.25
    assert float(loss.detach()) == pytest.approx(expected)
    loss.backward()
    assert logits.grad[1, 1] > 0 and critic.grad[1] < 0  # the costly draw is discouraged; the critic rises


def test_entropy_bonus_pushes_towards_uniform():
    logits = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    out = sampled_gate(logits, [0])
    score_function_loss(torch.tensor([1.0]), out, None, 0.0, 0.0, 0.0, entropy_weight=1.0).backward()
    assert logits.grad[0, 0] > 0  # (a single sample has zero advantage: only the entropy term acts)


def test_entropy_bonus_has_finite_gradients_when_an_expert_is_unavailable():
    # A sample lacking a modality has logit −inf for that modality's experts; the entropy's
    # 0·(−inf) must not turn into a NaN gradient (it did, and NaN'd the gate of weak devices).
    raw = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]], requires_grad=True)
    logits = raw.masked_fill(torch.tensor([[False, False, True], [False, True, True]]), float("-inf"))
    out = sampled_gate(logits, [0, 0])
    loss = score_function_loss(torch.tensor([1.0, 2.0]), out, None, 0.0, 0.0, 0.0, entropy_weight=1.0)
    # leave-one-out advantages −1 and +1; log π: log softmax([1, 0])₀ and log 1 = 0;
    # entropy: softmax([1, 0])'s for sample 0, none for the one-hot sample 1
    p = torch.tensor([1.0, 0.0]).softmax(0)
    expected = 1.5 + (-1 * math.log(float(p[0])) + 0.0) / 2 - float(-(p * p.log()).sum()) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(raw.grad).all()
    assert raw.grad[1].abs().sum() == 0  # a one-hot sample has no entropy gradient, zero advantage·0 score


def test_per_sample_task_loss_averages_to_the_mean_loss():
    g = torch.Generator().manual_seed(0)
    out = TaskOutputs(torch.randn(6, 4, generator=g), torch.randn(6, generator=g) * 10 + 100,
                      torch.randn(6, 3, generator=g))
    labels = {"beam": torch.tensor([0, 1, 2, 3, 0, 1]),
              "pathloss_db": torch.tensor([100.0, float("nan"), 95.0, 110.0, float("nan"), 99.0]),
              "next_position": torch.randn(6, 3, generator=g)}
    w = TaskWeights(beam=1.0, pathloss=0.5, next_position=0.2)
    mean, parts = task_loss(out, labels, w)
    per, _ = task_loss(out, labels, w, reduction="none")
    assert per.shape == (6,) and float(per.mean()) == pytest.approx(float(mean), rel=1e-6)
    assert set(parts) == {"beam", "pathloss", "next_position"}
    with pytest.raises(ValueError, match="reduction"):
        task_loss(out, labels, w, reduction="sum")
