"""Resource-aware rounds: the channel of a round, device selection by named policy, and
resource-block allocation with the exact allocator (:mod:`fedmoe.wireless.allocator`).

A federated round on device ``k`` costs (``docs/architecture.md``, "The wireless and device layer";
[P001] eq. 3–5 for the rate)::

    T_k = F_k / f_k + b_k / R_k(n_k),        E_k = e_k F_k + P_k b_k / R_k(n_k)

with ``F_k`` the FLOPs of its local training, ``b_k`` the bits of its update and
``R_k(n_k) = n_k B_min log2(1 + P_k h_k / (N0 n_k B_min))`` the rate of its ``n_k``
resource blocks. The data were sensed before the round, so no sensing cost is charged;
the broadcast of the global model on the downlink is not charged either (it is the same
for every policy). The round is synchronous: it lasts ``max_k T_k`` over the selected
devices, and that is what the virtual clock advances by.

Small-scale fading is redrawn every round (block fading); path loss and shadowing stay.

Selection policies (``federated.selection``; add one with ``SELECTION_POLICIES.register``):

``all``
    every device (needs at least one resource block each).
``random``
    ``clients_per_round`` devices uniformly at random.
``deadline-max-devices``
    the most devices that can meet the deadline ``T`` together
    (:func:`~fedmoe.wireless.allocator.select_devices`, exact), at most
    ``clients_per_round`` of them (those needing the fewest resource blocks).
``utility-weighted``
    the largest total utility ``Σ u_k`` that meets ``T`` (knapsack, exact); ``u_k`` is
    ``n_k × loss_k`` (an Oort-style statistical utility: samples times the device's last
    reported training loss, the mean loss for devices not seen yet), at most
    ``clients_per_round`` devices (the highest utilities).

Then the selected devices share all resource blocks: ``min-latency`` gives them the
allocation of smallest round latency (:func:`~fedmoe.wireless.allocator.min_round_latency`,
exact); ``equal`` splits the blocks evenly (the plain-FedAvg baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from fedmoe.config import WirelessConfig
from fedmoe.registry import Registry
from fedmoe.wireless import fading as _fading
from fedmoe.wireless.allocator import min_round_latency, select_devices
from fedmoe.wireless.devices import DeviceProfiles, allocation_inputs, device_energy, device_latency
from fedmoe.wireless.ofdma import noise_psd_w_hz, uplink_rate


@dataclass
class RoundDemand:
    """What the server expects each device (of ``K``) to spend this round, and who may take part.

    Attributes
    ----------
    profiles
        The devices with this round's channel gains.
    flops, bits
        (K,) estimated training FLOPs and update bits.
    utility
        (K,) statistical utility (used by ``utility-weighted``).
    available
        (K,) bool: devices that may be selected.
    """

    profiles: DeviceProfiles
    flops: np.ndarray
    bits: np.ndarray
    utility: np.ndarray
    available: np.ndarray


@dataclass
class RoundPlan:
    """The selected devices, their resource blocks and rates, and the expected round costs."""

    devices: np.ndarray  # (S,) device indices
    num_rb: np.ndarray  # (S,)
    rate_bps: np.ndarray  # (S,)
    latency_s: np.ndarray  # (S,) expected T_k
    energy_j: np.ndarray  # (S,) expected E_k
    note: str = ""

    @property
    def round_latency_s(self) -> float:
        return float(self.latency_s.max()) if self.latency_s.size else 0.0


@dataclass
class SelectionContext:
    """Everything a policy may read: wireless settings, the per-round cap, the deadline, a seeded generator."""

    wireless: WirelessConfig
    per_round: int
    deadline_s: float
    rng: np.random.Generator

    @property
    def noise_psd_w_hz(self) -> float:
        ch = self.wireless.channel
        return noise_psd_w_hz(ch.noise_psd_dbm_hz, ch.noise_figure_db)


SelectionPolicy = Callable[[RoundDemand, SelectionContext], np.ndarray]
"""``policy(demand, ctx) -> device indices`` (a subset of the available ones)."""

SELECTION_POLICIES: Registry[SelectionPolicy] = Registry("selection policy")


def round_profiles(base: DeviceProfiles, wireless: WirelessConfig, rng: np.random.Generator) -> DeviceProfiles:
    """``base`` with a fresh small-scale fading draw: ``h = h_base / g_base × g_new`` (block fading)."""
    g_new = _fading.fading_power(rng, wireless.channel.fading, base.los, wireless.channel.rician_k_db)
    g_old = np.where(base.fading > 0, base.fading, 1.0)
    return replace(base, gain=base.gain / g_old * g_new, fading=g_new)


def round_costs(profiles: DeviceProfiles, flops: np.ndarray, bits: np.ndarray,
                rate_bps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T_k`` and ``E_k`` of a training round (module docstring); ``inf`` when ``R_k = 0 < b_k``.

    :func:`fedmoe.wireless.devices.device_latency` and ``device_energy`` with no modality sensed.
    """
    unsensed = _no_sensing(profiles)
    return (device_latency(profiles, flops, bits, rate_bps, unsensed),
            device_energy(profiles, flops, bits, rate_bps, unsensed))


def _no_sensing(profiles: DeviceProfiles) -> np.ndarray:
    """The (K, M) modality mask of a training round: nothing is sensed (the data already exist)."""
    return np.zeros(profiles.sensing_time_s.shape, dtype=bool)


def _allocator_inputs(demand: RoundDemand, idx: np.ndarray, ctx: SelectionContext) -> dict:
    prof = demand.profiles.subset(idx)
    return allocation_inputs(prof, ctx.wireless, demand.bits[idx], demand.flops[idx], _no_sensing(prof))


