"""The channel of a round: random block fading (:func:`fedmoe.federated.selection.round_profiles`), or a
measured trace read at the round's start on the virtual clock (:mod:`fedmoe.wireless.trace`); with mobility
(:mod:`fedmoe.wireless.mobility`), the fading is drawn on the devices where they are at the round's start."""

from __future__ import annotations

import numpy as np

from fedmoe.config import WirelessConfig
from fedmoe.federated.selection import round_profiles
from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.mobility import Mobility
from fedmoe.wireless.trace import ChannelTrace, traced_profiles


def round_channel(base: DeviceProfiles, wireless: WirelessConfig, rng: np.random.Generator,
                  trace: ChannelTrace | None = None, clock_s: float = 0.0, mobility: Mobility | None = None,
                  fading: bool = True) -> tuple[DeviceProfiles, np.ndarray]:
    """The devices with this round's channel gains, and the (K,) devices the channel leaves selectable.

    Without ``trace``: the devices moved to virtual clock ``clock_s`` (the round's start) when there is a
    ``mobility`` (else ``base``), with a fresh fading draw (``fading``; else their gains as they are), every
    device selectable. With ``trace``: the trace at ``clock_s``; a device blocked then is not selectable when
    the trace's ``blocked_outage`` says so. ``rng`` is not used with a trace or without fading; a trace and
    a mobility together are refused (the trace is the measured channel, which moving would not change).
    """
    if trace is None:
        moved = base if mobility is None else mobility.at(clock_s)
        profiles = round_profiles(moved, wireless, rng) if fading else moved
        return profiles, np.ones(len(base), dtype=bool)
    if mobility is not None:
        raise ValueError("round_channel: a trace gives the measured channel, which mobility would not change; "
                         "use one or the other")
    profiles, blocked = traced_profiles(base, trace, clock_s)
    return profiles, ~blocked if trace.blocked_outage else np.ones(len(base), dtype=bool)
