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
    the largest total utility ``Σ u_k`` of at most ``clients_per_round`` devices that meet
    ``T`` together (knapsack with a cardinality cap, exact: :func:`best_under_deadline`);
    ``u_k`` is ``n_k × loss_k`` (an Oort-style statistical utility: samples times the device's
    last reported training loss, the mean loss for devices not seen yet).
``oort``, ``power-of-choice``, ``age-weighted``
    baselines from the literature ([P005], [P006], [P007]) in
    :mod:`fedmoe.federated.selection_baselines` (registered when :mod:`fedmoe.federated` is imported, so
    before any of its modules is used), under the same deadline, blocks and cap, with
    their options in ``federated.selection_options``. They read what :class:`RoundDemand` holds
    besides the costs: samples, losses and who took part before (:class:`Participation`).

Then the selected devices share all resource blocks: ``min-latency`` gives them the
allocation of smallest round latency (:func:`~fedmoe.wireless.allocator.min_round_latency`,
exact); ``equal`` splits the blocks evenly (the plain-FedAvg baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from fedmoe.config import SelectionOptions, WirelessConfig
from fedmoe.registry import Registry
from fedmoe.wireless import fading as _fading
from fedmoe.wireless.allocator import UplinkInstance, min_round_latency, rb_needed, select_devices
from fedmoe.wireless.devices import DeviceProfiles, allocation_inputs, device_energy, device_latency
from fedmoe.wireless.ofdma import noise_psd_w_hz, uplink_rate


@dataclass(frozen=True)
class Participation:
    """Who took part in the rounds before round ``round`` (a device takes part in a round when its
    update is accepted there; one selected but failed or rejected did not).

    Attributes
    ----------
    round
        The round about to be planned, ``R >= 1``.
    last_round
        (K,) int: the last round before ``R`` in which the device took part, 0 if never.
    times
        (K,) int: the rounds in which it took part.
    """

    round: int
    last_round: np.ndarray
    times: np.ndarray

    def __post_init__(self) -> None:
        if int(self.round) != self.round or self.round < 1:
            raise ValueError(f"Participation.round must be an integer >= 1, got {self.round!r}")
        if np.shape(self.last_round) != np.shape(self.times) or np.ndim(self.times) != 1:
            raise ValueError(f"Participation.last_round {np.shape(self.last_round)} and times {np.shape(self.times)} "
                             "must be two arrays of one entry per device")
        if np.any(self.last_round < 0) or np.any(self.last_round >= self.round) or np.any(self.times < 0) \
                or np.any((self.times == 0) != (self.last_round == 0)):
            raise ValueError(f"Participation: last rounds must lie in [0, {self.round - 1}], be 0 exactly for the "
                             "devices that never took part, and counts must be >= 0")

    @classmethod
    def fresh(cls, k: int) -> "Participation":
        """Round 1 of ``k`` devices: nobody has taken part."""
        return cls(1, np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64))

    @classmethod
    def from_rounds(cls, k: int, server_round: int, rounds: Iterable[tuple[int, Iterable[int]]]) -> "Participation":
        """Before ``server_round``, from ``(round, devices that took part)`` pairs (e.g. the round records)."""
        last = np.zeros(k, dtype=np.int64)
        times = np.zeros(k, dtype=np.int64)
        for r, devices in rounds:
            idx = np.asarray(list(devices), dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= k):
                raise ValueError(f"round {r} names device {int(idx.max())} but there are {k} devices")
            last[idx] = np.maximum(last[idx], int(r))
            times[idx] += 1
        return cls(int(server_round), last, times)

    def after(self, devices: Iterable[int]) -> "Participation":
        """The next round's participation when ``devices`` take part in this one."""
        idx = np.asarray(list(devices), dtype=np.int64)
        last, times = self.last_round.copy(), self.times.copy()
        last[idx] = self.round
        times[idx] += 1
        return Participation(self.round + 1, last, times)

    @property
    def age(self) -> np.ndarray:
        """(K,) the age of update ``a_k = R - L_k`` ([P007]): rounds since the device's last update
        reached the server, counting the initial model as round 0 (so ``a_k = R`` if never)."""
        return self.round - self.last_round


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
        (K,) statistical utility ``n_k × loss_k`` (used by ``utility-weighted`` and ``oort``).
    available
        (K,) bool: devices that may be selected.
    samples, loss
        (K,) training samples and last reported training loss (the mean loss for devices not
        heard from yet); ``power-of-choice`` needs them. None: not known.
    history
        Who took part in earlier rounds (``oort``, ``age-weighted``); None: round 1, nobody yet.
    """

    profiles: DeviceProfiles
    flops: np.ndarray
    bits: np.ndarray
    utility: np.ndarray
    available: np.ndarray
    samples: np.ndarray | None = None
    loss: np.ndarray | None = None
    history: Participation | None = None

    @property
    def num_devices(self) -> int:
        return len(self.bits)

    def participation(self) -> Participation:
        """``history``, or round 1 with nobody having taken part; checked against ``K``."""
        hist = Participation.fresh(self.num_devices) if self.history is None else self.history
        if hist.times.shape != (self.num_devices,):
            raise ValueError(f"RoundDemand.history covers {hist.times.shape[0]} devices, the round has "
                             f"{self.num_devices}")
        return hist


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
    """Everything a policy may read: wireless settings, the per-round cap, the deadline, a seeded generator,
    the policies' options (``federated.selection_options``)."""

    wireless: WirelessConfig
    per_round: int
    deadline_s: float
    rng: np.random.Generator
    options: SelectionOptions = field(default_factory=SelectionOptions)

    @property
    def noise_psd_w_hz(self) -> float:
        ch = self.wireless.channel
        return noise_psd_w_hz(ch.noise_psd_dbm_hz, ch.noise_figure_db)


