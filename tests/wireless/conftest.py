"""Fixtures shared by the wireless tests: realistic random allocation instances."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from fedmoe.config import ChannelConfig, WirelessConfig
from fedmoe.wireless.devices import allocation_inputs, sample_device_profiles


def random_instance(rng: np.random.Generator, num_devices: int, idle_fraction: float = 0.0,
                    min_snr_db: float | None = None, channel: ChannelConfig | None = None) -> dict[str, Any]:
    """Allocator inputs of a drop: an upload of 0.1-2 Mbit per device (a fraction
    ``idle_fraction`` with nothing to send) after sensing and 1e8-2e9 FLOPs of local work;
    ``min_snr_db`` admits only devices with that per-RB SNR."""
    cfg = WirelessConfig(channel=channel or ChannelConfig())
    prof = sample_device_profiles(cfg, num_devices, rng, min_snr_db=min_snr_db)
    bits = rng.uniform(1e5, 2e6, num_devices)
    bits[rng.random(num_devices) < idle_fraction] = 0.0
    return allocation_inputs(prof, cfg, bits, rng.uniform(1e8, 2e9, num_devices))


@pytest.fixture
def make_instance() -> Callable[..., dict[str, Any]]:
    """Factory: ``make_instance(num_devices, seed=0, idle_fraction=0.0, min_snr_db=None, channel=None)``
    -> allocator keyword arguments."""

    def _make(num_devices: int, seed: int = 0, idle_fraction: float = 0.0, min_snr_db: float | None = None,
              channel: ChannelConfig | None = None) -> dict[str, Any]:
        return random_instance(np.random.default_rng(seed), num_devices, idle_fraction, min_snr_db, channel)

    return _make
