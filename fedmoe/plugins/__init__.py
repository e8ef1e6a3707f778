"""fedmoe's radio, selection, virtual clock and reply validation for any Flower app (``docs/plugins.md``).

Wrappers around any Flower strategy and any model:

:class:`~fedmoe.plugins.selection.WirelessSelection`
    selects and allocates each round's devices on a simulated uplink (fedmoe's selection policies and
    exact resource-block allocator) and sends each node its resource blocks, rate and deadline;
:class:`~fedmoe.plugins.validation.ValidatedStrategy`
    checks every training reply against what was sent before the strategy aggregates it;
:class:`~fedmoe.plugins.clock.VirtualClock`
    the rounds' latency (max) and energy (sum) on the simulated radio, with running totals;
:class:`~fedmoe.plugins.exchange.AdaptivePolling`
    ``Grid.send_and_receive`` with pulls spaced by what a pull costs (not every 0.1 s or 3 s);
:mod:`fedmoe.plugins.compression`
    compressed updates (unbiased stochastic quantisation, top-k with error feedback): ``compress_arrays`` on the
    device, ``ValidatedStrategy(..., compressor=...)`` or ``decompress_arrays`` on the server;
:mod:`fedmoe.plugins.costs`
    training FLOPs of any torch model from an example input, update bits of an ``ArrayRecord``, and
    device profiles from link gains, powers and compute speeds.

Names are loaded on first use, so ``from fedmoe.plugins import VirtualClock`` does not import torch or
Flower's server.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "WirelessSelection": "fedmoe.plugins.selection",
    "node_order": "fedmoe.plugins.selection",
    "ValidatedStrategy": "fedmoe.plugins.validation",
    "VirtualClock": "fedmoe.plugins.clock",
    "ClockTick": "fedmoe.plugins.clock",
    "AdaptivePolling": "fedmoe.plugins.exchange",
    "adaptive_polling": "fedmoe.plugins.exchange",
    "training_flops": "fedmoe.plugins.costs",
    "update_bits": "fedmoe.plugins.costs",
    "device_profiles": "fedmoe.plugins.costs",
    "buffer_names": "fedmoe.plugins.costs",
    "COMPRESSORS": "fedmoe.plugins.compression",
    "make_compressor": "fedmoe.plugins.compression",
    "compress_arrays": "fedmoe.plugins.compression",
    "decompress_arrays": "fedmoe.plugins.compression",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fedmoe.plugins' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return __all__
