"""Modality experts on real generated samples: shapes, counted FLOPs, input bits, errors, gradients."""

from __future__ import annotations

import pydantic
import pytest
import torch

from fedmoe.config import MODALITIES, DataConfig
from fedmoe.data.synthetic import generate
from fedmoe.models.cost import count_flops
from fedmoe.models.experts import (
    ARCHITECTURES,
    DEFAULT_WIDTHS,
    Expert,
    ExpertSpec,
    build_experts,
    default_expert_specs,
    expert_costs,
)
from fedmoe.registry import UnknownNameError

OUT = 16

# architecture -> modalities it is exercised on
CASES: dict[str, tuple[str, ...]] = {
    "camera_resnet": ("camera",),
    "lidar_conv1d": ("lidar",),
    "radar_conv": ("radar",),
    "gps_mlp": ("gps",),
    "rf_mlp": ("rf",),
    "subset_mlp": ("gps", "rf"),
    "subset_fusion": ("gps", "rf", "radar"),
    "conv2d": ("radar",),
    "conv1d": ("lidar",),
    "mlp": ("gps", "rf"),
}


@pytest.fixture(scope="module")
def samples():
    return generate(DataConfig(), num_samples=12, seed=0)


@pytest.fixture(scope="module")
def inputs(samples):
    """Raw tensors: camera stays uint8 (the expert scales it), the rest float32."""
    return {m: torch.from_numpy(a) for m, a in samples.inputs.items()}


def build(arch: str, shapes, width: int = 8, name: str | None = None) -> Expert:
    torch.manual_seed(0)
    return ARCHITECTURES.get(arch)(CASES[arch], shapes, OUT, width, name=name or f"{arch}_test")


def test_cases_cover_every_registered_architecture():
    assert set(CASES) == set(ARCHITECTURES.names())


@pytest.mark.parametrize("arch", sorted(CASES))
def test_builds_and_runs_on_generated_samples(arch, shapes, inputs):
    expert = build(arch, shapes)
    assert expert.modalities == CASES[arch] and expert.out_dim == OUT and expert.architecture == arch
    out = expert(inputs)
    assert out.shape == (len(inputs["gps"]), OUT) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert expert({m: inputs[m] for m in CASES[arch]}).shape == out.shape  # reads only its modalities


def test_subset_fusion_costs_its_encoders_plus_the_head(shapes, inputs):
    fused = build("subset_fusion", shapes, width=8)
    alone = [ARCHITECTURES.get(a)((m,), shapes, OUT, 8) for m, a in (("gps", "gps_mlp"), ("rf", "rf_mlp"),
                                                                     ("radar", "radar_conv"))]
    parts = sum(count_flops(e, {e.modalities[0]: inputs[e.modalities[0]][:4]}) for e in alone)
    assert count_flops(fused, {m: inputs[m][:4] for m in fused.modalities}) == parts + 2 * 3 * OUT * OUT
    with pytest.raises(ValueError, match="inputs \\['radar'\\] missing"):
        fused({"gps": inputs["gps"], "rf": inputs["rf"]})
    with pytest.raises(ValueError, match="modalities repeat"):
        ARCHITECTURES.get("subset_fusion")(("gps", "gps"), shapes, OUT, 8)


def test_subsets_get_an_architecture_that_can_read_them(shapes):
    specs = default_expert_specs(1, (), subsets=[("gps", "rf"), ("gps", "rf", "camera")])
    assert [(s.name, s.architecture) for s in specs] == [("gps+rf_s", "subset_mlp"),
                                                         ("gps+rf+camera_s", "subset_fusion")]
    assert len(build_experts(specs, shapes, OUT)) == 2


def test_camera_uint8_is_scaled_inside_the_expert(shapes, inputs):
    expert = build("camera_resnet", shapes)
    raw = inputs["camera"]
    assert raw.dtype == torch.uint8
    torch.testing.assert_close(expert({"camera": raw}), expert({"camera": raw.float() / 255.0}))


def test_camera_expert_keeps_a_spatial_grid(shapes):
    expert = build("camera_resnet", shapes, width=8)
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in expert.modules())  # 32x32 -> 4x4 by strides
    head = [m for m in expert.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.in_features == 2 * 8 * 4 * 4  # 2w channels on a 4x4 grid, no global pooling
    big = ARCHITECTURES.get("camera_resnet")(("camera",), {"camera": (3, 64, 96)}, OUT, 4)
    assert big({"camera": torch.zeros(2, 3, 64, 96, dtype=torch.uint8)}).shape == (2, OUT)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_flops_are_counted_and_grow_with_width(arch, shapes, samples):
    narrow, wide = build(arch, shapes, width=8), build(arch, shapes, width=16)
    (c_narrow, c_wide) = expert_costs([narrow, wide], shapes, samples.bits_per_sample)
    assert 0 < c_narrow.flops_per_sample < c_wide.flops_per_sample
    assert 0 < c_narrow.params < c_wide.params
    assert c_narrow.input_bits == sum(samples.bits_per_sample[m] for m in CASES[arch])
    assert c_narrow.name == narrow.name


def test_flops_match_hand_counts(shapes):
    # 2 FLOPs per multiply-add, element-wise ops not counted.
    w = 32
    gps = ARCHITECTURES.get("gps_mlp")(("gps",), shapes, OUT, w)
    assert count_flops(gps, {"gps": torch.randn(5, 6)}) == 2 * (6 * w + w * w + w * OUT)
    pair = ARCHITECTURES.get("subset_mlp")(("gps", "rf"), shapes, OUT, w)
    assert count_flops(pair, {"gps": torch.randn(3, 6), "rf": torch.randn(3, 2)}) == 2 * ((6 + 2) * w + w * w + w * OUT)
    # lidar (64,): conv5/2 1->w (32 outputs), conv5/2 w->w (16 outputs), Linear(16w, OUT)
    w = 8
    lidar = ARCHITECTURES.get("lidar_conv1d")(("lidar",), shapes, OUT, w)
    assert count_flops(lidar, {"lidar": torch.randn(4, 64)}) == 2 * (5 * w * 32 + w * 5 * w * 16 + 16 * w * OUT)
    # a plain module: one Linear(6, 32) then Linear(32, OUT)
    tiny = Expert("tiny", ("gps",), shapes, OUT, torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(),
                                                                     torch.nn.Linear(32, OUT)))
    assert count_flops(tiny, {"gps": torch.randn(7, 6)}) == 2 * (6 * 32 + 32 * OUT)


