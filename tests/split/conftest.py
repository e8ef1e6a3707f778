"""What the split-learning tests share: a two-device split (or SplitFed) configuration."""

from __future__ import annotations

from fedmoe.config import deep_merge
from tests.federated.conftest import tiny_config

TWO = {"partition": {"num_devices": 2}, "federated": {"clients_per_round": 2}}


def split_config(**sections):
    """The tiny test configuration in mode ``split`` with two devices, both chosen every round;
    ``sections`` override."""
    return tiny_config(**deep_merge({**TWO, "mode": "split"}, sections))
