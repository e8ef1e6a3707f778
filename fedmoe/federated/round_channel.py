"""The channel of a round: random block fading (:func:`fedmoe.federated.selection.round_profiles`), or a
measured trace read at the round's start on the virtual clock (:mod:`fedmoe.wireless.trace`)."""

from __future__ import annotations

import numpy as np

from fedmoe.config import WirelessConfig
from fedmoe.federated.selection import round_profiles
from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.trace import ChannelTrace, traced_profiles


def round_channel(base: DeviceProfiles, wireless: WirelessConfig, rng: np.random.Generator,
                  trace: ChannelTrace | None = None, clock_s: float = 0.0) -> tuple[DeviceProfiles, np.ndarray]:
    """The devices with this round's channel gains, and the (K,) devices the channel leaves selectable.

    Without ``trace``: a fresh fading draw, every device selectable. With it: the trace at virtual
    clock ``clock_s`` (the round's start); a device blocked then is not selectable when the trace's
    ``blocked_outage`` says so. ``rng`` is not used with a trace.
    """
    if trace is None:
        return round_profiles(base, wireless, rng), np.ones(len(base), dtype=bool)
    profiles, blocked = traced_profiles(base, trace, clock_s)
    return profiles, ~blocked if trace.blocked_outage else np.ones(len(base), dtype=bool)
