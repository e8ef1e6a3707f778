"""Two-stage training: runs, reports diagnostics, and the cost term moves selection to cheaper experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmoe.config import DataConfig
from fedmoe.data.synthetic import generate
from fedmoe.models.experts import ExpertSpec, build_experts
from fedmoe.models.gates import GATES
from fedmoe.models.moe import MoE, batch_tensors
from fedmoe.training import TrainConfig, train

SPECS = [ExpertSpec(name="gps", architecture="mlp", modalities=("gps",), width=32),
         ExpertSpec(name="rf", architecture="mlp", modalities=("rf",), width=16),
         ExpertSpec(name="radar", architecture="conv2d", modalities=("radar",), width=4)]
COST = np.array([0.05, 0.05, 1.0], dtype=np.float32)


@pytest.fixture(scope="module")
def data():
    """Four beam sectors; GPS and RF replaced by noise, so only the (costly) radar expert is informative."""
    s = generate(DataConfig(), num_samples=1200, seed=5)
    s.labels["beam"] = s.labels["beam"] // 16
    rng = np.random.default_rng(0)
    for m in ("gps", "rf"):
        s.inputs[m] = rng.standard_normal(s.inputs[m].shape).astype(np.float32)
    return s


def make_moe(data, gate: str = "gumbel_hard") -> MoE:
    torch.manual_seed(0)
    shapes = data.input_shapes
    experts = build_experts(SPECS, shapes, 32)
    return MoE(experts, GATES.get(gate)(MoE.gate_in_dim(shapes), 3, use_costs=True), shapes, 4)


def run(data, lam: float, **options):
    moe = make_moe(data)
    costs = np.tile(COST, (len(data), 1))
    cfg = TrainConfig(stage1_epochs=3, stage2_epochs=4, cost_weight=lam, batch_size=128, balance_weight=0.0,
                      **options)
    return train(moe, data, cfg, costs)


def test_reports_and_diagnostics(data):
    reports = run(data, 0.0)
    assert [r.stage for r in reports] == [1, 1, 1, 2, 2, 2, 2]
    last = reports[-1]
    assert 0.0 <= last.accuracy <= 1.0
    assert len(last.usage) == 3 and sum(last.usage) == pytest.approx(1.0)  # hard gate: one expert per sample
    assert np.isfinite(last.gate_entropy) and set(last.dropout_accuracy) >= {"gps", "radar"}


def test_cost_term_moves_selection_to_cheaper_experts(data):
    free, charged = run(data, 0.0)[-1], run(data, 5.0)[-1]
    assert free.usage[2] > 0.5  # without a price the informative radar expert wins
    assert charged.usage[2] < free.usage[2] - 0.3  # with one, the gate moves to the cheap experts
    assert charged.mean_cost < free.mean_cost


def test_stage_two_computes_only_the_selected_experts(data):
    """Count the rows each expert is computed on during stage II training: one expert per sample."""
    moe = make_moe(data)
    rows = {"train": 0}

    def count(module, args, output):
        if module.training:
            rows["train"] += output.shape[0]

    for e in moe.experts:
        e.register_forward_hook(count)
    cfg = TrainConfig(stage1_epochs=0, stage2_epochs=2, batch_size=128)
    train(moe, data, cfg, np.tile(COST, (len(data), 1)))
    assert rows["train"] == 2 * len(data)  # two epochs, one expert per sample, nothing else computed


@pytest.mark.parametrize("mode", ["each", "subsets"])
def test_both_stage_one_modes_learn(data, mode):
    moe = make_moe(data)
    reports = train(moe, data, TrainConfig(stage1_epochs=6, stage2_epochs=0, stage1_mode=mode, batch_size=64))
    assert [r.stage for r in reports] == [1] * 6 and reports[-1].loss < reports[0].loss
    inputs, present, labels = batch_tensors(data)
    with torch.no_grad():
        alone = {moe.experts[int(i)].name: o for (r, o), i in zip(moe.eval().forward_each(inputs, present), range(3))}
    radar = float((alone["radar"].beam_logits.argmax(1) == labels["beam"]).float().mean())
    noise = float((alone["gps"].beam_logits.argmax(1) == labels["beam"]).float().mean())
    if mode == "each":  # every expert was trained to predict alone: the informative one does, noise does not
        assert radar > 0.55 and noise < 0.4, (radar, noise)
    else:  # the uniform average of the experts learns
        assert reports[-1].accuracy > 0.4


def test_straight_through_estimator_is_still_available(data):
    free = run(data, 0.0, gate_estimator="straight_through")[-1]
    assert sum(free.usage) == pytest.approx(1.0) and 0.0 <= free.accuracy <= 1.0


@pytest.fixture(scope="module")
def cue_data():
    """GPS informative except on a flagged half of the samples, where it is noise; the flag is a cheap cue (RF)."""
    s = generate(DataConfig(), num_samples=1600, seed=6)
    s.labels["beam"] = s.labels["beam"] // 16
    s.labels.pop("beam_power_db")
    rng = np.random.default_rng(1)
    flagged = rng.random(len(s)) < 0.5
    s.inputs["gps"][flagged] = rng.standard_normal((int(flagged.sum()), 6)).astype(np.float32) * 30
    s.inputs["rf"] = np.stack([flagged.astype(np.float32), rng.standard_normal(len(s)).astype(np.float32)], 1)
    s.conditions["flagged"] = flagged
    return s


def test_oracle_routing_sends_the_costly_expert_where_the_cue_says_it_pays(cue_data):
    """The gate regresses ℓ_i + λ C_i; the radar expert should serve the flagged (GPS-useless) samples only."""
    share = {}
    for sign in (1.0, -1.0):
        moe = make_moe(cue_data)
        cfg = TrainConfig(stage1_epochs=6, stage2_epochs=6, cost_weight=0.5, batch_size=128,
                          gate_estimator="oracle_routing", routing_loss="topk_miss",
                          score={"top_k": 1})
        costs = np.tile(COST, (len(cue_data), 1))
        if sign < 0:  # a deliberate bug: the gate learns the objective with the wrong sign
            import fedmoe.training as training
            real = training.oracle_routing_loss

            def flipped(model, inputs, present, labels, c, cfg_, *rest):
                cfg_neg = cfg_.model_copy(update={"cost_weight": -cfg_.cost_weight})
                return real(model, inputs, present, labels, c, cfg_neg, *rest)
            training.oracle_routing_loss = flipped
            try:
                train(moe, cue_data, cfg, costs)
            finally:
                training.oracle_routing_loss = real
        else:
            reports = train(moe, cue_data, cfg, costs)
            assert [r.stage for r in reports] == [1] * 6 + [2] * 6
        inputs, present, _ = batch_tensors(cue_data)
        with torch.no_grad():
            selected = moe.eval()(inputs, present, torch.from_numpy(costs)).gate.selected.numpy()
        flagged = cue_data.conditions["flagged"]
        share[sign] = (selected[flagged, 2].mean(), selected[~flagged, 2].mean(), selected[~flagged, 0].mean())
    on_flagged, on_clean, gps_on_clean = share[1.0]
    assert on_flagged > 0.8 and on_clean < 0.2 and gps_on_clean > 0.6, share
    assert not (share[-1.0][0] > 0.8 and share[-1.0][1] < 0.2), share


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return ({n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("experts.") and p.grad is not None},
            {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("gate.") and p.grad is not None})


def test_held_out_rows_teach_the_gate_only(cue_data):
    """routing_holdout: the experts' gradient ignores the held-out rows, the gate's comes only from them."""
    from fedmoe.training import oracle_routing_loss, routing_holdout_mask

    cfg = TrainConfig(gate_estimator="oracle_routing", routing_loss="task", routing_holdout=0.3, cost_weight=0.5)
    held = routing_holdout_mask(len(cue_data), cfg, seed=4)
    assert held.tolist() == routing_holdout_mask(len(cue_data), cfg, seed=4).tolist()  # fixed by the seed
    assert 0.25 < held.mean() < 0.35 and not routing_holdout_mask(len(cue_data), TrainConfig(), 4).any()
    rows = np.arange(200)
    moe = make_moe(cue_data)
    moe.fit_standardiser(cue_data)
    inputs, present, labels = batch_tensors(cue_data, rows)
    costs = torch.from_numpy(np.tile(COST, (len(rows), 1)))
    mask = torch.from_numpy(held[rows])
    expert_g, gate_g = _grads(moe, oracle_routing_loss(moe, inputs, present, labels, costs, cfg, mask))
    other = {k: v.clone() for k, v in labels.items()}
    other["beam"][mask] = (other["beam"][mask] + 1) % 4  # change only what the held-out rows say
    expert_g2, gate_g2 = _grads(moe, oracle_routing_loss(moe, inputs, present, other, costs, cfg, mask))
    assert all(torch.allclose(expert_g[n], expert_g2[n]) for n in expert_g)
    assert any(not torch.allclose(gate_g[n], gate_g2[n]) for n in gate_g)
    # a batch with no held-out row teaches the gate nothing
    _, gate_none = _grads(moe, oracle_routing_loss(moe, inputs, present, labels, costs, cfg, torch.zeros_like(mask)))
    assert all(float(g.abs().sum()) == 0.0 for g in gate_none.values())


@pytest.mark.parametrize("from_stage1", [False, True])
def test_routing_from_stage_one_trains_the_gate_there(cue_data, from_stage1):
    moe = make_moe(cue_data)
    before = {n: p.detach().clone() for n, p in moe.gate.named_parameters()}
    cfg = TrainConfig(stage1_epochs=1, stage2_epochs=0, batch_size=128, gate_estimator="oracle_routing",
                      routing_loss="task", routing_from_stage1=from_stage1)
    train(moe, cue_data, cfg, np.tile(COST, (len(cue_data), 1)))
    moved = any(not torch.equal(before[n], p) for n, p in moe.gate.named_parameters())
    assert moved == from_stage1


def test_cached_routing_targets_train_the_gate_exactly_as_per_batch_losses(cue_data):
    """Frozen experts: stage II on :func:`routing_targets` computed once moves the gate exactly as the
    per-batch expert losses do, and leaves every other parameter where it was."""
    from fedmoe.training import caches_routing_targets, make_optimiser, routing_targets, stage2_epoch

    data = cue_data.subset(np.arange(900))
    # no GPS (column 3 of MODALITIES) on some rows: the GPS expert is unavailable there (and for a whole batch)
    data.present[:300, 3] = False
    cfg = TrainConfig(batch_size=128, gate_estimator="oracle_routing", routing_loss="task", cost_weight=0.5,
                      routing_trains_experts=False)
    assert caches_routing_targets(cfg) and not caches_routing_targets(cfg.model_copy(
        update={"routing_trains_experts": True}))
    costs = np.tile(COST, (len(data), 1))
    trained = []
    for cached in (False, True):
        moe = make_moe(data)
        moe.fit_standardiser(data)
        before = {n: p.detach().clone() for n, p in moe.named_parameters()}
        targets = routing_targets(moe, data, cfg, batch_size=256) if cached else None
        if cached:
            assert torch.isinf(targets[:300, 0]).all() and torch.isfinite(targets[300:]).all()
        opt, sched = make_optimiser(list(moe.parameters()), cfg, 8)
        stage2_epoch(moe, data, costs, cfg, opt, sched, np.random.default_rng(3), lambda _s: 1.0, 0,
                     targets=targets)
        after = dict(moe.named_parameters())
        assert all(torch.equal(before[n], p) for n, p in after.items() if not n.startswith("gate."))
        assert any(not torch.equal(before[n], p) for n, p in after.items() if n.startswith("gate."))
        trained.append({n: p.detach().clone() for n, p in after.items() if n.startswith("gate.")})
    assert all(torch.allclose(trained[0][n], trained[1][n], atol=1e-6) for n in trained[0])


def test_cached_routing_targets_need_frozen_experts(cue_data):
    from fedmoe.training import oracle_routing_loss

    moe = make_moe(cue_data)
    inputs, present, labels = batch_tensors(cue_data, np.arange(10))
    with pytest.raises(ValueError, match="frozen experts"):
        oracle_routing_loss(moe, inputs, present, labels, None, TrainConfig(gate_estimator="oracle_routing"),
                            targets=torch.zeros(10, 3))


def test_training_without_diagnostics_trains_the_same_model(data):
    """``diagnostics=False`` (the centralised reference) only skips the per-epoch evaluation."""
    models, reports = [], []
    for diagnostics in (True, False):
        moe = make_moe(data)
        cfg = TrainConfig(stage1_epochs=2, stage2_epochs=2, cost_weight=0.5, batch_size=128)
        reports.append(train(moe, data, cfg, np.tile(COST, (len(data), 1)), diagnostics=diagnostics))
        models.append(moe.state_dict())
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    assert [r.loss for r in reports[0]] == [r.loss for r in reports[1]]
    assert all(np.isfinite(r.accuracy) for r in reports[0]) and all(np.isnan(r.accuracy) for r in reports[1])
