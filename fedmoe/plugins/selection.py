r"""Wireless-aware device selection and resource allocation around any Flower strategy.

Each round, before the wrapped strategy picks its nodes, :class:`WirelessSelection` prices every
connected device on a simulated OFDMA uplink and keeps those that fit ([P001] eq. 3–5)::

    R_k(n_k) = n_k B log2(1 + P_k h_k / (N0 n_k B)),
    T_k = F_k / f_k + b_k / R_k(n_k),        E_k = e_k F_k + P_k b_k / R_k(n_k)

with ``n_k`` the device's resource blocks of ``B`` Hz, ``h_k`` its channel gain (small-scale fading
redrawn every round), ``P_k`` its power, ``f_k`` and ``e_k`` its compute speed and energy per FLOP,
``F_k`` its training FLOPs and ``b_k`` its update bits (``cost_fn``). A selection policy of
:data:`fedmoe.federated.selection.SELECTION_POLICIES` (the most devices that meet the deadline, the
largest utility that meets it, random, all) picks the devices, the exact allocator shares the resource
blocks (``min-latency``) or splits them evenly (``equal``), and the virtual clock
(:class:`~fedmoe.plugins.clock.VirtualClock`) advances by ``max_k T_k`` of the devices that replied.

**Nodes and devices.** Device ``i`` is the ``i``-th row of ``profiles``. By default the connected nodes,
in increasing node id, are devices 0, 1, … (:func:`node_order`; new nodes take the next free rows;
nodes beyond the profiles are left out with a warning): no QUERY handler is needed on the clients. Pass
``device_of(node_ids) -> {node id: device}`` for your own mapping.

**The wrapped strategy** sees a Grid listing only the selected nodes, and, if it is one of Flower's
sampling strategies (``fraction_train``, ``min_train_nodes``, ``min_available_nodes``), these are set
for the call so that it takes exactly those nodes and never waits for more than were selected.
Its messages then get each node's share of the uplink in their config.

**Nobody selected.** A round whose selection is empty sends nothing, logs the reason every round
(:func:`fedmoe.federated.selection.why_nobody`: e.g. the deadline that even the best device misses with
every resource block) and keeps it in :attr:`WirelessSelection.empty_rounds`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmoe.config import SelectionOptions, WirelessConfig
from fedmoe.federated.dynamics import DeviceDynamics
from fedmoe.federated.round_channel import round_channel
from fedmoe.federated.selection import (
    SELECTION_POLICIES,
    Participation,
    RoundDemand,
    RoundPlan,
    SelectionContext,
    plan_round,
)
from fedmoe.plugins.clock import VirtualClock
from fedmoe.plugins.costs import per_device, update_bits
from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.mobility import Mobility
from fedmoe.wireless.trace import ChannelTrace

log = logging.getLogger(__name__)

__all__ = ["DEADLINE_KEY", "NUM_RB_KEY", "RATE_KEY", "SelectedNodes", "WirelessSelection", "deadline_table",
           "node_order", "takes_exactly"]

NUM_RB_KEY = "num-rb"
"""Config key: the resource blocks the node was given this round."""
RATE_KEY = "rate-bps"
"""Config key: the node's uplink rate this round, bit/s."""
DEADLINE_KEY = "deadline-s"
"""Config key: the round's deadline, s."""

CostFn = Callable[[int, ArrayRecord], "tuple[Any, Any]"]
"""``cost_fn(server_round, arrays) -> (flops, bits)``: each device's training FLOPs and update bits this
round, as one number for all or one per device (row of the profiles)."""

DeviceMap = Callable[[Sequence[int]], Mapping[int, int]]
"""``device_of(node_ids) -> {node id: device}`` (rows of the profiles)."""


