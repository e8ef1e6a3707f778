"""Exact device selection and resource-block allocation for one synchronous round.

Device ``k`` must send ``bits_k`` bits after a bandwidth-independent delay ``c_k`` (sensing
plus local compute, :func:`fedmoe.wireless.devices.fixed_latency`). With ``b_k`` resource
blocks of ``B_min`` Hz its latency is::

    t_k(b) = c_k + bits_k / R_k(b),   R_k(b) = b B_min log2(1 + s_k / b)

(:mod:`fedmoe.wireless.ofdma`, [P001] eq. 3-5, noise ``N0 b B_min``; ``s_k = P_k h_k / (N0 B_min)``).
``R_k`` is strictly increasing in ``b`` (and concave), so ``t_k`` is strictly decreasing
when ``bits_k > 0``. Every device that takes part gets ``b_k >= 1`` integer RBs and
``sum_k b_k <= N_rb``.

For a latency target ``T`` let ``n_k(T) = min {b >= 1 : t_k(b) <= T}`` (the fewest RBs that
meet ``T``; "impossible" if even ``N_rb`` RBs do not). By monotonicity ``t_k(b) <= T`` exactly
when ``b >= n_k(T)``, which a vectorised binary search over integers finds.

Two problems are solved exactly (same optimum as the MILPs of :mod:`fedmoe.wireless.milp`):

**Minimum round latency** (:func:`min_round_latency`): ``min_b max_k t_k(b_k)`` over all
devices. ``T`` is achievable iff ``sum_k n_k(T) <= N_rb``, a monotone test. The optimum is
one of the finitely many candidate values ``t_k(b)``: at an optimal allocation the maximum is
attained by some ``t_k(b_k)``. We therefore search the candidate set itself, never a float
interval: keep an infeasible ``lo`` and a feasible candidate ``hi``; the candidates of
device ``k`` strictly between them are the ``b`` in an integer range known from
``n_k(lo)`` and ``n_k(hi)``; test the weighted median of the per-device middle candidates
(weights = range sizes), which discards at least a quarter of the remaining candidates.
Once few candidates remain (at most ``_ENUMERATE_MAX``, usually at once) we finish by
selection instead: for ``v`` in ``(lo, hi)``, ``n_k(v) = n_k(lo) - #{candidates of k <= v}``,
so ``sum_k n_k(v) <= N_rb`` exactly when at least ``m = sum_k n_k(lo) - N_rb`` candidates are
``<= v``; the optimum is the ``m``-th smallest candidate (``np.partition``), or ``hi`` if
there are fewer than ``m``. ``b_k = n_k(T*)`` then attains it with the fewest RBs.
Cost ``O(K log N_rb)`` per test, ``O(log(K N_rb))`` tests, ``O(_ENUMERATE_MAX)`` to finish.

**Selection under a deadline** (:func:`select_devices`): each device needs ``n_k(T)`` RBs
to meet the deadline ``T``. Maximising the *number* of selected devices is solved by taking
devices in increasing order of ``n_k(T)`` while the RBs last: for any feasible set of ``m``
devices, the ``m`` smallest requirements sum to no more than that set's, so the greedy
prefix of length ``m`` is feasible too; the greedy stops at the largest such ``m``.
Maximising a weighted utility ``sum w_k`` is a 0/1 knapsack with integer sizes ``n_k(T)``
and capacity ``N_rb``, solved exactly by dynamic programming in ``O(K N_rb)`` (one
vectorised pass over the capacities per device). Giving a selected device more than
``n_k(T)`` RBs never helps either objective, so this is the optimum over all allocations.

Infeasible inputs (no devices, no RBs, more devices than RBs, a device that cannot upload,
nobody meeting the deadline) return a result with ``feasible=False`` and a readable
``reason``; malformed arguments raise :class:`ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from fedmoe.wireless.ofdma import rate_from_snr, shannon_rate, snr_per_rb

_ENUMERATE_MAX = 16384
"""Candidate count below which :func:`min_round_latency` lists the candidates and selects."""


@dataclass(frozen=True)
class UplinkInstance:
    """Validated inputs of an allocation problem (arrays of length ``K``)."""

    bits: np.ndarray
    snr_rb: np.ndarray
    fixed: np.ndarray
    num_rb: int
    rb_hz: float

    @classmethod
    def from_arrays(cls, bits: ArrayLike, gains: ArrayLike, powers: ArrayLike, fixed_latency: ArrayLike,
                    num_rb: int, rb_hz: float, noise_psd_w_hz: float) -> "UplinkInstance":
        """Check shapes and signs (``ValueError`` with the argument's name) and precompute ``s_k``."""
        arrays = {}
        for name, value in (("bits", bits), ("gains", gains), ("powers", powers), ("fixed_latency", fixed_latency)):
            a = np.asarray(value, dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"{name} must be a 1-D array (one entry per device), got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite")
            if np.any(a < 0):
                raise ValueError(f"{name} must be >= 0 (got min {a.min():g})")
            arrays[name] = a
        k = len(arrays["bits"])
        for name, a in arrays.items():
            if len(a) != k:
                raise ValueError(f"{name} has {len(a)} entries but bits has {k}: one entry per device is needed")
        if isinstance(num_rb, bool) or int(num_rb) != num_rb or num_rb < 0:
            raise ValueError(f"num_rb must be an integer >= 0, got {num_rb!r}")
        if not (np.isfinite(rb_hz) and rb_hz >= 0):
            raise ValueError(f"rb_hz must be finite and >= 0, got {rb_hz!r}")
        if not (np.isfinite(noise_psd_w_hz) and noise_psd_w_hz > 0):
            raise ValueError(f"noise_psd_w_hz must be finite and > 0, got {noise_psd_w_hz!r}")
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = snr_per_rb(arrays["powers"], arrays["gains"], noise_psd_w_hz, rb_hz) if rb_hz > 0 else np.zeros(k)
        return cls(arrays["bits"], snr, arrays["fixed_latency"], int(num_rb), float(rb_hz))

    @property
    def size(self) -> int:
        return len(self.bits)

    def latency(self, idx: np.ndarray | slice, num_rb: ArrayLike) -> np.ndarray:
        """``t_k(b) = c_k + bits_k / R_k(b)`` for devices ``idx`` (``inf`` if the rate is 0 and bits > 0)."""
        rate = rate_from_snr(num_rb, self.rb_hz, self.snr_rb[idx])
        bits = self.bits[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(bits > 0, bits / rate, 0.0)
        return self.fixed[idx] + up

    def can_upload(self) -> np.ndarray:
        """Devices that can deliver their bits at all (nothing to send, or a positive rate)."""
        return (self.bits == 0) | ((self.snr_rb > 0) & (self.rb_hz > 0))

    def fewest_rb(self, idx: np.ndarray, lo: ArrayLike, hi: ArrayLike, target: float) -> np.ndarray:
        """``n_k(target)`` for devices ``idx`` by binary search over integers in ``[lo, hi]``.

        ``hi`` must be known to meet the target (or be the sentinel "impossible" value, which
        is never evaluated); the result is the smallest ``b`` in the range with ``t_k(b) <= target``.
        The devices must be able to upload (:meth:`can_upload`).
        """
        return _fewest_rb(self.snr_rb[idx], self.bits[idx], self.fixed[idx], self.rb_hz, lo, hi, target)


def _latency_fast(snr: np.ndarray, bits: np.ndarray, fixed: np.ndarray, rb_hz: float, b: np.ndarray) -> np.ndarray:
    """:meth:`UplinkInstance.latency` for devices with a positive rate and ``b >= 1`` (bit-identical)."""
    return fixed + bits / shannon_rate(b, rb_hz, snr)


def _fewest_rb(snr: np.ndarray, bits: np.ndarray, fixed: np.ndarray, rb_hz: float,
               lo: ArrayLike, hi: ArrayLike, target: float) -> np.ndarray:
    """Vectorised integer binary search behind :meth:`UplinkInstance.fewest_rb`."""
    lo = np.array(lo, dtype=np.int64, copy=True)
    hi = np.array(hi, dtype=np.int64, copy=True)
    if lo.size == 0:
        return lo
    # Each step at least halves every range hi - lo, so bit_length(max range) steps suffice.
    for _ in range(int((hi - lo).max()).bit_length()):
        mid = (lo + hi) >> 1
        ok = _latency_fast(snr, bits, fixed, rb_hz, mid) <= target
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, np.minimum(mid + 1, hi))  # a closed range (lo == hi) stays put
    return lo


@dataclass(frozen=True)
class LatencyAllocation:
    """Result of :func:`min_round_latency` (and of its MILP reference).

    ``latency`` is ``max_k t_k(rb_k)`` (``inf`` when infeasible); ``rb`` the RBs per device
    (zeros when infeasible); ``bottleneck`` a device attaining the maximum (-1 if none).
    """

    feasible: bool
    reason: str
    latency: float
    rb: np.ndarray
    bottleneck: int = -1

    @property
    def rb_used(self) -> int:
        return int(self.rb.sum())


@dataclass(frozen=True)
class SelectionResult:
    """Result of :func:`select_devices` (and of its MILP reference).

    ``selected`` is a boolean mask, ``rb`` the RBs per device (0 if not selected),
    ``objective`` the number of selected devices or their total weight, ``rb_needed`` the
    fewest RBs each device needs to meet the deadline (-1 if it cannot).
    """

    feasible: bool
    reason: str
    selected: np.ndarray
    rb: np.ndarray
    objective: float
    rb_needed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_selected(self) -> int:
        return int(self.selected.sum())


def _infeasible_latency(k: int, reason: str) -> LatencyAllocation:
    return LatencyAllocation(False, reason, float("inf"), np.zeros(k, dtype=np.int64))


def latency_precheck(inst: UplinkInstance) -> LatencyAllocation | None:
    """The infeasibility tests shared by the exact and the MILP solver (None if none applies)."""
    k, n = inst.size, inst.num_rb
    if k == 0:
        return _infeasible_latency(0, "no devices to schedule")
    if n == 0 or inst.rb_hz == 0:
        return _infeasible_latency(k, "no bandwidth: 0 resource blocks available")
    if k > n:
        return _infeasible_latency(k, f"{k} devices need at least one resource block each but only {n} are available")
    dead = np.flatnonzero(~inst.can_upload())
    if dead.size:
        return _infeasible_latency(
            k, f"{dead.size} device(s) have zero channel gain or transmit power and cannot upload "
               f"(first: device {dead[0]})"
        )
    return None


def min_round_latency(bits: ArrayLike, gains: ArrayLike, powers: ArrayLike, fixed_latency: ArrayLike,
                      num_rb: int, rb_hz: float, noise_psd_w_hz: float) -> LatencyAllocation:
    """Minimum over integer allocations (``b_k >= 1``, ``sum b_k <= num_rb``) of ``max_k t_k(b_k)``.

    Exact: returns the smallest achievable candidate value ``t_k(b)`` (module docstring),
    with each device given the fewest RBs that meet it.
    """
    inst = UplinkInstance.from_arrays(bits, gains, powers, fixed_latency, num_rb, rb_hz, noise_psd_w_hz)
    bad = latency_precheck(inst)
    if bad is not None:
        return bad
    k = inst.size
    pos = np.flatnonzero(inst.bits > 0)
    idle = inst.bits == 0
    # Devices with nothing to send take one RB each and finish at c_k whatever they get.
    base = float(inst.fixed[idle].max()) if idle.any() else -np.inf
    rb = np.ones(k, dtype=np.int64)
    if pos.size:
        rb[pos] = _min_max_rb(inst, pos, inst.num_rb - int(idle.sum()))
        t_pos = inst.latency(pos, rb[pos])
        if base > t_pos.max():  # idle devices dominate: release RBs the others do not need
            rb[pos] = inst.fewest_rb(pos, np.ones(pos.size), rb[pos], base)
    t = inst.latency(np.arange(k), rb)
    j = int(np.argmax(t))
    return LatencyAllocation(True, "optimal", float(t[j]), rb, j)


def _min_max_rb(inst: UplinkInstance, idx: np.ndarray, capacity: int) -> np.ndarray:
    """Fewest RBs per device (``idx``, all with bits > 0 and a positive rate) attaining the
    optimal min-max latency with ``capacity`` RBs."""
    n = idx.size
    cap_each = capacity - n + 1  # nobody can get more: the others need one RB each
    snr, bits, fixed, rb_hz = inst.snr_rb[idx], inst.bits[idx], inst.fixed[idx], inst.rb_hz

    def t(sub: np.ndarray | slice, b: np.ndarray) -> np.ndarray:
        return _latency_fast(snr[sub], bits[sub], fixed[sub], rb_hz, b)

    def need(sub: np.ndarray | slice, lo_b: ArrayLike, hi_b: ArrayLike, target: float) -> np.ndarray:
        return _fewest_rb(snr[sub], bits[sub], fixed[sub], rb_hz, lo_b, hi_b, target)

    # hi: a feasible candidate (one RB each); lo: infeasible (below max_k t_k(cap_each)).
    everyone = slice(None)
    ones = np.ones(n, dtype=np.int64)
    t_nh = t(everyone, ones)
    hi = float(t_nh.max())
    nh = ones
    lo = float(np.nextafter(t(everyone, np.full(n, cap_each)).max(), -np.inf))
    nl = need(everyone, ones, np.full(n, cap_each + 1), lo)  # cap_each + 1 = "impossible"
    while True:
        # Candidates strictly inside (lo, hi): b in [a_k, nl_k - 1].
        a = nh + (t_nh >= hi)
        count = nl - a
        act = np.flatnonzero(count > 0)
        if act.size == 0:
            break
        a_act, nl_act, c_act = a[act], nl[act], count[act]
        total = int(c_act.sum())
        final = total <= _ENUMERATE_MAX
        if final:
            # At v inside (lo, hi), sum_k n_k(v) = sum_k nl_k - #{candidates <= v}: the smallest
            # feasible candidate is the m-th smallest, m = sum_k nl_k - capacity (module docstring).
            m = int(nl.sum()) - capacity
            if m > total:
                break
            dev = np.repeat(np.arange(act.size), c_act)
            b = a_act[dev] + np.arange(total) - np.repeat(np.cumsum(c_act) - c_act, c_act)
            v = float(np.partition(t(act[dev], b), m - 1)[m - 1])
        else:
            mid = t(act, (a_act + nl_act - 1) >> 1)
            inside = (mid > lo) & (mid < hi)
            if not inside.any():
                break
            mid, weight = mid[inside], c_act[inside]
            order = np.argsort(mid, kind="stable")
            cw = np.cumsum(weight[order])
            v = float(mid[order[np.searchsorted(cw, cw[-1] / 2.0)]])
        if not lo < v < hi:  # impossible in exact arithmetic; guards termination
            break
        nv = nl.copy()  # devices without candidates inside (lo, hi) need n_k(lo) RBs at v
        nv[act] = need(act, a_act, nl_act, v)
        if nv.sum() <= capacity:
            changed = np.flatnonzero(nv != nh)
            hi, nh = v, nv
            t_nh[changed] = t(changed, nh[changed])
            if final:
                break
        else:
            lo, nl = v, nv
    return nh


def _empty_selection(k: int, reason: str, needed: np.ndarray | None = None) -> SelectionResult:
    needed = np.full(k, -1, dtype=np.int64) if needed is None else needed
    return SelectionResult(False, reason, np.zeros(k, dtype=bool), np.zeros(k, dtype=np.int64), 0.0, needed)


def check_weights(weights: ArrayLike | None, k: int) -> np.ndarray | None:
    """Validate selection weights: 1-D, one per device, finite and >= 0."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,):
        raise ValueError(f"weights has shape {w.shape} but there are {k} devices")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    return w


def check_deadline(deadline: float) -> float:
    """A deadline is a real number or +inf (not NaN)."""
    d = float(deadline)
    if np.isnan(d):
        raise ValueError("deadline must be a number, got NaN")
    return d


def rb_needed(inst: UplinkInstance, deadline: float) -> np.ndarray:
    """``n_k(deadline)`` for every device, -1 where even all ``num_rb`` RBs miss the deadline."""
    k, n = inst.size, inst.num_rb
    if n == 0 or inst.rb_hz == 0:
        return np.full(k, -1, dtype=np.int64)
    up = np.flatnonzero(inst.can_upload())
    need = np.full(k, -1, dtype=np.int64)
    found = inst.fewest_rb(up, np.ones(up.size), np.full(up.size, n + 1), deadline)
    need[up] = np.where(found <= n, found, -1)
    return need


def selection_precheck(inst: UplinkInstance, needed: np.ndarray) -> SelectionResult | None:
    """The infeasibility tests shared by the exact and the MILP selection (None if none applies)."""
    k = inst.size
    if k == 0:
        return _empty_selection(0, "no devices to select from")
    if inst.num_rb == 0 or inst.rb_hz == 0:
        return _empty_selection(k, "no bandwidth: 0 resource blocks available", needed)
    if not np.any(needed > 0):
        return _empty_selection(k, "no device can meet the deadline even with all resource blocks", needed)
    return None


def select_devices(bits: ArrayLike, gains: ArrayLike, powers: ArrayLike, fixed_latency: ArrayLike,
                   deadline: float, num_rb: int, rb_hz: float, noise_psd_w_hz: float,
                   weights: ArrayLike | None = None) -> SelectionResult:
    """Select devices meeting ``deadline`` within ``num_rb`` RBs.

    ``weights=None`` maximises the number of devices (greedy by fewest RBs); otherwise
    maximises ``sum w_k`` over the selected devices (knapsack DP). See the module docstring
    for why both are optimal. Selected devices get exactly ``n_k(deadline)`` RBs.
    """
    inst = UplinkInstance.from_arrays(bits, gains, powers, fixed_latency, num_rb, rb_hz, noise_psd_w_hz)
    w = check_weights(weights, inst.size)
    deadline = check_deadline(deadline)
    needed = rb_needed(inst, deadline)
    bad = selection_precheck(inst, needed)
    if bad is not None:
        return bad
    k, n = inst.size, inst.num_rb
    cand = np.flatnonzero(needed > 0)
    if w is None:
        order = cand[np.argsort(needed[cand], kind="stable")]
        m = int(np.searchsorted(np.cumsum(needed[order]), n, side="right"))
        chosen = order[:m]
    else:
        cand = cand[w[cand] > 0]
        chosen = _knapsack(needed[cand], w[cand], n)
        chosen = cand[chosen]
    selected = np.zeros(k, dtype=bool)
    selected[chosen] = True
    rb = np.where(selected, needed, 0)
    objective = float(selected.sum()) if w is None else float(w[selected].sum())
    reason = "optimal" if selected.any() else "no device with positive weight can meet the deadline"
    return SelectionResult(True, reason, selected, rb, objective, needed)


def _knapsack(sizes: np.ndarray, values: np.ndarray, capacity: int) -> np.ndarray:
    """0/1 knapsack with positive values by DP over integer capacities; returns the indices of
    an optimal item set.

    ``best[c]`` is the largest value with total size ``<= c``; item ``i`` updates
    ``best[c] = max(best[c], best[c - s_i] + v_i)`` for all ``c >= s_i`` at once (one
    vectorised pass per item, ``O(K N_rb)``). The items of the most common size are left out
    of the DP and added at the end: with ``r`` capacity left, taking the ``floor(r / s)``
    most valuable of them is optimal (equal sizes, positive values), so the answer is
    ``max_c best[c] + prefix[min((N_rb - c) // s, count)]``. With many devices needing one
    RB, as is typical, this removes most of the DP.
    """
    if int(sizes.sum()) <= capacity:
        return np.arange(sizes.size)
    uniq, counts = np.unique(sizes, return_counts=True)
    s_fill = int(uniq[np.argmax(counts)])
    fill = np.flatnonzero(sizes == s_fill)
    fill = fill[np.argsort(-values[fill], kind="stable")]
    prefix = np.concatenate([[0.0], np.cumsum(values[fill])])
    rest = np.flatnonzero(sizes != s_fill)

    best = np.zeros(capacity + 1)
    take = np.zeros((rest.size, capacity + 1), dtype=bool)
    for row, i in enumerate(rest):
        s = int(sizes[i])
        if s > capacity:
            continue
        cand = best[: capacity + 1 - s] + values[i]
        np.greater(cand, best[s:], out=take[row, s:])
        np.maximum(best[s:], cand, out=best[s:])

    n_fill = np.minimum((capacity - np.arange(capacity + 1)) // s_fill, fill.size)
    c = int(np.argmax(best + prefix[n_fill]))
    chosen = list(fill[: n_fill[c]])
    for row in range(rest.size - 1, -1, -1):
        if take[row, c]:
            chosen.append(rest[row])
            c -= int(sizes[rest[row]])
    return np.sort(np.array(chosen, dtype=np.int64))
