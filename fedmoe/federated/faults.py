"""Faults injected into simulated devices (``federated.faults``), for reliability experiments.

A device asked to train in round ``t`` draws one fate from ``federated.faults.seed``, ``t``
and its partition id (so reruns meet the same faults):

``crash`` (``crash_rate``)
    the handler raises; the server receives an error reply and logs it.
``hang`` (``hang_rate``)
    the device trains and replies only after ``hang_s`` wall-clock seconds; with
    ``hang_s`` above ``federated.round_timeout_s`` the server has moved on (a timeout).
``straggler`` (``straggler_rate``)
    the device replies late by ``straggler_delay_s`` wall-clock seconds, and its reported
    latency and energy are ``straggler_factor`` times larger (the virtual clock sees it).

Independently, a fixed share ``sign_flip_fraction`` of the devices (chosen once from the
seed) is malicious: it sends ``θ − s (θ_k − θ)`` instead of its update ``θ_k`` (a
sign-flipping attack of scale ``s = sign_flip_scale`` on every floating-point array).
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from fedmoe.config import FaultConfig
from fedmoe.federated.protocol import ENERGY_KEY, LATENCY_KEY

FATES = ("ok", "crash", "hang", "straggler")


class InjectedCrash(RuntimeError):
    """A crash injected by ``federated.faults`` (not a bug)."""


def fate(cfg: FaultConfig, server_round: int, device_id: int) -> str:
    """What happens to ``device_id`` in ``server_round`` (module docstring)."""
    u = np.random.default_rng([cfg.seed, server_round, device_id]).random()
    for name, rate in (("crash", cfg.crash_rate), ("hang", cfg.hang_rate), ("straggler", cfg.straggler_rate)):
        if u < rate:
            return name
        u -= rate
    return "ok"


def malicious_devices(cfg: FaultConfig, num_devices: int) -> np.ndarray:
    """The sorted ids of the sign-flipping devices: ``round(fraction × N)`` of them, fixed by the seed."""
    count = int(round(cfg.sign_flip_fraction * num_devices))
    rng = np.random.default_rng([cfg.seed, 7919])
    return np.sort(rng.choice(num_devices, size=count, replace=False)) if count else np.zeros(0, dtype=np.int64)


def before_training(cfg: FaultConfig, server_round: int, device_id: int) -> str:
    """Apply the crash or the wall-clock delay of this round's fate; returns the fate."""
    f = fate(cfg, server_round, device_id)
    if f == "crash":
        raise InjectedCrash(f"injected crash of device {device_id} in round {server_round}")
    if f == "hang":
        time.sleep(cfg.hang_s)
    elif f == "straggler" and cfg.straggler_delay_s > 0:
        time.sleep(cfg.straggler_delay_s)
    return f


def after_training(cfg: FaultConfig, f: str, metrics: dict) -> None:
    """Scale a straggler's latency and energy (in place)."""
    if f == "straggler":
        for key in (LATENCY_KEY, ENERGY_KEY):
            if key in metrics:
                metrics[key] = float(metrics[key]) * cfg.straggler_factor


def sign_flip(cfg: FaultConfig, arrays: dict[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> None:
    """A malicious device's update: ``θ − s (θ_k − θ)`` in place of every floating array ``θ_k`` of
    ``arrays`` that ``sent`` has (as ``θ``). It acts before compression
    (:func:`fedmoe.federated.local.local_update`'s ``tamper``), so the flipped update is what is compressed."""
    for k, v in arrays.items():
        if np.issubdtype(v.dtype, np.floating) and k in sent:
            ref = np.asarray(sent[k], dtype=v.dtype)
            arrays[k] = (ref - cfg.sign_flip_scale * (v - ref)).astype(v.dtype)
