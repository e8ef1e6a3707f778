"""Device-selection baselines from the literature, registered in
:data:`~fedmoe.federated.selection.SELECTION_POLICIES` beside the deadline policies.

Each keeps the round's hard constraints: the selected set ``S`` meets the deadline ``T`` within the
``N_rb`` resource blocks, ``Σ_{k∈S} n_k(T) <= N_rb`` with ``n_k(T)`` the fewest blocks with which
device ``k`` meets ``T`` (:func:`~fedmoe.federated.selection.deadline_rb_needed`), and
``|S| <= m`` (``federated.clients_per_round``). Their options are ``federated.selection_options``
(:class:`~fedmoe.config.SelectionOptions`).

``oort`` ([P005])
    Exploitation: among the devices heard from before, the set of largest total Oort utility
    (:func:`oort_utility`) that fits, exact, with at most ``m - ⌈ε m⌉`` devices (all ``m`` when fewer
    devices were never heard from); exploration: the remaining slots go to devices never heard from,
    drawn one by one with probability proportional to their speed ``1 / t_k`` among those that still
    fit in the blocks left. With ``ε = 0`` (and everyone heard from) the choice is deterministic.
    Ours: the exploitation takes the exact best set instead of Oort's sampling above a cut-off, and
    the preferred round duration is the deadline (no pacer).
``power-of-choice`` ([P006])
    ``d`` candidates drawn without replacement with probability proportional to their training samples
    among the devices that can meet ``T`` (and hold data), then the set of at most ``m`` of them with the
    largest total last reported loss that fits (exact): the ``m`` candidates of highest loss whenever their
    blocks fit, as in [P006]; when they do not, the best subset that does. The losses are the last
    reported ones (the variant rpow-d of [P006], no extra round trip).
``age-weighted`` ([P007])
    The set of largest ``Σ_k a_k^β`` that fits (exact knapsack), with ``a_k`` the age of update of device
    ``k`` (:attr:`~fedmoe.federated.selection.Participation.age`). A device left out ages, so one that
    needs many blocks is eventually worth more than the devices it displaces, and is not starved as it
    is under ``deadline-max-devices``. The weight ``a_k^β`` and the knapsack are ours; [P007] schedules
    by age and channel under a fixed number of channels.
"""

from __future__ import annotations

import numpy as np

from fedmoe.config import OortOptions
from fedmoe.federated.selection import (
    SELECTION_POLICIES,
    Participation,
    RoundDemand,
    SelectionContext,
    best_under_deadline,
    deadline_rb_needed,
    uplink_instance,
)