_CAPPED_CELLS_MAX = 250_000_000
"""Largest table (items × (cap + 1) × (capacity + 1) booleans) :func:`capped_knapsack` builds."""

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


def uplink_instance(demand: RoundDemand, idx: np.ndarray, ctx: SelectionContext) -> UplinkInstance:
    """The allocator's view of devices ``idx`` this round (:class:`~fedmoe.wireless.allocator.UplinkInstance`)."""
    return UplinkInstance.from_arrays(num_rb=ctx.wireless.uplink.num_resource_blocks,
                                      **_allocator_inputs(demand, idx, ctx))


def deadline_rb_needed(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    """(K,) ``n_k(T)``, the fewest resource blocks with which device ``k`` meets the deadline
    (:func:`~fedmoe.wireless.allocator.rb_needed`); -1 for devices that cannot or are unavailable."""
    need = np.full(demand.num_devices, -1, dtype=np.int64)
    cand = np.flatnonzero(demand.available)
    if cand.size:
        need[cand] = rb_needed(uplink_instance(demand, cand, ctx), ctx.deadline_s)
    return need


def capped_knapsack(values: np.ndarray, sizes: np.ndarray, capacity: int, cap: int) -> np.ndarray:
    """Indices of a set maximising ``Σ values`` with ``Σ sizes <= capacity`` and at most ``cap`` items.

    Exact dynamic programme over (items taken, capacity used): ``best[j, c]`` is the largest value of at
    most ``j`` items of total size ``<= c``, and item ``i`` updates ``best[j, c] = max(best[j, c],
    best[j - 1, c - s_i] + v_i)`` for all ``j, c`` at once. Only items of positive value and size in
    ``[1, capacity]`` can be taken. Of the items of one size at most ``min(cap, capacity // s)`` fit, and
    an optimal set may always use the most valuable ones of each size (swap an unchosen better item of
    the same size in), so the others are dropped first: the DP sees at most ``Σ_s min(cap, capacity / s)``
    items whatever ``K``. Cost ``O(items × cap × capacity)``.
    """
    values = np.asarray(values, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if values.shape != sizes.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and sizes {sizes.shape} must be two arrays of one entry per item")
    ok = np.flatnonzero((values > 0) & (sizes >= 1) & (sizes <= capacity))
    cap = min(int(cap), ok.size)
    if cap <= 0:
        return np.zeros(0, dtype=np.int64)
    keep = []
    for s in np.unique(sizes[ok]):
        same = ok[sizes[ok] == s]
        keep.append(same[np.argsort(-values[same], kind="stable")][: min(cap, capacity // int(s))])
    items = np.sort(np.concatenate(keep))
    if items.size * (cap + 1) * (capacity + 1) > _CAPPED_CELLS_MAX:
        raise ValueError(f"capped selection of {cap} of {items.size} devices over {capacity} resource blocks is too "
                         "large for the exact programme: lower federated.clients_per_round or the resource blocks")
    best = np.zeros((cap + 1, capacity + 1))
    take = np.zeros((items.size, cap + 1, capacity + 1), dtype=bool)
    for row, i in enumerate(items):
        s, v = int(sizes[i]), values[i]
        cand = best[:-1, : capacity + 1 - s] + v
        np.greater(cand, best[1:, s:], out=take[row, 1:, s:])
        np.maximum(best[1:, s:], cand, out=best[1:, s:])
    j, c = cap, capacity
    chosen = []
    for row in range(items.size - 1, -1, -1):
        if take[row, j, c]:
            chosen.append(items[row])
            j, c = j - 1, c - int(sizes[items[row]])
    return np.sort(np.array(chosen, dtype=np.int64))


def best_under_deadline(demand: RoundDemand, ctx: SelectionContext, weights: np.ndarray,
                        among: np.ndarray | None = None, cap: int | None = None,
                        capacity: int | None = None) -> np.ndarray:
    """The devices (of ``among``, default the available ones) of largest ``Σ weights`` that meet the deadline
    together within ``capacity`` resource blocks (default all), at most ``cap`` of them (default the per-round
    cap); exact. The knapsack of :func:`~fedmoe.wireless.allocator.select_devices` first; when its optimum
    holds more than ``cap`` devices, :func:`capped_knapsack` on the same ``n_k(T)``."""
    weights = np.asarray(weights, dtype=np.float64)
    cand = np.flatnonzero(demand.available) if among is None else np.asarray(among, dtype=np.int64)
    cap = ctx.per_round if cap is None else cap
    num_rb = ctx.wireless.uplink.num_resource_blocks if capacity is None else capacity
    if cand.size == 0 or cap <= 0 or num_rb <= 0:
        return np.zeros(0, dtype=np.int64)
    res = select_devices(deadline=ctx.deadline_s, num_rb=num_rb, weights=weights[cand],
                         **_allocator_inputs(demand, cand, ctx))
    if res.num_selected <= cap:
        return cand[res.selected]
    return cand[capped_knapsack(weights[cand], res.rb_needed, num_rb, cap)]


def _under_deadline(demand: RoundDemand, ctx: SelectionContext, weights: np.ndarray | None) -> np.ndarray:
    if weights is not None:
        return best_under_deadline(demand, ctx, weights)
    cand = np.flatnonzero(demand.available)
    if cand.size == 0:
        return cand
    res = select_devices(deadline=ctx.deadline_s, num_rb=ctx.wireless.uplink.num_resource_blocks,
                         **_allocator_inputs(demand, cand, ctx))
    chosen = cand[res.selected]
    if chosen.size > ctx.per_round:
        # any subset of a feasible set is feasible: keep those needing the fewest RBs (the greedy's own order)
        order = np.argsort(res.rb_needed[res.selected], kind="stable")
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


