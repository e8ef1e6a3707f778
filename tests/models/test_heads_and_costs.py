"""Task heads and their loss; the per-device expert cost matrices of the resource-aware loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmoe.config import WirelessConfig
from fedmoe.models.device_costs import ExpertFootprint, expert_cost_matrices, selection_latency_energy
from fedmoe.models.heads import TaskHeads, TaskWeights, task_loss
from fedmoe.wireless.devices import sample_device_profiles


def test_heads_shapes_and_weighted_loss():
    heads = TaskHeads(16, num_beams=8)
    out = heads(torch.randn(5, 16))
    assert out.beam_logits.shape == (5, 8) and out.pathloss_db.shape == (5,) and out.next_position.shape == (5, 3)
    labels = {"beam": torch.tensor([0, 1, 2, 3, 4]), "pathloss_db": torch.full((5,), 100.0),
              "next_position": torch.zeros(5, 3)}
    beam_only, parts = task_loss(out, labels, TaskWeights())
    assert set(parts) == {"beam"}
    both, parts = task_loss(out, labels, TaskWeights(beam=1.0, next_position=2.0))
    assert both.item() == pytest.approx(parts["beam"] + 2.0 * parts["next_position"], rel=1e-5)
    labels["pathloss_db"][:] = float("nan")  # unknown labels are skipped, never NaN
    value, parts = task_loss(out, labels, TaskWeights(beam=0.0, pathloss=1.0))
    assert torch.isfinite(value) and parts["pathloss"] == 0.0
    with pytest.raises(ValueError, match="nothing to learn"):
        task_loss(out, labels, TaskWeights(beam=0.0))


def test_costs_follow_the_channel_and_the_footprint():
    profiles = sample_device_profiles(WirelessConfig(), 6, np.random.default_rng(0))
    rate = np.array([1e6, 1e6, 1e7, 1e7, 1e5, 0.0])
    fps = [ExpertFootprint(1e5, 192, ("gps",)), ExpertFootprint(5e6, 24_576, ("camera",)),
           ExpertFootprint(5e6, 24_576 + 192, ("camera", "gps"))]
    m = expert_cost_matrices(fps, profiles, rate)
    assert m.cost.shape == (6, 3) and (m.cost >= 0).all() and (m.cost <= 1).all()
    assert (m.cost[:5, 1] > m.cost[:5, 0]).all()  # the camera costs more than GPS wherever there is a link
    assert (m.cost[:, 2] >= m.cost[:, 1]).all()  # reading one more modality never costs less
    # Hand check of the latency of the GPS expert on device 0: sensing + compute + upload.
    t = profiles.sensing_time_s[0, 3] + 1e5 / profiles.compute_flops[0] + 192 / 1e6
    assert m.latency_s[0, 0] == pytest.approx(t)
    # A device with no uplink cannot afford anything: cost 1; a faster link is cheaper.
    assert np.all(m.cost[5] == 1.0)
    assert m.latency_s[2, 1] < m.latency_s[0, 1]
    with pytest.raises(ValueError, match="latency_weight"):
        expert_cost_matrices(fps, profiles, rate, latency_weight=2.0)
    with pytest.raises(ValueError, match="unknown modalities"):
        expert_cost_matrices([ExpertFootprint(1.0, 1.0, ("sonar",))], profiles, rate)


def test_a_selection_senses_and_sends_each_modality_once():
    profiles = sample_device_profiles(WirelessConfig(), 3, np.random.default_rng(1))
    rate = np.array([1e6, 2e6, 5e5])
    bits = {"camera": 24_576, "gps": 192}
    fps = [ExpertFootprint(1e5, 192, ("gps",)), ExpertFootprint(5e6, 24_576, ("camera",)),
           ExpertFootprint(7e6, 24_576 + 192, ("camera", "gps"))]
    m = expert_cost_matrices(fps, profiles, rate)
    selected = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    device = np.array([0, 1, 2, 0])
    lat, eng = selection_latency_energy(selected, device, fps, profiles, rate, bits)
    # One expert: exactly its entry of the cost matrices; nothing selected: nothing spent.
    assert lat[0] == pytest.approx(m.latency_s[0, 0]) and eng[1] == pytest.approx(m.energy_j[1, 1])
    assert lat[3] == 0.0 and eng[3] == 0.0
    # Two experts sharing the camera: the camera is sensed and sent once, both are computed.
    t = (profiles.sensing_time_s[2, 0] + profiles.sensing_time_s[2, 3] + 12e6 / profiles.compute_flops[2]
         + (24_576 + 192) / 5e5)
    assert lat[2] == pytest.approx(t)
    assert lat[2] < m.latency_s[2, 1] + m.latency_s[2, 2]
    with pytest.raises(ValueError, match="selected must have shape"):
        selection_latency_energy(selected[:, :2], device, fps, profiles, rate, bits)