def _under_deadline(demand: RoundDemand, ctx: SelectionContext, weights: np.ndarray | None) -> np.ndarray:
    cand = np.flatnonzero(demand.available)
    if cand.size == 0:
        return cand
    res = select_devices(deadline=ctx.deadline_s, num_rb=ctx.wireless.uplink.num_resource_blocks,
                         weights=None if weights is None else weights[cand], **_allocator_inputs(demand, cand, ctx))
    chosen = cand[res.selected]
    if chosen.size > ctx.per_round:
        if weights is None:  # keep the devices needing the fewest resource blocks (the greedy's own order)
            order = np.argsort(res.rb_needed[res.selected], kind="stable")
        else:
            order = np.argsort(-weights[chosen], kind="stable")
        chosen = chosen[np.sort(order[:ctx.per_round])]
    return chosen


@SELECTION_POLICIES.register("all")
def select_all(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    return np.flatnonzero(demand.available)


@SELECTION_POLICIES.register("random")
def select_random(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    cand = np.flatnonzero(demand.available)
    k = min(ctx.per_round, cand.size)
    return np.sort(ctx.rng.choice(cand, size=k, replace=False)) if k else cand


@SELECTION_POLICIES.register("deadline-max-devices")
def select_deadline_max_devices(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    return _under_deadline(demand, ctx, None)


@SELECTION_POLICIES.register("utility-weighted")
def select_utility_weighted(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    return _under_deadline(demand, ctx, np.asarray(demand.utility, dtype=np.float64))


def allocate(demand: RoundDemand, devices: np.ndarray, ctx: SelectionContext, allocation: str) -> RoundPlan:
    """Share the resource blocks among ``devices`` (``min-latency`` or ``equal``) and price the round."""
    devices = np.asarray(devices, dtype=np.int64)
    num_rb = ctx.wireless.uplink.num_resource_blocks
    if devices.size == 0:
        empty = np.zeros(0)
        return RoundPlan(devices, empty.astype(np.int64), empty, empty, empty, "no device selected")
    if devices.size > num_rb:
        raise ValueError(f"{devices.size} devices selected but the uplink has only {num_rb} resource blocks "
                         "(one each at least): lower federated.clients_per_round or use another selection policy")
    if allocation == "equal":
        rb = np.full(devices.size, num_rb // devices.size, dtype=np.int64)
        note = "equal split"
    elif allocation == "min-latency":
        res = min_round_latency(num_rb=num_rb, **_allocator_inputs(demand, devices, ctx))
        if not res.feasible:
            raise ValueError(f"resource allocation failed: {res.reason}")
        rb = np.asarray(res.rb, dtype=np.int64)
        note = "min round latency"
    else:
        raise ValueError(f"unknown allocation {allocation!r}; known: min-latency, equal")
    prof = demand.profiles.subset(devices)
    rate = uplink_rate(rb, ctx.wireless.uplink.resource_block_hz, prof.tx_power_w, prof.gain, ctx.noise_psd_w_hz)
    latency, energy = round_costs(prof, demand.flops[devices], demand.bits[devices], rate)
    return RoundPlan(devices, rb, np.asarray(rate, dtype=np.float64), latency, energy, note)


def plan_round(demand: RoundDemand, ctx: SelectionContext, policy: str, allocation: str) -> RoundPlan:
    """Select with ``SELECTION_POLICIES[policy]``, then :func:`allocate`; a plan with nobody in it says why
    in its ``note`` (:func:`why_nobody`)."""
    chosen = np.asarray(SELECTION_POLICIES.get(policy)(demand, ctx), dtype=np.int64)
    if chosen.size and not demand.available[chosen].all():
        raise ValueError(f"selection policy {policy!r} chose unavailable devices")
    plan = allocate(demand, np.unique(chosen), ctx, allocation)
    if plan.devices.size == 0:
        plan.note = f"no device selected: {why_nobody(demand, ctx, policy)}"
    return plan


def why_nobody(demand: RoundDemand, ctx: SelectionContext, policy: str = "") -> str:
    """Why a selection may be empty, in one line: no device available, or none that could finish within the
    deadline even alone with every resource block (naming the fastest and what it would need), or the
    policy's own choice although some could."""
    cand = np.flatnonzero(demand.available)
    if cand.size == 0:
        return "no device is available this round"
    num_rb = ctx.wireless.uplink.num_resource_blocks
    prof = demand.profiles.subset(cand)
    rate = uplink_rate(np.full(cand.size, num_rb), ctx.wireless.uplink.resource_block_hz, prof.tx_power_w,
                       prof.gain, ctx.noise_psd_w_hz)
    alone, _ = round_costs(prof, demand.flops[cand], demand.bits[cand], np.asarray(rate, dtype=np.float64))
    can = int((alone <= ctx.deadline_s).sum())
    if can:
        return (f"policy {policy!r} chose nobody, although {can} of {cand.size} available devices could meet "
                f"the deadline of {ctx.deadline_s:g} s alone")
    best = int(np.argmin(alone))
    rate_best = float(np.asarray(rate, dtype=np.float64)[best])
    return (f"none of the {cand.size} available devices can meet the deadline of {ctx.deadline_s:g} s even alone "
            f"with all {num_rb} resource blocks: the fastest (device {int(cand[best])}) needs {alone[best]:.3g} s "
            f"({demand.bits[cand[best]]:.3g} bits at {rate_best:.3g} bit/s after {demand.flops[cand[best]]:.3g} "
            f"FLOPs); raise the deadline or shrink the update")
