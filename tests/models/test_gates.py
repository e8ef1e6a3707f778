"""Gates on their own: selection, straight-through gradients, masks, side inputs, losses, schedule, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmoe.models.aux_losses import load_balancing_loss, router_z_loss
from fedmoe.models.gate_backbones import GATE_BACKBONES, build_backbone
from fedmoe.models.gates import GATES, ChannelAwareGate, Gate, GateOutput, TemperatureSchedule, TopNGate, build_gate
from fedmoe.registry import UnknownNameError

B, F, E = 32, 6, 15
ALL_GATES = ["dense", "topn", "gumbel_topn", "gumbel_hard", "softmax_hard", "channel_aware"]
HARD_GATES = ["gumbel_hard", "softmax_hard"]


def make(name: str, backbone: str = "mlp", seed: int = 0, **kw) -> Gate:
    torch.manual_seed(seed)
    return build_gate(name, F, E, backbone=backbone, **kw)


def inputs(seed: int = 1, batch: int = B):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, F, generator=g)
    costs = torch.rand(batch, E, generator=g)
    link = torch.randn(batch, E, generator=g)
    return feats, costs, link


def call(gate: Gate, feats, costs=None, available=None, link=None) -> GateOutput:
    return gate(feats, costs=costs, available=available, link_quality=link)


def test_registries_hold_every_gate_and_backbone():
    assert set(ALL_GATES) <= set(GATES.names())
    assert {"mlp", "transformer"} <= set(GATE_BACKBONES.names())


@pytest.mark.parametrize("backbone", ["mlp", "transformer"])
@pytest.mark.parametrize("name", ALL_GATES)
def test_straight_through_gradients_reach_every_gate_parameter_group(name, backbone):
    gate = make(name, backbone, use_costs=True).train()
    feats, costs, link = inputs()
    out = call(gate, feats, costs, link=link)
    assert out.weights.shape == out.selected.shape == out.logits.shape == out.probs.shape == (B, E)
    # A downstream loss that, like the fusion, only sees the selected experts' weights.
    target = torch.randn(B, E, generator=torch.Generator().manual_seed(7))
    (out.weights * out.selected * target).sum().backward()
    grads = {n: p.grad for n, p in gate.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    first = next(p for n, p in gate.named_parameters() if n.endswith("weight"))
    assert float(first.grad.abs().sum()) > 0  # the gradient reaches the gate's first layer


@pytest.mark.parametrize("name", ["topn", "channel_aware", "softmax_hard"])
def test_straight_through_gradient_reaches_unselected_logits(name):
    gate = make(name, top_n=5) if name != "softmax_hard" else make(name)
    feats, _, link = inputs()
    logits = gate.compute_logits(feats, link_quality=link).detach().requires_grad_(True)
    probs = torch.softmax(logits / gate.temperature, dim=1)
    weights, selected = gate.select(logits, probs)
    (weights * selected * torch.arange(E, dtype=torch.float32)).sum().backward()
    assert (logits.grad[~selected] != 0).any()


@pytest.mark.parametrize("name", HARD_GATES + ["channel_aware"])
def test_hard_gates_are_exactly_one_hot_in_train_and_eval(name):
    gate = make(name)
    feats, _, link = inputs()
    for mode in (gate.train, gate.eval):
        mode()
        for tau in (5.0, 0.1):
            gate.temperature = tau
            out = call(gate, feats, link=link)
            w = out.weights.detach()
            assert set(w.unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(w.sum(1), torch.ones(B)) and torch.equal(w.bool(), out.selected)


def test_gumbel_noise_only_in_training_and_eval_is_argmax():
    gate = make("gumbel_hard")
    feats = torch.zeros(200, F)  # identical rows: in training the noise spreads the choice
    gate.train()
    assert call(gate, feats).selected.any(0).sum() > 1
    gate.eval()
    out = call(gate, feats)
    assert torch.equal(out.selected.float().argmax(1), out.logits.argmax(1))
    assert out.selected.any(0).sum() == 1
    soft = make("softmax_hard").train()
    out = call(soft, feats)
    assert torch.equal(out.selected.float().argmax(1), out.logits.argmax(1))  # no noise in training either


@pytest.mark.parametrize("n", [1, 3, 5, 15])
def test_top_n_selects_exactly_n_and_weights_sum_to_one(n):
    gate = make("topn", top_n=n)
    feats, _, _ = inputs()
    out = call(gate, feats)
    assert torch.equal(out.selected.sum(1), torch.full((B,), n))
    assert torch.allclose(out.weights.sum(1), torch.ones(B), atol=1e-6)
    assert (out.weights.detach()[~out.selected] == 0).all()
    # The selected are the n largest logits, weighted by their renormalised probabilities.
    top = out.logits.topk(n, dim=1).indices
    assert torch.equal(out.selected, torch.zeros(B, E, dtype=torch.bool).scatter(1, top, True))
    p = out.probs.detach() * out.selected
    assert torch.allclose(out.weights.detach(), p / p.sum(1, keepdim=True))


def test_top_n_default_is_five_and_dense_selects_all():
    assert make("topn").top_n == 5 and make("channel_aware").top_n == 1
    feats, _, _ = inputs()
    out = call(make("dense"), feats)
    assert out.selected.all()
    assert torch.allclose(out.weights, out.probs) and torch.allclose(out.weights.sum(1), torch.ones(B))


@pytest.mark.parametrize("name", ALL_GATES)
def test_unavailable_experts_are_never_selected(name):
    gate = make(name, top_n=5) if name in ("topn", "channel_aware") else make(name)
    feats, costs, link = inputs()
    g = torch.Generator().manual_seed(3)
    available = torch.rand(B, E, generator=g) < 0.4
    available[torch.arange(B), torch.randint(0, E, (B,), generator=g)] = True  # at least one each
    available[0] = False
    available[0, 4] = True  # a sample with exactly one available expert
    costs = costs.masked_fill(~available, float("inf"))  # non-finite costs where unavailable are fine
    for mode in (gate.train, gate.eval):
        mode()
        out = call(gate, feats, costs, available, link)
        assert not out.selected[~available].any()
        assert (out.weights.detach()[~available] == 0).all() and (out.probs.detach()[~available] == 0).all()
        assert torch.isneginf(out.logits[~available]).all()
        assert out.selected[0, 4] and torch.allclose(out.weights[0].sum(), torch.tensor(1.0))
        assert all(torch.isfinite(v) for v in out.aux.values())
    out.weights.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in gate.parameters() if p.grad is not None)
    if name == "topn":  # fewer available than N: all of them
        assert torch.equal(out.selected.sum(1), available.sum(1).clamp(max=5))


def test_sample_without_any_available_expert_is_a_clear_error():
    feats, _, _ = inputs()
    available = torch.ones(B, E, dtype=torch.bool)
    available[3] = False
    with pytest.raises(ValueError, match=r"no available expert.*rows \[3\]"):
        call(make("topn"), feats, available=available)


def test_cost_input_widens_the_gate_and_is_required():
    plain, costed = make("softmax_hard"), make("softmax_hard", use_costs=True)
    assert plain.input_dim == F and costed.input_dim == F + E
    assert costed.backbone.net[0].in_features == F + E
    linked = make("channel_aware", use_costs=True)
    assert linked.input_dim == F + 2 * E
    feats, costs, link = inputs()
    with pytest.raises(ValueError, match=r"needs costs of shape \(32, 15\)"):
        call(costed, feats)
    with pytest.raises(ValueError, match="needs link_quality"):
        call(make("channel_aware"), feats)
    with pytest.raises(ValueError, match="costs must be finite"):
        call(costed, feats, costs.masked_fill(costs > 0.5, float("nan")))
    # The cost vector changes the decision (so one gate serves devices with different channels).
    assert not torch.equal(call(costed, feats, costs).logits, call(costed, feats, 1 - costs).logits)
    assert call(plain, feats, costs).selected.shape == (B, E)  # costs given for the loss only: accepted


def test_link_quality_changes_the_channel_aware_decision():
    gate = make("channel_aware", "transformer")
    feats, _, link = inputs()
    assert not torch.equal(call(gate, feats, link=link).logits, call(gate, feats, link=-link).logits)


@pytest.mark.parametrize("name", ["softmax_hard", "gumbel_hard", "topn", "channel_aware"])
def test_cost_term_moves_selection_to_the_cheaper_of_two_equal_experts(name):
    """Toy problem: two equally good experts; which is cheap depends on the sample's device."""
    torch.manual_seed(0)
    n = 128
    opts = {"top_n": 1} if name in ("topn", "channel_aware") else {}
    gate = build_gate(name, 4, 2, use_costs=True, **opts)
    feats = torch.randn(n, 4)
    cheap = torch.arange(n) % 2  # the cheap expert: 0 on even rows (one device type), 1 on odd rows
    costs = torch.stack([cheap.float(), 1 - cheap.float()], dim=1) * 0.9 + 0.1  # 0.1 cheap, 1.0 dear
    link = torch.zeros(n, 2)
    assert torch.equal(costs.argmin(1), cheap)

    def cheap_share() -> float:
        gate.eval()
        share = (call(gate, feats, costs, link=link).selected.float().argmax(1) == cheap).float().mean()
        gate.train()
        return float(share)

    before = cheap_share()
    opt = torch.optim.Adam(gate.parameters(), lr=1e-2)
    lam = 1.0
    for _ in range(200):
        out = call(gate, feats, costs, link=link)
        task = torch.zeros(())  # both experts equally good: the task loss does not prefer either
        loss = task + lam * (out.probs * costs).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.8 and cheap_share() > 0.95  # each row now picks its own device's cheap expert


