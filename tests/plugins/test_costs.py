"""Cost helpers for any model: training FLOPs, update bits, device profiles; against hand counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmoe.plugins.costs import buffer_names, device_profiles, training_flops, update_bits


def test_training_flops_of_an_mlp_are_three_times_its_matmuls(digits_app):
    net = digits_app["task"].Net()
    per_sample = 2 * 64 * 32 + 2 * 32 * 10  # two Linear layers at 2 FLOPs per multiply-add
    assert training_flops(net, torch.zeros(4, 64), samples=100, epochs=2) == 3 * 2 * 100 * per_sample


def test_training_flops_take_a_tuple_or_a_dict_input():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 5), nn.Linear(4, 5)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    class Named(Two):
        def forward(self, inputs):
            return super().forward(inputs["x"], inputs["y"])

    assert training_flops(Two(), (torch.zeros(2, 3), torch.zeros(2, 4))) == 3 * (2 * 3 * 5 + 2 * 4 * 5)
    assert training_flops(Named(), {"x": torch.zeros(2, 3), "y": torch.zeros(2, 4)}) == 3 * 70
    with pytest.raises(TypeError, match="torch.Tensor"):
        training_flops(Two(), [1, 2])  # not tensors


def test_update_bits_count_each_array_at_its_width(digits_app, initial_arrays):
    state = digits_app["task"].Net().state_dict()
    by_hand = sum(v.numel() * v.element_size() * 8 for v in state.values())
    assert update_bits(initial_arrays) == by_hand == update_bits(state)
    assert update_bits({"a": np.zeros((3, 2), dtype=np.float16), "n": np.zeros((), dtype=np.int64)}) == 6 * 16 + 64


def test_buffer_names_are_the_batchnorm_statistics(digits_app):
    assert buffer_names(digits_app["task"].Net()) == {"layers.1.running_mean", "layers.1.running_var",
                                                     "layers.1.num_batches_tracked"}


def test_device_profiles_give_the_shannon_rate_by_hand():
    from fedmoe.config import WirelessConfig
    from fedmoe.wireless.devices import equal_share_rate

    prof = device_profiles(gain_db=[-100.0, -120.0], tx_power_dbm=20.0, compute_flops=[1e9, 2e9])
    cfg = WirelessConfig()
    ch, up = cfg.channel, cfg.uplink
    n0 = 10 ** ((ch.noise_psd_dbm_hz + ch.noise_figure_db - 30) / 10)
    bandwidth = up.num_resource_blocks // 2 * up.resource_block_hz
    snr = 0.1 * 10 ** (np.array([-100.0, -120.0]) / 10) / (n0 * bandwidth)
    np.testing.assert_allclose(equal_share_rate(prof, cfg), bandwidth * np.log2(1 + snr), rtol=1e-9)
    np.testing.assert_array_equal(prof.compute_flops, [1e9, 2e9])


@pytest.mark.parametrize("kwargs, match", [
    ({"gain_db": [], "tx_power_dbm": 20, "compute_flops": 1e9}, "non-empty"),
    ({"gain_db": [-90, -100], "tx_power_dbm": [20, 20, 20], "compute_flops": 1e9}, "tx_power_dbm has shape"),
    ({"gain_db": [-90], "tx_power_dbm": 20, "compute_flops": 0}, "compute_flops must be > 0"),
    ({"gain_db": [np.nan], "tx_power_dbm": 20, "compute_flops": 1e9}, "gain_db must be finite"),
])
def test_bad_profiles_get_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        device_profiles(**kwargs)
