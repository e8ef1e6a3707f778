"""Per-device cost vector ``C(E_i)`` of the resource-aware loss ([P001] eq. 9).

For device ``k`` and expert ``i`` (which reads modalities ``M_i``, costs ``F_i`` FLOPs per
sample and needs ``b_i`` uplink bits for its input), using the device layer
(:mod:`fedmoe.wireless.devices`):

* latency  ``T_ki = Σ_{m∈M_i} T_sense,km + F_i / f_k + b_i / R_k``,
* energy   ``E_ki = Σ_{m∈M_i} E_sense,km + e_k F_i + P_k b_i / R_k``,

and the cost the gate sees and the loss charges is the normalised mix

    C_ki = β T_ki / T_ref + (1 − β) E_ki / E_ref,

with ``T_ref`` and ``E_ref`` the largest finite latency and energy over all devices and
experts of the batch of devices given (so ``C ∈ [0, 1]``; an expert a device cannot
afford at all, ``R_k = 0``, costs 1). Because ``R_k`` depends on the device's channel,
the same expert is cheap on a strong link and costly on a weak one: that is what lets one
gate, fed this vector, serve devices with different channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fedmoe.config import MODALITIES
from fedmoe.wireless.devices import DeviceProfiles, device_energy, device_latency


@dataclass(frozen=True)
class ExpertFootprint:
    """What an expert costs wherever it runs: FLOPs per sample, input bits, modalities read."""

    flops: float
    bits: float
    modalities: tuple[str, ...]


@dataclass
class CostMatrices:
    """Per device and expert (K, E): latency (s), energy (J) and the normalised cost ``C``."""

    latency_s: np.ndarray
    energy_j: np.ndarray
    cost: np.ndarray


def expert_cost_matrices(footprints: Sequence[ExpertFootprint], profiles: DeviceProfiles, rate_bps: np.ndarray,
                         latency_weight: float = 0.5, reference: tuple[float, float] | None = None) -> CostMatrices:
    """Latency, energy and normalised cost of every expert on every device (module docstring).

    Parameters
    ----------
    footprints
        One :class:`ExpertFootprint` per expert.
    profiles
        ``K`` device profiles.
    rate_bps
        Uplink rate ``R_k`` of each device (K,), e.g. from its resource-block allocation.
    latency_weight
        ``β`` in ``[0, 1]``: share of latency (vs energy) in the cost.
    reference
        ``(T_ref, E_ref)`` to normalise by instead of this batch's own maxima, so that one
        device alone (a federated client with its allocated rate) gets the cost scale of
        the whole population (:func:`cost_reference`).
    """
    if not 0.0 <= latency_weight <= 1.0:
        raise ValueError(f"latency_weight must be in [0, 1], got {latency_weight}")
    if not footprints:
        raise ValueError("no experts given")
    k = len(profiles)
    rate = np.broadcast_to(np.asarray(rate_bps, dtype=np.float64), (k,))
    lat = np.empty((k, len(footprints)))
    eng = np.empty_like(lat)
    for i, fp in enumerate(footprints):
        unknown = set(fp.modalities) - set(profiles.modalities)
        if unknown:
            raise ValueError(f"expert {i} reads unknown modalities {sorted(unknown)}; "
                             f"known: {list(profiles.modalities)}")
        used = np.zeros((k, len(profiles.modalities)), dtype=bool)
        used[:, [profiles.modalities.index(m) for m in fp.modalities]] = True
        flops, bits = np.full(k, fp.flops), np.full(k, fp.bits)
        lat[:, i] = device_latency(profiles, flops, bits, rate, used)
        eng[:, i] = device_energy(profiles, flops, bits, rate, used)
    t_ref, e_ref = (None, None) if reference is None else reference
    cost = latency_weight * _normalised(lat, t_ref) + (1.0 - latency_weight) * _normalised(eng, e_ref)
    return CostMatrices(lat, eng, cost)


def cost_reference(matrices: CostMatrices) -> tuple[float, float]:
    """``(T_ref, E_ref)``: the largest finite latency and energy of ``matrices`` (module docstring)."""
    return _reference(matrices.latency_s), _reference(matrices.energy_j)


def selection_latency_energy(selected: np.ndarray, device: np.ndarray, footprints: Sequence[ExpertFootprint],
                             profiles: DeviceProfiles, rate_bps: np.ndarray,
                             bits_per_modality: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Latency and energy of what a gate selected, per sample, counting each modality once.

    For sample ``n`` on device ``k`` that computes the experts ``S_n``, with
    ``U_n = ∪_{i∈S_n} M_i`` the modalities they read:

    * ``T_n = Σ_{m∈U_n} T_sense,km + Σ_{i∈S_n} F_i / f_k + Σ_{m∈U_n} b_m / R_k``,
    * ``E_n = Σ_{m∈U_n} E_sense,km + e_k Σ_{i∈S_n} F_i + P_k Σ_{m∈U_n} b_m / R_k``.

    A modality is sensed and sent once however many selected experts read it, so
    for several experts this is *less* than the sum of their entries of
    :func:`expert_cost_matrices` (which charges each expert its own input); for one
    expert the two agree.

    Parameters
    ----------
    selected
        (N, E) bool: the experts computed for each sample.
    device
        (N,) index into ``profiles`` and ``rate_bps`` of each sample's device.
    footprints, profiles, rate_bps
        As for :func:`expert_cost_matrices`.
    bits_per_modality
        Uplink bits of one sample of each modality.
    """
    selected = np.asarray(selected, dtype=bool)
    device = np.asarray(device)
    if selected.ndim != 2 or selected.shape[1] != len(footprints):
        raise ValueError(f"selected must have shape (N, {len(footprints)}), got {selected.shape}")
    if device.shape != (selected.shape[0],):
        raise ValueError(f"device must have shape ({selected.shape[0]},), got {device.shape}")
    mods = profiles.modalities
    used = modalities_used(selected, footprints, mods)
    flops = selected.astype(np.float64) @ np.array([fp.flops for fp in footprints], dtype=np.float64)
    bits = _bits_of(used, mods, bits_per_modality)
    on = profiles.subset(device)
    rate = np.broadcast_to(np.asarray(rate_bps, dtype=np.float64), (len(profiles),))[device]
    return device_latency(on, flops, bits, rate, used), device_energy(on, flops, bits, rate, used)


