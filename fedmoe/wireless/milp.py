"""Reference MILPs for the allocation problems of :mod:`fedmoe.wireless.allocator`.

Both are solved with :func:`scipy.optimize.milp` (HiGHS, ``mip_rel_gap = 0``) in the
assignment form: binary ``x_{k,b} = 1`` when device ``k`` gets exactly ``b`` resource
blocks. Latencies ``t_k(b)`` are tabulated for every ``b`` with
:meth:`UplinkInstance.latency` (the numbers the exact solver sees too), and the table is
scanned directly: nothing here uses the allocator's searches.

Minimum round latency::

    min T   s.t.  sum_b x_{k,b} = 1                  for every device k
                  sum_{k,b} b x_{k,b} <= N_rb
                  sum_b t_k(b) x_{k,b} - T <= 0      for every device k
                  x_{k,b} binary, b in W_k

With all ``b = 1 .. N_rb - K + 1`` this MILP is slow (HiGHS needs 2-16 s at K = 100,
N_rb = 2K). We therefore restrict ``b`` to a window ``W_k = [n_k(UB), n_k(LB)]`` that
provably contains an optimal solution, where ``n_k(T)`` is the fewest RBs meeting ``T``
(first table entry ``<= T``), ``LB = max_k t_k(N_rb - K + 1)`` is a lower bound (nobody can
hold more RBs) and ``UB`` the latency of a feasible incumbent. Proof: for the optimum
``T*``, ``b_k = n_k(T*)`` is optimal (a device never needs more RBs than the fewest meeting
``T*``), and ``LB <= T* <= UB`` with ``n_k`` non-increasing gives
``n_k(UB) <= n_k(T*) <= n_k(LB)``. The incumbent is the marginal-allocation greedy
(start from one RB each, repeatedly give one RB to the slowest device); the argument does
not depend on its quality, only on its feasibility.

Selection under a deadline ``D`` (weights ``w_k``; ``w_k = 1`` counts devices)::

    max sum_{k,b} w_k x_{k,b}   s.t.  sum_b x_{k,b} <= 1     for every device k
                                      sum_{k,b} b x_{k,b} <= N_rb
                                      x_{k,b} = 0 unless t_k(b) <= D

Among the pairs meeting the deadline, ``b = n_k(D)`` dominates every larger ``b`` (same
utility, fewer RBs), so only that pair is created: the MILP is the 0/1 knapsack
``max sum w_k x_k, sum n_k(D) x_k <= N_rb``.

The latency rows are divided by ``LB`` so that the optimum is of order one for HiGHS, whose
tolerances are absolute (about 1e-6). Allocations whose latencies differ by less than that
are ties to HiGHS: the plain model (no windows) has returned one ~1e-7 relative worse than
the optimum on a power-limited device, whose latency barely changes with more RBs. Reported
latencies and objectives are recomputed from the rounded solution, never read from the solver.
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from fedmoe.wireless.allocator import (
    LatencyAllocation,
    SelectionResult,
    UplinkInstance,
    check_deadline,
    check_weights,
    latency_precheck,
    selection_precheck,
)


def latency_table(inst: UplinkInstance, max_rb: int) -> np.ndarray:
    """``t_k(b)`` for every device and ``b = 1 .. max_rb``, shape ``(K, max_rb)``."""
    k = inst.size
    dev = np.repeat(np.arange(k), max_rb)
    rbs = np.tile(np.arange(1, max_rb + 1), k)
    return inst.latency(dev, rbs).reshape(k, max_rb)


def first_meeting(table: np.ndarray, target: float) -> np.ndarray:
    """Per row, the smallest ``b`` (1-based) with ``t_k(b) <= target``; ``max_rb + 1`` if none."""
    ok = table <= target
    return np.where(ok.any(axis=1), np.argmax(ok, axis=1) + 1, table.shape[1] + 1)


def marginal_allocation(table: np.ndarray, num_rb: int) -> np.ndarray:
    """Greedy incumbent: one RB each, then each further RB to the currently slowest device."""
    k, max_rb = table.shape
    rb = np.ones(k, dtype=np.int64)
    heap = [(-table[i, 0], i) for i in range(k)]
    heapq.heapify(heap)
    for _ in range(num_rb - k):
        _, i = heapq.heappop(heap)
        if rb[i] == max_rb:
            break
        rb[i] += 1
        heapq.heappush(heap, (-table[i, rb[i] - 1], i))
    return rb


def milp_min_round_latency(bits: ArrayLike, gains: ArrayLike, powers: ArrayLike, fixed_latency: ArrayLike,
                           num_rb: int, rb_hz: float, noise_psd_w_hz: float,
                           time_limit: float | None = None, window: bool = True) -> LatencyAllocation:
    """MILP reference for :func:`fedmoe.wireless.allocator.min_round_latency` (same arguments).

    ``window=False`` creates every ``b = 1 .. N_rb - K + 1`` (the plain assignment MILP;
    slow beyond a few dozen devices, kept for the benchmark's comparison).
    """
    inst = UplinkInstance.from_arrays(bits, gains, powers, fixed_latency, num_rb, rb_hz, noise_psd_w_hz)
    bad = latency_precheck(inst)
    if bad is not None:
        return bad
    k = inst.size
    table = latency_table(inst, inst.num_rb - k + 1)
    lower = table[:, -1].max()
    if window:
        incumbent = marginal_allocation(table, inst.num_rb)
        upper = table[np.arange(k), incumbent - 1].max()
        lo, hi = first_meeting(table, upper), first_meeting(table, lower)
    else:
        lo, hi = np.ones(k, dtype=np.int64), np.full(k, table.shape[1])
    width = hi - lo + 1
    dev = np.repeat(np.arange(k), width)
    rbs = np.arange(dev.size) - np.repeat(np.cumsum(width) - width, width) + lo[dev]
    t = table[dev, rbs - 1]
    scale = float(lower) or 1.0  # T* >= lower: the scaled optimum is >= 1 (and ~1 with windows)
    nx = dev.size
    cols = np.arange(nx)
    # rows 0..k-1: one choice per device; row k: RB budget; rows k+1..2k: latency <= T.
    rows = np.concatenate([dev, np.full(nx, k), k + 1 + dev, k + 1 + np.arange(k)])
    cc = np.concatenate([cols, cols, cols, np.full(k, nx)])
    vals = np.concatenate([np.ones(nx), rbs.astype(float), t / scale, -np.ones(k)])
    a = csr_array((vals, (rows, cc)), shape=(2 * k + 1, nx + 1))
    lb = np.concatenate([np.ones(k), [-np.inf], np.full(k, -np.inf)])
    ub = np.concatenate([np.ones(k), [inst.num_rb], np.zeros(k)])
    c = np.zeros(nx + 1)
    c[-1] = 1.0
    res = milp(c, integrality=np.concatenate([np.ones(nx), [0]]),
               bounds=Bounds(np.zeros(nx + 1), np.concatenate([np.ones(nx), [np.inf]])),
               constraints=LinearConstraint(a, lb, ub), options=_solver_options(time_limit))
    if res.status != 0 or res.x is None:
        return LatencyAllocation(False, f"MILP solver: {res.message}", float("inf"), np.zeros(k, dtype=np.int64))
    on = res.x[:nx] > 0.5
    rb = np.zeros(k, dtype=np.int64)
    rb[dev[on]] = rbs[on]
    lat = inst.latency(np.arange(k), rb)
    j = int(np.argmax(lat))
    return LatencyAllocation(True, "optimal", float(lat[j]), rb, j)


def milp_select_devices(bits: ArrayLike, gains: ArrayLike, powers: ArrayLike, fixed_latency: ArrayLike,
                        deadline: float, num_rb: int, rb_hz: float, noise_psd_w_hz: float,
                        weights: ArrayLike | None = None, time_limit: float | None = None) -> SelectionResult:
    """MILP reference for :func:`fedmoe.wireless.allocator.select_devices` (same arguments)."""
    inst = UplinkInstance.from_arrays(bits, gains, powers, fixed_latency, num_rb, rb_hz, noise_psd_w_hz)
    w = check_weights(weights, inst.size)
    deadline = check_deadline(deadline)
    k, n = inst.size, inst.num_rb
    w = np.ones(k) if w is None else w
    need = np.full(k, -1, dtype=np.int64)
    if k and n and inst.rb_hz > 0:
        found = first_meeting(latency_table(inst, n), deadline)
        need = np.where(inst.can_upload() & (found <= n), found, -1)
    bad = selection_precheck(inst, need)
    if bad is not None:
        return bad
    dev = np.flatnonzero(need > 0)
    a = csr_array(need[dev].astype(float)[None, :])
    res = milp(-w[dev], integrality=np.ones(dev.size), bounds=Bounds(0, 1),
               constraints=LinearConstraint(a, -np.inf, n), options=_solver_options(time_limit))
    if res.status != 0 or res.x is None:
        return SelectionResult(False, f"MILP solver: {res.message}", np.zeros(k, dtype=bool),
                               np.zeros(k, dtype=np.int64), 0.0, need)
    selected = np.zeros(k, dtype=bool)
    selected[dev[res.x > 0.5]] = True
    rb = np.where(selected, need, 0)
    return SelectionResult(True, "optimal", selected, rb, float(w[selected].sum()), need)


def _solver_options(time_limit: float | None) -> dict:
    opts: dict = {"mip_rel_gap": 0.0}
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    return opts
