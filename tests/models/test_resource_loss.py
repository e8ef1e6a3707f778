"""The resource-aware loss of paper 001 eq. 9 (plus the router auxiliary losses)."""

from __future__ import annotations

import pytest
import torch

from fedmoe.training import resource_aware_loss


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
