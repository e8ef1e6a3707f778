r"""What a round costs a device, for any model: training FLOPs, update bits, and device profiles.

A device's round costs ([P001] eq. 3–5; ``docs/federated.md``, "The virtual clock")::

    T_k = F_k / f_k + b_k / R_k,        E_k = e_k F_k + P_k b_k / R_k

with ``F_k`` the FLOPs of its local training (:func:`training_flops`), ``b_k`` the bits of its update
(:func:`update_bits`), ``f_k`` its compute speed, ``e_k`` its energy per FLOP, ``P_k`` its transmit
power and ``R_k`` the uplink rate of the resource blocks it was given (from its channel gain ``h_k``).
:func:`device_profiles` builds the per-device table from exactly those numbers.

Only :func:`training_flops` and :func:`buffer_names` import torch, when they are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from numpy.typing import ArrayLike

from fedmoe.wireless.devices import DeviceProfiles
from fedmoe.wireless.ofdma import dbm_to_w

if TYPE_CHECKING:
    from flwr.app import ArrayRecord

__all__ = ["buffer_names", "device_profiles", "per_device", "training_flops", "update_bits"]


def training_flops(model: Any, example_input: Any, samples: int = 1, epochs: int = 1) -> float:
    """FLOPs of ``epochs`` passes of local training over ``samples`` samples of any torch module:
    ``F = 3 × epochs × samples × forward FLOPs per sample``.

    The forward FLOPs per sample are counted by torch's ``FlopCounterMode`` on ``example_input``
    (:func:`fedmoe.models.cost.count_flops`: matmuls and convolutions at 2 FLOPs per multiply–add);
    the backward pass is taken as twice the forward (:data:`fedmoe.models.cost.FORWARD_BACKWARD_FACTOR`).

    Parameters
    ----------
    model : torch.nn.Module
        The model a device trains.
    example_input : torch.Tensor, tuple of tensors or dict of tensors
        A batch of inputs (any batch size; the count is divided by it): ``model(x)``,
        ``model(*inputs)`` or ``model(inputs)``.
    samples, epochs : int
        The device's training samples and local epochs.
    """
    from fedmoe.models.cost import FORWARD_BACKWARD_FACTOR, count_flops

    if int(samples) < 0 or int(epochs) < 0:
        raise ValueError(f"training_flops: samples and epochs must be >= 0, got {samples} and {epochs}")
    return FORWARD_BACKWARD_FACTOR * int(epochs) * int(samples) * float(count_flops(model, example_input))


def update_bits(arrays: ArrayRecord | Mapping[str, Any]) -> int:
    """Bits of an update on the uplink: every array at its own width, ``Σ size × itemsize × 8``.

    ``arrays`` is a Flower ``ArrayRecord`` (read from each ``Array``'s shape and dtype, nothing decoded)
    or a mapping of numpy arrays or torch tensors (a ``state_dict``)."""
    total = 0
    for name, value in arrays.items():
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        if shape is None or dtype is None:
            raise TypeError(f"update_bits: {name!r} is a {type(value).__name__}, not an array")
        itemsize = getattr(dtype, "itemsize", None)
        if itemsize is None:  # a Flower Array's dtype is its numpy name; a torch dtype has .itemsize
            itemsize = np.dtype(str(dtype)).itemsize
        total += int(np.prod(tuple(shape), dtype=np.int64)) * int(itemsize) * 8
    return total


def buffer_names(model: Any) -> set[str]:
    """The ``state_dict`` names of ``model`` that are not trainable parameters (BatchNorm statistics,
    counters): what :class:`~fedmoe.plugins.validation.ValidatedStrategy` should leave out of its step
    check (``buffers=``)."""
    params = {name for name, _ in model.named_parameters()}
    return {name for name in model.state_dict() if name not in params}


def per_device(value: ArrayLike, num_devices: int) -> np.ndarray | None:
    """``value`` as one float per device (a copy): one value for all, or one each (numpy broadcasting to
    ``(num_devices,)``); ``None`` when its shape allows neither, for the caller to say so in its own words."""
    try:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (num_devices,)).copy()
    except ValueError:
        return None


def device_profiles(gain_db: ArrayLike, tx_power_dbm: ArrayLike, compute_flops: ArrayLike,
                    energy_per_flop_j: ArrayLike = 1e-9, distance_m: ArrayLike | None = None,
                    los: ArrayLike | None = None) -> DeviceProfiles:
    """Device profiles from link gains, transmit powers and compute speeds (no scenario, no sensing).

    Parameters
    ----------
    gain_db : array_like
        (K,) channel power gain ``10 log10 h_k`` in dB (minus path loss and shadowing, e.g. -110).
    tx_power_dbm : array_like
        (K,) or one transmit power ``P_k``, dBm.
    compute_flops : array_like
        (K,) or one compute speed ``f_k``, FLOP/s.
    energy_per_flop_j : array_like, default 1e-9
        (K,) or one energy per FLOP ``e_k``, J.
    distance_m, los : array_like, optional
        (K,) distances and LoS flags, kept for reports (``nan`` and ``False`` when not given).
    """
    gain = np.atleast_1d(np.asarray(gain_db, dtype=np.float64))
    if gain.ndim != 1 or gain.size == 0:
        raise ValueError(f"device_profiles: gain_db must be a non-empty 1-D array, got shape {gain.shape}")
    k = gain.size

    def checked(name: str, value: ArrayLike | None, default: float, positive: bool) -> np.ndarray:
        given = default if value is None else value
        arr = per_device(given, k)
        if arr is None:
            raise ValueError(f"device_profiles: {name} has shape {np.shape(given)}, expected one value or ({k},)")
        if not np.isfinite(arr).all() and name != "distance_m":
            raise ValueError(f"device_profiles: {name} must be finite")
        if positive and (arr <= 0).any():
            raise ValueError(f"device_profiles: {name} must be > 0, got {arr[arr <= 0][0]:g}")
        return arr

    if not np.isfinite(gain).all():
        raise ValueError("device_profiles: gain_db must be finite")
    power = dbm_to_w(checked("tx_power_dbm", tx_power_dbm, 0.0, False))
    flops = checked("compute_flops", compute_flops, 1.0, True)
    epf = checked("energy_per_flop_j", energy_per_flop_j, 1e-9, False)
    if (epf < 0).any():
        raise ValueError("device_profiles: energy_per_flop_j must be >= 0")
    dist = checked("distance_m", distance_m, np.nan, False)
    los_flags = np.broadcast_to(np.asarray(False if los is None else los, dtype=bool), (k,)).copy()
    return DeviceProfiles(tx_power_w=power, compute_flops=flops, energy_per_flop_j=epf,
                          sensing_time_s=np.zeros((k, 0)), sensing_energy_j=np.zeros((k, 0)),
                          gain=10.0 ** (gain / 10.0), distance_m=dist, los=los_flags,
                          pathloss_db=-gain, shadowing_db=np.zeros(k), fading=np.ones(k), modalities=())
