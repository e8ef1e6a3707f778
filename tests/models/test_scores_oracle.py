"""Beam scores, beam objectives, the per-sample oracle and supervised routing: hand values and exact references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from fedmoe.config import TaskWeights
from fedmoe.models.heads import beam_loss
from fedmoe.models.oracle import ExpertTable, oracle_at_cost, oracle_choice, picked
from fedmoe.models.scores import beam_scores, by_condition, summarise_scores

# Three samples, four beams. Rankings: row 0 -> 2,1,0,3; row 1 -> 0,3,1,2; row 2 -> 3,2,1,0.
LOGITS = torch.tensor([[0.1, 0.5, 0.9, -1.0], [2.0, 0.0, -1.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
BEST = np.array([1, 2, 3])
POWER = np.array([[-5.0, 0.0, -2.0, -30.0], [-1.0, -9.0, 0.0, -4.0], [-8.0, -6.0, -3.0, 0.0]])


def test_scores_by_hand():
    s = beam_scores(LOGITS, BEST, POWER, k=2)
    assert s["top1"].tolist() == [0, 0, 1]
    assert s["topk"].tolist() == [1, 0, 1]          # row 1 sweeps beams 0 and 3, misses 2
    assert s["power_ratio_db"].tolist() == [0.0, -1.0, 0.0]  # row 1: best of beams 0 (-1 dB) and 3 (-4 dB)
    one = beam_scores(LOGITS, BEST, POWER, k=1)
    assert one["power_ratio_db"].tolist() == [-2.0, -1.0, 0.0]
    assert np.isnan(beam_scores(LOGITS, BEST, None, k=2)["power_ratio_db"]).all()
    with pytest.raises(ValueError, match="k .* integer in \\[1, 4\\]"):
        beam_scores(LOGITS, BEST, POWER, k=5)


def test_scores_by_condition_leave_out_nan():
    blocked = np.array([False, True, True])
    out = summarise_scores({"top1": np.array([1.0, 0.0, 1.0]), "power_ratio_db": np.array([0.0, np.nan, -3.0])},
                           blocked)
    assert out["top1"] == {"all": pytest.approx(2 / 3), "los": 1.0, "blocked": 0.5}
    assert out["power_ratio_db"] == {"all": -1.5, "los": 0.0, "blocked": -3.0}
    assert math.isnan(by_condition(np.array([1.0]), np.array([True]))["los"])


def _labels():
    return {"beam": torch.from_numpy(BEST), "beam_power_db": torch.from_numpy(POWER).float()}


def test_beam_objectives_by_hand():
    logp = torch.log_softmax(LOGITS, dim=1).numpy()
    ce = beam_loss(LOGITS, _labels(), TaskWeights())
    np.testing.assert_allclose(ce.numpy(), -logp[np.arange(3), BEST], rtol=1e-6)

    soft = beam_loss(LOGITS, _labels(), TaskWeights(beam_objective="soft_power", soft_power_db=3.0))
    q = 10 ** (POWER / 3.0)
    q /= q.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soft.numpy(), -(q * logp).sum(axis=1), rtol=1e-5)

    topk = beam_loss(LOGITS, _labels(), TaskWeights(beam_objective="topk_set", objective_k=2))
    best_two = np.argsort(-POWER, axis=1)[:, :2]
    p = np.exp(logp)
    np.testing.assert_allclose(topk.numpy(), -np.log(np.take_along_axis(p, best_two, axis=1).sum(axis=1)), rtol=1e-5)


def test_rows_without_powers_fall_back_to_cross_entropy():
    labels = _labels()
    labels["beam_power_db"][1] = float("nan")
    ce = beam_loss(LOGITS, labels, TaskWeights())
    for objective in ("soft_power", "topk_set"):
        loss = beam_loss(LOGITS, labels, TaskWeights(beam_objective=objective))
        assert torch.isfinite(loss).all()
        assert float(loss[1]) == pytest.approx(float(ce[1]))
    with pytest.raises(ValueError, match="needs the beam_power_db label"):
        beam_loss(LOGITS, {"beam": labels["beam"]}, TaskWeights(beam_objective="soft_power"))


def test_oracle_choice_is_the_brute_force_argmin_with_ties_to_the_cheaper():
    rng = np.random.default_rng(3)
    loss = rng.integers(0, 3, (200, 3)).astype(float)  # many ties
    cost = rng.random((200, 3))
    for lam in (0.0, 0.5, 4.0):
        choice = oracle_choice(loss, cost, lam)
        for n in range(200):
            obj = loss[n] + lam * cost[n]
            tied = [i for i in range(3) if obj[i] <= obj.min() + 1e-12]
            assert choice[n] == min(tied, key=lambda i: (cost[n, i], i))
    loss[0, :] = np.inf
    with pytest.raises(ValueError, match="no expert it can use"):
        oracle_choice(loss, cost, 1.0)


def _table(n: int, seed: int) -> ExpertTable:
    rng = np.random.default_rng(seed)
    cost = np.sort(rng.random((n, 3)), axis=1) * np.array([0.1, 1.0, 1.0])
    loss = np.sort(rng.random((n, 3)), axis=1)[:, ::-1] * 2  # the costlier, the better
    hit = (loss < 1.0).astype(float)
    return ExpertTable(loss.copy(), {"topk": hit}, cost)


@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_at_a_budget_is_optimal_for_its_cost_against_a_milp(seed):
    """Every oracle point solves: min Σ ℓ  s.t.  one expert per sample, Σ C ≤ its own total cost (HiGHS)."""
    table = _table(30, seed)
    n, e = table.loss.shape
    for budget in (0.05, 0.2, 0.4):
        res = oracle_at_cost(table, budget)
        assert res["within_budget"] and res["mean_cost"] <= budget + 1e-12
        one_each = LinearConstraint(np.kron(np.eye(n), np.ones(e)), 1, 1)
        spend = LinearConstraint(table.cost.reshape(1, -1), -np.inf, res["mean_cost"] * n + 1e-9)
        ref = milp(table.loss.ravel(), constraints=[one_each, spend], integrality=np.ones(n * e), bounds=Bounds(0, 1))
        assert ref.success
        assert picked(table.loss, res["choice"]).sum() == pytest.approx(ref.fun, abs=1e-7)


def test_oracle_at_cost_takes_the_smallest_lambda_within_budget():
    table = _table(50, 4)
    generous = oracle_at_cost(table, 10.0)
    assert generous["lambda"] == 0.0
    np.testing.assert_array_equal(generous["choice"], oracle_choice(table.loss, table.cost, 0.0))
    tight = oracle_at_cost(table, 0.0)
    assert not tight["within_budget"]
    # Costs and scores move the right way as the budget shrinks.
    points = [oracle_at_cost(table, b) for b in (0.6, 0.3, 0.1)]
    assert [p["mean_cost"] for p in points] == sorted((p["mean_cost"] for p in points), reverse=True)
    assert points[0]["topk"] >= points[-1]["topk"]
    # Brute force on a tiny table: no choice within the budget has a lower total loss.
    small = _table(5, 7)
    res = oracle_at_cost(small, 0.3)
    best = min(sum(small.loss[i, c] for i, c in enumerate(combo))
               for combo in itertools.product(range(3), repeat=5)
               if sum(small.cost[i, c] for i, c in enumerate(combo)) <= res["mean_cost"] * 5 + 1e-12)
    assert picked(small.loss, res["choice"]).sum() == pytest.approx(best)


def test_expert_table_is_each_expert_alone_and_marks_unavailable_ones():
    from fedmoe.config import MODALITIES, DataConfig
    from fedmoe.data.synthetic import generate
    from fedmoe.models.experts import ExpertSpec, build_experts
    from fedmoe.models.gates import GATES
    from fedmoe.models.heads import task_loss
    from fedmoe.models.moe import MoE, batch_tensors
    from fedmoe.models.oracle import expert_table

    s = generate(DataConfig(), num_samples=120, seed=2)
    s.present[:40, MODALITIES.index("radar")] = False  # the radar expert cannot serve these rows
    torch.manual_seed(0)
    specs = [ExpertSpec(name="gps", architecture="mlp", modalities=("gps",), width=16),
             ExpertSpec(name="radar", architecture="conv2d", modalities=("radar",), width=4)]
    moe = MoE(build_experts(specs, s.input_shapes, 16), GATES.get("gumbel_hard")(MoE.gate_in_dim(s.input_shapes), 2),
              s.input_shapes, 64).eval()
    moe.fit_standardiser(s)
    cost = np.tile([0.1, 0.9], (len(s), 1))
    tasks = TaskWeights(beam_objective="soft_power")
    table = expert_table(moe, s, cost, tasks, top_k=3, batch_size=50)  # batches cut across the unavailable rows
    inputs, present, labels = batch_tensors(s)
    with torch.no_grad():
        x, _ = moe.prepare_inputs(inputs, present)
        for i, expert in enumerate(moe.experts):
            out = moe.heads(expert({m: x[m] for m in expert.modalities}))
            want = task_loss(out, labels, tasks, reduction="none")[0].numpy()
            rows = slice(40, None) if i == 1 else slice(None)
            np.testing.assert_allclose(table.loss[rows, i], want[rows], rtol=1e-4, atol=1e-5)
            hit = beam_scores(out.beam_logits, s.labels["beam"], s.labels["beam_power_db"], 3)["topk"]
            np.testing.assert_array_equal(table.scores["topk"][rows, i], hit[rows])
    assert np.isinf(table.loss[:40, 1]).all() and np.isnan(table.scores["topk"][:40, 1]).all()
    assert (oracle_choice(table.loss, table.cost, 0.0)[:40] == 0).all()
