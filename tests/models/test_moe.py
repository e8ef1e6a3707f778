"""Experts, gates and the mixture on real generated samples: selection, saving, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmoe.config import MODALITIES, DataConfig
from fedmoe.data.synthetic import generate
from fedmoe.models.experts import ARCHITECTURES, ExpertSpec, build_experts, default_expert_specs, expert_costs
from fedmoe.models.gates import GATES, TopNGate, load_balancing_loss, router_z_loss
from fedmoe.models.moe import MoE, batch_tensors
from fedmoe.registry import UnknownNameError


@pytest.fixture(scope="module")
def samples():
    return generate(DataConfig(), num_samples=96, seed=3)


def make_moe(samples, shapes, gate="topn", **gate_kw) -> MoE:
    torch.manual_seed(0)
    experts = build_experts(default_expert_specs(), shapes, 32)
    g = GATES.get(gate)(MoE.gate_in_dim(shapes), len(experts), **gate_kw)
    moe = MoE(experts, g, shapes, num_beams=64)
    moe.fit_standardiser(samples)
    return moe


def test_default_layout_and_counted_costs(samples, shapes):
    experts = build_experts(default_expert_specs(), shapes, 32)
    assert len(experts) == 15 and {e.modalities[0] for e in experts} == set(MODALITIES)
    costs = expert_costs(experts, shapes, samples.bits_per_sample)
    by_name = {e.name: c for e, c in zip(experts, costs)}
    for m in MODALITIES:  # wider experts cost more
        assert (by_name[f"{m}_s"].flops_per_sample < by_name[f"{m}_m"].flops_per_sample
                < by_name[f"{m}_l"].flops_per_sample)
        assert by_name[f"{m}_s"].input_bits == samples.bits_per_sample[m]
    # Hand count for the small GPS MLP: 6 -> 16 -> 16 -> 32, 2 FLOPs per multiply-add.
    assert by_name["gps_s"].flops_per_sample == 2 * (6 * 16 + 16 * 16 + 16 * 32)
    assert by_name["camera_l"].flops_per_sample < 5e6


def test_unselected_experts_are_not_computed(samples, shapes):
    moe = make_moe(samples, shapes, "softmax_hard").eval()
    calls = {e.name: 0 for e in moe.experts}
    for e in moe.experts:
        e.register_forward_hook(lambda mod, inp, out: calls.__setitem__(mod.name, calls[mod.name] + out.shape[0]))
    inputs, present, _ = batch_tensors(samples)
    out = moe(inputs, present)
    assert torch.equal(out.gate.selected.sum(1), torch.ones(len(samples), dtype=torch.long))  # one-hot
    # Each expert ran on exactly the rows that selected it, and never otherwise.
    per_expert = out.gate.selected.sum(0).tolist()
    assert [calls[e.name] for e in moe.experts] == per_expert == out.expert_samples.tolist()
    assert sum(per_expert) == len(samples)  # 1 of 15 experts per sample, not 15


def test_top_n_computes_n_experts_per_sample_and_weights_sum_to_one(samples, shapes):
    moe = make_moe(samples, shapes, "topn", top_n=5)
    inputs, present, _ = batch_tensors(samples)
    out = moe(inputs, present)
    assert torch.equal(out.gate.selected.sum(1), torch.full((len(samples),), 5))
    assert torch.allclose(out.gate.weights.sum(1), torch.ones(len(samples)), atol=1e-5)
    assert (out.gate.weights.detach()[~out.gate.selected] == 0).all()
    assert int(out.expert_samples.sum()) == 5 * len(samples)


@pytest.mark.parametrize("gate", ["dense", "topn", "softmax_hard", "gumbel_hard"])
def test_gradients_reach_the_gate_through_the_selection(samples, shapes, gate):
    moe = make_moe(samples, shapes, gate).train()
    inputs, present, labels = batch_tensors(samples)
    out = moe(inputs, present)
    torch.nn.functional.cross_entropy(out.tasks.beam_logits, labels["beam"]).backward()
    grads = [p.grad for p in moe.gate.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_hard_gates_are_exactly_one_hot_in_train_and_eval(samples, shapes):
    for name in ("gumbel_hard", "softmax_hard"):
        moe = make_moe(samples, shapes, name)
        inputs, present, _ = batch_tensors(samples)
        for mode in (moe.train, moe.eval):
            mode()
            w = moe(inputs, present).gate.weights.detach()
            assert set(w.unique().tolist()) <= {0.0, 1.0} and torch.equal(w.sum(1), torch.ones(len(samples)))


def test_missing_modality_still_runs_and_is_never_selected(samples, shapes):
    moe = make_moe(samples, shapes, "topn", top_n=5)
    reduced = samples.subset(slice(None))
    reduced.present = samples.present.copy()
    reduced.present[::2, MODALITIES.index("camera")] = False  # half the samples lack a camera
    reduced.present[1::4, MODALITIES.index("radar")] = False
    inputs, present, _ = batch_tensors(reduced)
    out = moe(inputs, present)
    camera = [i for i, e in enumerate(moe.experts) if e.modalities == ("camera",)]
    assert not out.gate.selected[::2][:, camera].any()
    assert torch.isfinite(out.tasks.beam_logits).all()
    nothing = reduced.subset(slice(0, 4))
    nothing.present = np.zeros_like(nothing.present)
    with pytest.raises(ValueError, match="no available expert"):
        moe(*batch_tensors(nothing)[:2])


def test_cost_vector_input_and_clear_errors(samples, shapes):
    moe = make_moe(samples, shapes, "topn", use_costs=True)
    inputs, present, _ = batch_tensors(samples)
    costs = torch.rand(len(samples), 15)
    assert moe(inputs, present, costs).gate.selected.shape == (len(samples), 15)
    with pytest.raises(ValueError, match="needs costs of shape"):
        moe(inputs, present)
    bad = dict(inputs, lidar=inputs["lidar"][:, :10])
    with pytest.raises(ValueError, match=r"lidar.*\(10,\).*expected \(64,\)"):
        make_moe(samples, shapes, "dense")(bad, present)
    with pytest.raises(UnknownNameError, match="gate 'sparse'.*dense"):
        GATES.get("sparse")
    with pytest.raises(UnknownNameError, match="expert architecture 'transformer'"):
        build_experts([ExpertSpec(name="x", architecture="transformer", modalities=("gps",))], shapes, 8)
    assert "conv2d" in ARCHITECTURES


def test_only_the_modalities_an_expert_or_the_gate_reads_are_standardised(samples, shapes):
    torch.manual_seed(0)
    experts = build_experts([ExpertSpec(name="g", architecture="gps_mlp", modalities=("gps",))], shapes, 32)
    gate = GATES.get("dense")(MoE.gate_in_dim(shapes), 1)
    moe = MoE(experts, gate, shapes, num_beams=64)
    assert moe.read_modalities == ("gps", "rf")  # the expert's GPS and the gate's GPS + RF
    inputs, present, _ = batch_tensors(samples)
    x, _ = moe.prepare_inputs(inputs, present)
    assert set(x) == {"gps", "rf"}
    # An unread modality costs nothing and cannot change the output; a read one is still checked.
    unread = dict(inputs, camera=torch.full_like(inputs["camera"], 255), radar=inputs["radar"] * np.nan)
    torch.testing.assert_close(moe(unread, present).tasks.beam_logits, moe(inputs, present).tasks.beam_logits)
    with pytest.raises(ValueError, match=r"'gps'.*\(2,\).*expected \(6,\)"):
        moe(dict(inputs, gps=inputs["gps"][:, :2]), present)


def test_aux_losses_on_hand_examples():
    logits = torch.tensor([[0.0, 0.0], [float("-inf"), 0.0]])
    assert float(router_z_loss(logits)) == pytest.approx((np.log(2) ** 2 + 0.0) / 2)
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert float(load_balancing_loss(probs, torch.tensor([[True, False], [False, True]]))) == pytest.approx(1.0)
    assert float(load_balancing_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[True, False]]))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="top_n"):
        TopNGate(4, 3, top_n=4)