def modalities_used(selected: np.ndarray, footprints: Sequence[ExpertFootprint],
                    modalities: Sequence[str]) -> np.ndarray:
    """(N, M) bool: the modalities ``U_n = ∪_{i∈S_n} M_i`` the selected experts of each sample read."""
    needs = np.zeros((len(footprints), len(modalities)), dtype=bool)
    for i, fp in enumerate(footprints):
        needs[i, [list(modalities).index(m) for m in fp.modalities]] = True
    return (np.asarray(selected, dtype=np.int64) @ needs.astype(np.int64)) > 0


def selection_bits(selected: np.ndarray, footprints: Sequence[ExpertFootprint], modalities: Sequence[str],
                   bits_per_modality: dict[str, float]) -> np.ndarray:
    """Uplink bits of each sample's selection (N,): ``Σ_{m∈U_n} b_m``, each modality sent once."""
    return _bits_of(modalities_used(selected, footprints, modalities), modalities, bits_per_modality)


def _bits_of(used: np.ndarray, modalities: Sequence[str], bits_per_modality: dict[str, float]) -> np.ndarray:
    """``Σ_{m∈U_n} b_m`` from the (N, M) modalities used."""
    bits_m = np.array([float(bits_per_modality.get(m, 0.0)) for m in modalities])
    return used.astype(np.float64) @ bits_m


LINK_CLASSES: tuple[str, ...] = ("weak", "medium", "strong")
"""Link classes of :func:`link_classes`, weakest first."""


def link_classes(rate_bps: np.ndarray) -> np.ndarray:
    """Each device's link class by its uplink rate: terciles ``weak`` / ``medium`` / ``strong``.

    With fewer than three devices there are no terciles: every device is ``all``.
    """
    rate = np.asarray(rate_bps, dtype=np.float64)
    if len(rate) < 3:
        return np.array(["all"] * len(rate))
    lo, hi = np.quantile(rate, [1 / 3, 2 / 3])
    return np.where(rate <= lo, "weak", np.where(rate <= hi, "medium", "strong"))


def _reference(x: np.ndarray) -> float:
    finite = np.isfinite(x)
    ref = float(x[finite].max()) if finite.any() else 1.0
    return ref if ref > 0 else 1.0


def _normalised(x: np.ndarray, ref: float | None = None) -> np.ndarray:
    ref = _reference(x) if ref is None else ref
    if not ref > 0:
        raise ValueError(f"cost reference must be > 0, got {ref}")
    return np.where(np.isfinite(x), np.minimum(x / ref, 1.0), 1.0)


def modality_index(modalities: Sequence[str]) -> list[int]:
    """Column indices of ``modalities`` in :data:`fedmoe.config.MODALITIES` (clear error if unknown)."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
    return [MODALITIES.index(m) for m in modalities]