def test_temperature_is_settable_and_validated():
    gate = make("gumbel_hard")
    feats, _, _ = inputs()
    gate.temperature = 0.5
    out = call(gate.eval(), feats)
    assert torch.allclose(out.probs, torch.softmax(out.logits / 0.5, dim=1))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            gate.temperature = bad


def test_annealing_schedule_endpoints_and_monotonicity():
    for kind in ("exponential", "linear"):
        s = TemperatureSchedule(2.0, 0.2, 100, kind)
        taus = [s(t) for t in range(0, 151)]
        assert taus[0] == pytest.approx(2.0) and taus[100] == pytest.approx(0.2) and taus[150] == pytest.approx(0.2)
        assert all(a >= b for a, b in zip(taus, taus[1:])) and taus[10] > taus[90]
    assert TemperatureSchedule(2.0, 0.2, 100)(50) == pytest.approx(math.sqrt(2.0 * 0.2))  # geometric midpoint
    assert TemperatureSchedule(2.0, 0.2, 100, "linear")(50) == pytest.approx(1.1)
    rising = TemperatureSchedule(0.5, 1.0, 10)
    assert all(rising(t) <= rising(t + 1) for t in range(12))
    for args, match in [((0.0, 0.2, 10), "tau_start"), ((1.0, -0.2, 10), "tau_end"), ((1.0, 0.2, 0), "steps"),
                        ((1.0, 0.2, 2.5), "steps"), ((1.0, float("inf"), 10), "tau_end"),
                        ((1.0, 0.2, 10, "cosine"), "kind")]:
        with pytest.raises(ValueError, match=match):
            TemperatureSchedule(*args)
    with pytest.raises(ValueError, match="step"):
        TemperatureSchedule()(-1)