def test_input_bits_and_legacy_two_argument_form(shapes, samples):
    experts = build_experts(default_expert_specs(2, subsets=[("gps", "rf")]), shapes, OUT)
    costs = expert_costs(experts, shapes, samples.bits_per_sample)
    assert costs == expert_costs(experts, bits_per_sample=samples.bits_per_sample)  # shapes from the experts
    for e, c in zip(experts, costs):
        assert c.input_bits == sum(samples.bits_per_sample[m] for m in e.modalities)
    bits = samples.bits_per_sample
    assert {c.name: c.input_bits for c in costs}["gps+rf_s"] == bits["gps"] + bits["rf"]
    with pytest.raises(ValueError, match="bits_per_sample lacks"):
        expert_costs(experts, shapes, {"gps": 1})


def test_default_specs_fifteen_experts_three_per_modality(shapes, samples):
    specs = default_expert_specs()
    assert len(specs) == 15
    for m in MODALITIES:
        mine = [s for s in specs if s.modalities == (m,)]
        assert [s.name for s in mine] == [f"{m}_s", f"{m}_m", f"{m}_l"]
        assert mine[0].width < mine[1].width < mine[2].width
    assert len(default_expert_specs(1)) == 5
    assert len(default_expert_specs(3, subsets=[("gps", "rf")])) == 18
    with pytest.raises(ValueError, match="num_per_modality"):
        default_expert_specs(4)
    experts = build_experts(specs, shapes, 32)
    costs = {c.name: c for c in expert_costs(experts, shapes, samples.bits_per_sample)}
    for m in MODALITIES:
        assert costs[f"{m}_s"].flops_per_sample < costs[f"{m}_m"].flops_per_sample < costs[f"{m}_l"].flops_per_sample
    assert costs["camera_l"].flops_per_sample < 3.5e6  # CPU-sized: well under 5 MFLOPs
    assert max(c.flops_per_sample for c in costs.values()) == costs["camera_l"].flops_per_sample
    assert DEFAULT_WIDTHS["camera_resnet"][-1] == 24


def test_wrong_input_shape_names_expert_modality_and_shapes(shapes, inputs):
    expert = build("radar_conv", shapes, name="radar_x")
    with pytest.raises(ValueError, match=r"expert 'radar_x'.*'radar'.*\(2, 16, 16\).*expected \(2, 16, 32\)"):
        expert({"radar": inputs["radar"][..., :16]})
    pair = build("subset_mlp", shapes, name="pair")
    with pytest.raises(ValueError, match=r"expert 'pair'.*'rf'.*\(3,\).*expected \(2,\)"):
        pair({"gps": inputs["gps"], "rf": torch.zeros(len(inputs["rf"]), 3)})
    with pytest.raises(ValueError, match=r"expert 'pair'.*'rf' missing"):
        pair({"gps": inputs["gps"]})
    with pytest.raises(ValueError, match="expert 'pair'.*batch sizes"):
        pair({"gps": inputs["gps"], "rf": inputs["rf"][:3]})
    # A shape the architecture cannot read fails at build time, naming the expert.
    with pytest.raises(ValueError, match=r"expert 'cam'.*'lidar' must be 3-D.*\(64,\)"):
        ARCHITECTURES.get("camera_resnet")(("lidar",), shapes, OUT, 8, name="cam")
    with pytest.raises(ValueError, match="expert 'g'.*exactly one modality"):
        ARCHITECTURES.get("gps_mlp")(("gps", "rf"), shapes, OUT, 8, name="g")
    with pytest.raises(ValueError, match="expert 'sub'.*'radar' must be a 1-D vector"):
        ARCHITECTURES.get("subset_mlp")(("gps", "radar"), shapes, OUT, 8, name="sub")


def test_unknown_architecture_and_bad_specs(shapes):
    spec = ExpertSpec(name="x", architecture="transformer", modalities=("gps",))
    with pytest.raises(UnknownNameError, match="expert architecture 'transformer'.*camera_resnet.*subset_mlp"):
        build_experts([spec], shapes, 8)
    with pytest.raises(pydantic.ValidationError, match="unknown modalities"):
        ExpertSpec(name="x", architecture="gps_mlp", modalities=("sonar",))
    with pytest.raises(ValueError, match="unique"):
        build_experts(default_expert_specs(1) * 2, shapes, 8)
    with pytest.raises(ValueError, match="no input shape"):
        build_experts(default_expert_specs(1), {"gps": (6,)}, 8)


def test_gradient_reaches_every_expert_parameter(shapes, inputs):
    torch.manual_seed(0)
    experts = build_experts(default_expert_specs(subsets=[("gps", "rf")]), shapes, 32)
    x = {m: (t if m == "camera" else (t - t.mean(0)) / (t.std(0) + 1e-6)) for m, t in inputs.items()}
    loss = sum(e(x).pow(2).mean() for e in experts)
    loss.backward()
    for e in experts:
        for pname, p in e.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{e.name}.{pname} got no gradient"