def deadline_table(wireless: WirelessConfig | None = None, sizes_mb: Sequence[float] = (0.1, 1.0, 10.0),
                   deadlines_s: Sequence[float] = (0.05, 0.5, 5.0, 50.0), num_devices: int = 10_000,
                   seed: int = 0) -> list[dict[str, Any]]:
    """How many devices of a cell could upload an update of each size within each deadline, alone with every
    resource block (an upper bound: devices that share the band are slower): one row per size, with the
    median time ``b / R_k(N)`` and the share of devices with ``b / R_k(N) <= T`` per deadline.

    Devices are dropped as :func:`fedmoe.wireless.devices.sample_device_profiles` drops them (TR 38.901
    path loss, shadowing and fading in ``wireless``'s cell); training time is left out.
    """
    from fedmoe.wireless.devices import sample_device_profiles
    from fedmoe.wireless.ofdma import noise_psd_w_hz, uplink_rate

    w = wireless if wireless is not None else WirelessConfig()
    prof = sample_device_profiles(w, num_devices, np.random.default_rng(seed))
    n0 = noise_psd_w_hz(w.channel.noise_psd_dbm_hz, w.channel.noise_figure_db)
    rate = np.asarray(uplink_rate(np.full(num_devices, w.uplink.num_resource_blocks), w.uplink.resource_block_hz,
                                  prof.tx_power_w, prof.gain, n0), dtype=np.float64)
    rows = []
    for size in sizes_mb:
        t = size * 8e6 / rate
        rows.append({"size_mb": float(size), "median_s": float(np.median(t)),
                     "share": {float(d): float(np.mean(t <= d)) for d in deadlines_s}})
    return rows


def node_order(node_ids: Sequence[int], known: Mapping[int, int], num_devices: int) -> dict[int, int]:
    """The default mapping: nodes already mapped keep their device; every new node, in increasing id,
    takes the lowest free device row below ``num_devices`` (nodes left over get none)."""
    out = {int(n): int(d) for n, d in known.items()}
    free = iter(sorted(set(range(num_devices)) - set(out.values())))
    for node in sorted(int(n) for n in node_ids):
        if node not in out:
            device = next(free, None)
            if device is None:
                break
            out[node] = device
    return out


class SelectedNodes:
    """The Grid a wrapped strategy or rule sees: ``grid`` (if any), listing only ``node_ids``."""

    def __init__(self, node_ids: Sequence[int], grid: Grid | None = None) -> None:
        self._grid = grid
        self._ids = [int(n) for n in node_ids]

    def get_node_ids(self) -> list[int]:
        return list(self._ids)

    def __getattr__(self, name: str) -> Any:
        if self._grid is None:
            raise AttributeError(f"SelectedNodes without a Grid has no {name!r}")
        return getattr(self._grid, name)


_SAMPLING = ("fraction_train", "min_train_nodes", "min_available_nodes")