def equal_share_latency(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    """(K,) ``t_k``, device ``k``'s round latency on an equal share ``max(1, ⌊N_rb / m⌋)`` of the blocks
    (the speed Oort compares with ``T``); ``inf`` for unavailable devices or those that cannot upload."""
    t = np.full(demand.num_devices, np.inf)
    cand = np.flatnonzero(demand.available)
    if cand.size:
        inst = uplink_instance(demand, cand, ctx)
        share = max(1, ctx.wireless.uplink.num_resource_blocks // max(ctx.per_round, 1))
        up = inst.can_upload()
        t[cand[up]] = inst.latency(np.flatnonzero(up), np.full(int(up.sum()), share))
    return t


def oort_utility(utility: np.ndarray, history: Participation, latency: np.ndarray, deadline_s: float,
                 options: OortOptions, among: np.ndarray) -> np.ndarray:
    """Oort's utility of the devices ``among`` (0 elsewhere), [P005] eq. 1–2 and Algorithm 1::

        Util_k = (U_k / max_j U_j + sqrt(c ln R / L_k)) × (T / t_k)^(α 1[t_k > T])

    ``U_k = |B_k| sqrt(mean loss²)`` is the statistical utility of [P005] eq. 1; devices report their
    mean training loss only, so ``U_k = n_k loss_k`` (``RoundDemand.utility``; a lower bound of eq. 1 by
    Jensen). It is scaled by its largest value over ``among`` so that the staleness bonus of Algorithm 1,
    ``sqrt(c ln R / L_k)`` with ``R`` the round and ``L_k`` the last round ``k`` took part (``c = 0.1`` in
    [P005]), counts (as Oort's implementation normalises). ``t_k`` is :func:`equal_share_latency`, ``T``
    the deadline: a device slower than ``T`` on its share is penalised by ``(T / t_k)^α`` (eq. 2).
    """
    among = np.asarray(among, dtype=np.int64)
    out = np.zeros(len(utility))
    if among.size == 0:
        return out
    u = np.asarray(utility, dtype=np.float64)[among]
    top = u.max()
    stat = u / top if top > 0 else np.zeros_like(u)
    last = history.last_round[among]
    with np.errstate(divide="ignore"):
        bonus = np.where(last > 0, np.sqrt(options.staleness * np.log(history.round) / np.maximum(last, 1)), 0.0)
    t = latency[among]
    with np.errstate(divide="ignore", invalid="ignore"):
        penalty = np.where(t > deadline_s, (deadline_s / t) ** options.alpha, 1.0)
    out[among] = (stat + bonus) * penalty
    return out


def _draw_by_speed(rng: np.random.Generator, pool: np.ndarray, need: np.ndarray, latency: np.ndarray,
                   slots: int, room: int) -> list[int]:
    """Up to ``slots`` devices of ``pool`` drawn one by one with probability ∝ ``1 / t_k`` among those
    whose ``n_k(T)`` still fits in ``room`` blocks (Oort's exploration)."""
    pool = list(pool)
    chosen: list[int] = []
    while slots > 0 and pool:
        fits = np.array([k for k in pool if need[k] <= room], dtype=np.int64)
        if fits.size == 0:
            break
        speed = 1.0 / np.maximum(latency[fits], 1e-12)
        k = int(rng.choice(fits, p=speed / speed.sum()))
        chosen.append(k)
        pool.remove(k)
        room -= int(need[k])
        slots -= 1
    return chosen


@SELECTION_POLICIES.register("oort")
def select_oort(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    """Oort ([P005]) under the deadline and the blocks (module docstring)."""
    opts = ctx.options.oort
    hist = demand.participation()
    need = deadline_rb_needed(demand, ctx)
    feasible = need > 0
    explored = np.flatnonzero(feasible & (hist.times > 0))
    unexplored = np.flatnonzero(feasible & (hist.times == 0))
    m = ctx.per_round
    n_explore = min(int(np.ceil(opts.epsilon * m - 1e-9)), unexplored.size)
    latency = equal_share_latency(demand, ctx)
    util = oort_utility(demand.utility, hist, latency, ctx.deadline_s, opts, explored)
    exploit = best_under_deadline(demand, ctx, util, among=explored, cap=m - n_explore)
    room = ctx.wireless.uplink.num_resource_blocks - int(need[exploit].sum())
    explore = _draw_by_speed(ctx.rng, unexplored, need, latency, m - exploit.size, room)
    return np.sort(np.concatenate([exploit, np.asarray(explore, dtype=np.int64)]))


@SELECTION_POLICIES.register("power-of-choice")
def select_power_of_choice(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    """Power-of-choice ([P006], rpow-d) under the deadline and the blocks (module docstring)."""
    if demand.samples is None or demand.loss is None:
        raise ValueError("power-of-choice needs RoundDemand.samples and RoundDemand.loss (data sizes and last losses)")
    m = ctx.per_round
    d = ctx.options.power_of_choice.candidates or 2 * m
    if d < m:
        raise ValueError(f"power-of-choice: {d} candidates cannot give {m} devices per round")
    samples = np.asarray(demand.samples, dtype=np.float64)
    pool = np.flatnonzero((deadline_rb_needed(demand, ctx) > 0) & (samples > 0))
    if pool.size == 0:
        return pool
    drawn = ctx.rng.choice(pool, size=min(d, pool.size), replace=False, p=samples[pool] / samples[pool].sum())
    return best_under_deadline(demand, ctx, np.asarray(demand.loss, dtype=np.float64), among=np.sort(drawn), cap=m)


@SELECTION_POLICIES.register("age-weighted")
def select_age_weighted(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    """``max Σ_{k∈S} a_k^β`` under the deadline, the blocks and the cap ([P007] age of update; module docstring)."""
    weights = demand.participation().age.astype(np.float64) ** ctx.options.age.exponent
    return best_under_deadline(demand, ctx, weights)