def test_z_loss_and_load_balance_on_hand_examples():
    logits = torch.tensor([[0.0, 0.0], [float("-inf"), 0.0], [math.log(3.0), 0.0]])
    expected = (math.log(2.0) ** 2 + 0.0 + math.log(4.0) ** 2) / 3
    assert float(router_z_loss(logits)) == pytest.approx(expected)
    probs = torch.full((2, 2), 0.5)
    assert float(load_balancing_loss(probs, torch.tensor([[True, False], [False, True]]))) == pytest.approx(1.0)
    assert float(load_balancing_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[True, False]]))) == pytest.approx(2.0)
    # f = (3/4, 1/4), P = (0.6, 0.4): E Σ f P = 2 (0.45 + 0.1) = 1.1
    sel = torch.tensor([[True, False], [True, False], [True, False], [False, True]])
    p = torch.tensor([[0.6, 0.4]] * 4)
    assert float(load_balancing_loss(p, sel)) == pytest.approx(1.1)
    # Top-2 of 4, uniform: f is the share of selections, so the loss is 1 as for top-1.
    sel = torch.tensor([[True, True, False, False], [False, False, True, True]])
    assert float(load_balancing_loss(torch.full((2, 4), 0.25), sel)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        load_balancing_loss(torch.ones(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        router_z_loss(torch.ones(3))


def test_no_nan_with_minus_inf_logits():
    logits = torch.tensor([[float("-inf"), 1.0, 2.0], [float("-inf")] * 3, [0.5, float("-inf"), -1.0]],
                          requires_grad=True)
    z = router_z_loss(logits)
    probs = torch.softmax(logits, dim=1)  # the all -inf row is NaN here
    lb = load_balancing_loss(probs, torch.isfinite(logits))
    assert torch.isfinite(z) and torch.isfinite(lb)
    z.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1] == 0).all() and logits.grad[0, 0] == 0


def test_bad_shapes_and_unknown_names_are_clear_errors():
    gate = make("topn", use_costs=True)
    feats, costs, _ = inputs()
    with pytest.raises(ValueError, match=r"features must have shape \(B, 6\), got \(32, 7\)"):
        call(gate, torch.randn(B, F + 1), costs)
    with pytest.raises(ValueError, match=r"features must have shape"):
        call(gate, torch.randn(B), costs)
    with pytest.raises(ValueError, match=r"costs of shape \(32, 15\).*got \(32, 14\)"):
        call(gate, feats, costs[:, :14])
    with pytest.raises(ValueError, match=r"available must have shape \(32, 15\)"):
        call(gate, feats, costs, torch.ones(B, E - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"link_quality of shape \(32, 15\)"):
        call(make("channel_aware"), feats, link=torch.zeros(B, 3))
    with pytest.raises(UnknownNameError, match="gate 'sparse'.*channel_aware.*dense"):
        GATES.get("sparse")
    with pytest.raises(UnknownNameError, match="gate backbone 'lstm'.*mlp.*transformer"):
        make("dense", "lstm")
    with pytest.raises(TypeError, match=r"backbone 'transformer' got unknown options \['hidden'\]"):
        make("dense", "transformer", hidden=64)
    with pytest.raises(ValueError, match="top_n must be in"):
        TopNGate(F, 3, top_n=4)
    with pytest.raises(ValueError, match="top_n must be in"):
        ChannelAwareGate(F, 3, top_n=0)
    with pytest.raises(ValueError, match="num_heads dividing"):
        build_backbone("transformer", F, E, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="in_dim and num_experts"):
        build_gate("dense", 0, E)


def test_transformer_backbone_runs_with_one_token_per_expert():
    gate = make("gumbel_hard", "transformer", use_costs=True, d_model=48, num_layers=2, num_heads=4)
    assert gate.backbone.expert_embedding.shape == (E, 48) and len(gate.backbone.encoder.layers) == 2
    feats, costs, _ = inputs()
    out = call(gate.eval(), feats, costs)
    assert out.logits.shape == (B, E) and torch.isfinite(out.logits).all()
    small = sum(p.numel() for p in make("dense", "transformer").parameters())
    assert small < 20_000  # a small gate
    # Permuting the experts' side inputs permutes nothing else: token e carries expert e's cost.
    bare = build_backbone("transformer", F, E, side_dim=1)
    bare.eval()
    s = torch.rand(B, E, 1)
    assert not torch.allclose(bare(feats, s), bare(feats, s.flip(1)))


def test_mlp_backbone_is_three_layers_of_128():
    layers = [m for m in make("dense").backbone.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(F, 128), (128, 128), (128, E)]
    assert np.isclose(sum(p.numel() for p in make("dense", hidden=16).parameters()),
                      (F * 16 + 16) + (16 * 16 + 16) + (16 * E + E))


def test_gumbel_hard_draws_from_softmax_of_the_logits_and_reports_the_log_prob():
    gate = make("gumbel_hard").train()
    torch.manual_seed(3)
    logits = torch.tensor([1.0, 0.0, -1.0, float("-inf")]).repeat(40_000, 1)
    gate.temperature = 0.3  # τ shapes the straight-through softmax only, not the draw
    weights, selected, log_prob = gate.select(logits, torch.softmax(logits / 0.3, 1))
    freq = selected.float().mean(0)
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=0.01, rtol=0)
    torch.testing.assert_close(log_prob, torch.log_softmax(logits, 1)[selected])
    assert len(gate.eval().select(logits, torch.softmax(logits, 1))) == 2  # evaluation: argmax, no draw


def test_gumbel_topn_draws_without_replacement_with_plackett_luce_log_prob():
    gate = make("gumbel_topn", top_n=2).train()
    assert gate.samples_in_training and not make("topn").samples_in_training
    torch.manual_seed(4)
    three_logits = torch.tensor([1.0, 0.0, -1.0])
    logits = torch.cat([three_logits, torch.full((E - 3,), float("-inf"))]).repeat(40_000, 1)
    weights, selected, log_prob = gate.select(logits, torch.softmax(logits, 1))
    assert (selected.sum(1) == 2).all() and torch.allclose(weights.sum(1), torch.ones(len(weights)))
    p = torch.softmax(three_logits, 0)

    def ordered(i, j):  # P(first i, then j) under Plackett-Luce
        return p[i] * p[j] / (1 - p[i])

    for i, j in ((0, 1), (0, 2), (1, 2)):
        rows = selected[:, i] & selected[:, j]
        exact = ordered(i, j) + ordered(j, i)
        assert abs(float(rows.float().mean()) - float(exact)) < 0.01
        drawn = log_prob[rows].exp()
        assert torch.isclose(drawn, ordered(i, j)).logical_or(torch.isclose(drawn, ordered(j, i))).all()
    eval_weights, eval_selected = gate.eval().select(logits, torch.softmax(logits, 1))
    assert eval_selected[:, :2].all() and not eval_selected[:, 2:].any()  # evaluation: the top 2