@contextlib.contextmanager
def takes_exactly(strategy: Strategy, count: int) -> Iterator[None]:
    """For the duration of one ``configure_train``: a Flower sampling strategy takes all ``count`` nodes
    it is shown and waits for no more (its own settings are put back afterwards)."""
    saved = {name: getattr(strategy, name) for name in _SAMPLING if hasattr(strategy, name)}
    try:
        for name, value in (("fraction_train", 1.0), ("min_train_nodes", count), ("min_available_nodes", count)):
            if name in saved:
                setattr(strategy, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(strategy, name, value)


class WirelessSelection(Strategy):
    r"""Any Flower strategy, on a simulated wireless uplink: selection, resource blocks, virtual clock.

    Every round (module docstring): redraw the fading, price each connected device
    (:math:`F_k`, :math:`b_k` from ``cost_fn``), select with ``policy`` under ``deadline_s`` and
    ``per_round``, allocate the resource blocks (``allocation``), let the wrapped strategy configure
    the selected nodes, and add to each node's config its ``"num-rb"``, ``"rate-bps"`` and
    ``"deadline-s"``. After the wrapped strategy aggregates, the virtual clock advances by the
    planned :math:`\max_k T_k` of the devices that replied (:math:`\sum_k E_k` for energy), or by
    what the replies report (``clock_source="reported"``), and the returned metrics get the clock's
    ``"round-latency-s"``, ``"round-energy-j"``, ``"clock-s"`` and ``"total-energy-j"``.

    The policies read each device's last reported weight (``"num-examples"``, :math:`n_k`) and training
    loss (``loss_key``, :math:`\ell_k`; the mean over the devices heard from for the others, 1 before any),
    and the rounds in which it replied (``age-weighted``, ``oort``'s staleness): ``utility-weighted`` weighs
    device :math:`k` by :math:`n_k \ell_k`.

    Config keys the clients may read: the wrapped strategy's, plus ``"num-rb"``, ``"rate-bps"`` and
    ``"deadline-s"`` (a client is free to ignore them; the clock charges the plan either way).

    Parameters
    ----------
    base : Strategy
        The strategy that trains and aggregates (FedAvg, FedProx, FedAdam, FedMedian, Krum, your own).
    profiles : DeviceProfiles
        One row per device: channel gain, power, compute speed, energy per FLOP
        (:func:`fedmoe.plugins.costs.device_profiles` builds them from plain numbers;
        :func:`fedmoe.wireless.devices.sample_device_profiles` drops them in a TR 38.901 cell).
    wireless : WirelessConfig, optional
        Uplink (resource blocks, their width), noise and fading; default ``WirelessConfig()``
        (100 blocks of 180 kHz at 28 GHz).
    policy : str, default "deadline-max-devices"
        A name in :data:`~fedmoe.federated.selection.SELECTION_POLICIES`.
    allocation : {"min-latency", "equal"}
        How the selected devices share the resource blocks.
    deadline_s : float, default 10.0
        The round deadline ``T`` of the deadline policies, s. At 28 GHz in a 250 m cell an update of
        a few hundred kB needs seconds: ``docs/plugins.md`` has the numbers.
    per_round : int, optional
        The most devices a round may take (default: as many as there are resource blocks).
    cost_fn : callable, optional
        ``cost_fn(server_round, arrays) -> (flops, bits)`` (one value or one per device). Default:
        ``flops`` per device and the bits of ``arrays`` (:func:`fedmoe.plugins.costs.update_bits`).
    flops : float or array_like, default 0.0
        The default ``cost_fn``'s training FLOPs per device and round
        (:func:`fedmoe.plugins.costs.training_flops`).
    device_of : callable, optional
        ``device_of(node_ids) -> {node id: device}``; default :func:`node_order`.
    clock : VirtualClock, optional
        The clock to advance (metric names are its own); default ``VirtualClock()``.
    clock_source : {"plan", "reported"}
        ``"plan"``: the server's ``T_k``, ``E_k``; ``"reported"``: the replies' metrics.
    loss_key : str, default "train_loss"
        The reply metric read as the device's training loss (utility-weighted selection).
    fading : bool, default True
        Redraw the small-scale fading every round (block fading).
    trace : ChannelTrace, optional
        Measured channels, one per device (:mod:`fedmoe.wireless.trace`; read one with
        :func:`fedmoe.wireless.trace_file.read_trace_csv` or :func:`fedmoe.data.deepsense.trace.deepsense_trace`):
        each round's gains are the trace at the round's start on the virtual clock instead of the profiles'
        gains and fading (``fading`` is then ignored), and a device blocked then is not selectable.
    seed : int, default 0
        Seed of the fading draws and of the random policies.
    selection_options : SelectionOptions, optional
        Options of the ``oort``, ``power-of-choice`` and ``age-weighted`` policies (defaults otherwise).
    dynamics : DeviceDynamics, optional
        Devices that go off and on and run on batteries (:mod:`fedmoe.federated.dynamics`; build one from a
        config with :meth:`~fedmoe.federated.dynamics.DeviceDynamics.from_config`): a device that is off at the
        round, or whose charge is below its expected round energy, is not selectable; after the round the devices
        that replied pay their planned :math:`E_k` and every battery recharges for the round's latency.
    mobility : Mobility, optional
        Devices that move between rounds (:mod:`fedmoe.wireless.mobility`; build one with
        :meth:`~fedmoe.wireless.mobility.Mobility.from_config` from a ``WirelessConfig`` whose ``mobility`` is set
        and the profiles of :func:`~fedmoe.wireless.devices.sample_device_profiles`): each round's channel is
        worked out where the devices are at the round's start on the virtual clock. Not with ``trace``.
    """

    def __init__(self, base: Strategy, profiles: DeviceProfiles, wireless: WirelessConfig | None = None,
                 policy: str = "deadline-max-devices", allocation: str = "min-latency", deadline_s: float = 10.0,
                 per_round: int | None = None, cost_fn: CostFn | None = None, flops: Any = 0.0,
                 device_of: DeviceMap | None = None, clock: VirtualClock | None = None, clock_source: str = "plan",
                 loss_key: str = "train_loss", fading: bool = True, trace: ChannelTrace | None = None,
                 seed: int = 0, selection_options: SelectionOptions | None = None,
                 dynamics: DeviceDynamics | None = None, mobility: Mobility | None = None) -> None:
        if not isinstance(base, Strategy):
            raise TypeError(f"WirelessSelection needs a flwr.serverapp.strategy.Strategy to wrap, got "
                            f"{type(base).__name__}")
        if not isinstance(profiles, DeviceProfiles) or len(profiles) == 0:
            raise TypeError("WirelessSelection needs profiles=DeviceProfiles with one row per device "
                            "(fedmoe.plugins.device_profiles builds them from gains, powers and compute speeds)")
        SELECTION_POLICIES.get(policy)  # an unknown name fails here, listing the known ones
        if allocation not in ("min-latency", "equal"):
            raise ValueError(f"WirelessSelection: unknown allocation {allocation!r}; known: min-latency, equal")
        if not (isinstance(deadline_s, (int, float)) and deadline_s > 0 and not math.isnan(deadline_s)):
            raise ValueError(f"WirelessSelection: deadline_s must be > 0, got {deadline_s!r}")
        if clock_source not in ("plan", "reported"):
            raise ValueError(f"WirelessSelection: clock_source must be 'plan' or 'reported', got {clock_source!r}")
        self.base = base
        self.profiles = profiles
        self.wireless = wireless if wireless is not None else WirelessConfig()
        num_rb = self.wireless.uplink.num_resource_blocks
        self.per_round = int(per_round) if per_round is not None else num_rb
        if not 1 <= self.per_round <= num_rb:
            raise ValueError(f"WirelessSelection: per_round must be in [1, {num_rb}] (one resource block each "
                             f"at least), got {per_round}")
        self.policy, self.allocation, self.deadline_s = policy, allocation, float(deadline_s)
        self.selection_options = selection_options if selection_options is not None else SelectionOptions()
        self.cost_fn = cost_fn
        self.flops = flops
        self.device_of = device_of
        self.clock = clock if clock is not None else VirtualClock()
        self.clock_source = clock_source
        self.loss_key = loss_key
        self.fading = fading
        if trace is not None and (not isinstance(trace, ChannelTrace) or len(trace) != len(profiles)):
            raise ValueError(f"WirelessSelection: trace= must be a ChannelTrace of the {len(profiles)} devices of "
                             f"the profiles, got {len(trace) if isinstance(trace, ChannelTrace) else type(trace)}")
        self.trace = trace
        if dynamics is not None and (not isinstance(dynamics, DeviceDynamics) or
                                     dynamics.num_devices != len(profiles)):
            raise ValueError(f"WirelessSelection: dynamics= must be a DeviceDynamics of the {len(profiles)} devices "
                             f"of the profiles, got {getattr(dynamics, 'num_devices', type(dynamics))}")
        self.dynamics = dynamics
        if mobility is not None and (not isinstance(mobility, Mobility) or len(mobility.base) != len(profiles)):
            got = len(mobility.base) if isinstance(mobility, Mobility) else type(mobility)
            raise ValueError(f"WirelessSelection: mobility= must be a Mobility of the {len(profiles)} devices of the "
                             f"profiles, got {got}")
        if mobility is not None and trace is not None:
            raise ValueError("WirelessSelection: give trace= or mobility=, not both (a trace is the measured channel, "
                             "which moving would not change)")
        self.mobility = mobility
        self.rng = np.random.default_rng(seed)
        self.plans: list[RoundPlan] = []
        """The plan of every round so far."""
        self.empty_rounds: list[tuple[int, str]] = []
        """``(round, reason)`` of every round that selected nobody."""
        self._nodes: dict[int, int] = {}
        self._plan: RoundPlan | None = None
        self._loss: dict[int, float] = {}
        self._samples: dict[int, float] = {}
        self._replied: list[tuple[int, list[int]]] = []  # (round, devices that replied): the participation
        self._warned_extra = False

    def __getattr__(self, name: str) -> Any:
        # only called for names this wrapper does not have: the wrapped strategy's settings
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def nodes(self) -> dict[int, int]:
        """``{node id: device}`` of the nodes seen so far."""
        return dict(self._nodes)

    def summary(self) -> None:
        """The wrapped strategy's summary, then the radio settings."""
        self.base.summary()
        log.info("WirelessSelection: %d devices, policy %s, allocation %s, deadline %g s, at most %d a round",
                 len(self.profiles), self.policy, self.allocation, self.deadline_s, self.per_round)

    # ------------------------------------------------------------------ training rounds

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Select and allocate, then the wrapped strategy's messages to the selected nodes (class docstring)."""
        node_ids = [int(n) for n in grid.get_node_ids()]
        self._map_nodes(node_ids)
        node_of = {d: n for n, d in self._nodes.items() if n in set(node_ids)}
        plan = self._plan = self.plan(server_round, arrays, sorted(node_of))
        self.plans.append(plan)
        if plan.devices.size == 0:
            log.warning("round %d: %s", server_round, plan.note)
            self.empty_rounds.append((server_round, plan.note))
            return []
        selected = [node_of[int(k)] for k in plan.devices]
        with takes_exactly(self.base, len(selected)):
            messages = list(self.base.configure_train(server_round, arrays, config, SelectedNodes(selected, grid)))
        share = {node_of[int(k)]: (int(rb), float(rate)) for k, rb, rate in zip(plan.devices, plan.num_rb,
                                                                                  plan.rate_bps)}
        out = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            if node not in share:
                log.warning("round %d: the wrapped strategy addressed node %s, which was not selected; dropped",
                            server_round, node)
                continue
            rb, rate = share[node]
            out.append(_with_config(msg, {NUM_RB_KEY: rb, RATE_KEY: rate, DEADLINE_KEY: self.deadline_s}))
        log.info("round %d: %d devices selected (%s), expected round latency %.3g s", server_round, len(out),
                 plan.note, plan.round_latency_s)
        return out

    def plan(self, server_round: int, arrays: ArrayRecord, devices: Sequence[int]) -> RoundPlan:
        """This round's :class:`~fedmoe.federated.selection.RoundPlan` among ``devices`` (those with a node)."""
        k = len(self.profiles)
        flops, bits = self.cost_fn(server_round, arrays) if self.cost_fn is not None else \
            (self.flops, update_bits(arrays))
        flops, bits = _per_device("flops", flops, k), _per_device("bits", bits, k)
        available = np.zeros(k, dtype=bool)
        available[list(devices)] = True
        heard = list(self._loss.values())
        mean_loss = float(np.mean(heard)) if heard else 1.0
        samples = np.array([self._samples.get(d, 1.0) for d in range(k)])
        loss = np.maximum(np.array([self._loss.get(d, mean_loss) for d in range(k)]), 0.0)
        history = Participation.from_rounds(k, server_round, self._replied)
        profiles, usable = round_channel(self.profiles, self.wireless, self.rng, self.trace, self.clock.clock_s,
                                         self.mobility, self.fading)
        ctx = SelectionContext(self.wireless, self.per_round, self.deadline_s, self.rng, self.selection_options)
        if self.dynamics is not None:
            usable = usable & self.dynamics.selectable(server_round, self.clock.clock_s, profiles, flops, bits, ctx)
        demand = RoundDemand(profiles, flops, bits, samples * loss, available & usable, samples=samples, loss=loss,
                             history=history)
        return plan_round(demand, ctx, self.policy, self.allocation)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapped strategy's aggregation, then the virtual clock (class docstring)."""
        replies = list(replies)
        plan = self._plan
        arrays, metrics = (None, None) if plan is None or plan.devices.size == 0 else \
            self.base.aggregate_train(server_round, replies)
        device_of = self._nodes
        answered = [m for m in replies if not m.has_error() and int(m.metadata.src_node_id) in device_of]
        done = [device_of[int(m.metadata.src_node_id)] for m in answered]  # the devices that replied, in order
        for device, msg in zip(done, answered):
            self._remember(device, msg)
        self._replied.append((int(server_round), sorted(set(done))))
        sent = plan is not None and plan.devices.size > 0
        idle = self.deadline_s if sent else 0.0
        if self.clock_source == "reported":
            tick = self.clock.advance_reported(server_round, answered, idle_latency_s=idle)
        elif plan is None:
            tick = self.clock.advance(server_round, [], [])
        else:
            tick = self.clock.advance_plan(server_round, plan, completed=done, idle_latency_s=idle)
        if self.dynamics is not None:
            spent = {} if plan is None else {int(k): float(e) for k, e in zip(plan.devices, plan.energy_j)}
            paid = [d for d in done if d in spent]
            self.dynamics.after_round(paid, [spent[d] for d in paid], tick.latency_s)
        merged = dict(metrics.items()) if metrics is not None else {}
        merged.update(self.clock.metrics())
        return arrays, MetricRecord(merged)

    # ------------------------------------------------------------------ evaluation: the wrapped strategy's

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's."""
        return self.base.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The wrapped strategy's."""
        return self.base.aggregate_evaluate(server_round, replies)

    # ------------------------------------------------------------------ helpers

    def _map_nodes(self, node_ids: Sequence[int]) -> None:
        k = len(self.profiles)
        if self.device_of is not None:
            mapping = {int(n): int(d) for n, d in dict(self.device_of(list(node_ids))).items()}
            bad = {n: d for n, d in mapping.items() if not 0 <= d < k}
            if bad:
                raise ValueError(f"WirelessSelection: device_of mapped nodes to devices outside [0, {k}): {bad}")
            if len(set(mapping.values())) != len(mapping):
                raise ValueError("WirelessSelection: device_of mapped two nodes to the same device")
            self._nodes = mapping
        else:
            self._nodes = node_order(node_ids, self._nodes, k)
        extra = sorted(set(node_ids) - set(self._nodes))
        if extra and not self._warned_extra:
            log.warning("WirelessSelection: %d nodes are connected but the profiles describe %d devices; nodes %s "
                        "are left out", len(node_ids), k, extra[:5])
            self._warned_extra = True

    def _remember(self, device: int, msg: Message) -> None:
        """The device's last weight and training loss, if its reply has them (for utility-weighted selection)."""
        for record in msg.content.metric_records.values():
            loss, n = record.get(self.loss_key), record.get("num-examples")
            if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss) and loss >= 0:
                self._loss[device] = float(loss)
            if isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) and n > 0:
                self._samples[device] = float(n)


def _per_device(name: str, value: Any, k: int) -> np.ndarray:
    arr = per_device(value, k)
    if arr is None:
        raise ValueError(f"WirelessSelection: cost_fn gave {name} of shape {np.shape(value)}; expected one value or "
                         f"({k},)")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"WirelessSelection: cost_fn gave {name} that are negative or not finite")
    return arr


def _with_config(msg: Message, extra: Mapping[str, Any]) -> Message:
    """A copy of the instruction ``msg`` whose config record also holds ``extra`` (the wrapped strategy's
    messages may share one record: each node gets its own)."""
    content = RecordDict()
    for key, record in msg.content.items():
        content[key] = ConfigRecord({**dict(record.items()), **extra}) if isinstance(record, ConfigRecord) else record
    if not any(isinstance(r, ConfigRecord) for r in msg.content.values()):
        content["config"] = ConfigRecord(dict(extra))
    return Message(content=content, dst_node_id=int(msg.metadata.dst_node_id),
                   message_type=msg.metadata.message_type, group_id=msg.metadata.group_id)
