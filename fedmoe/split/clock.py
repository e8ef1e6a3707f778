"""Latency and energy of split-learning exchanges on the virtual clock.

The ``K`` devices of a round share the uplink evenly: ``n = ⌊N_rb / K⌋`` resource blocks
each (at least one), bandwidth ``B_k = n · B_rb`` and Shannon rate ``R_k``
(:func:`fedmoe.wireless.devices.equal_share_rate`, [P001] eq. 3). In one exchange device
``k`` computes ``F_k`` FLOPs and sends

* its features over the feature link: airtime ``D/(2 B_k)`` per vector for the analog link
  (two real entries per complex symbol, [P004]), ``(D·b + 32)/(B_k log2 M)`` for the
  digital one, ``D · value_bits / R_k`` for the ideal (lossless, capacity-achieving) one;
* side information (gate inputs, presence flags, labels, row indices) as bits at ``R_k``.

``T_k = F_k / f_k + t_up,k`` and ``E_k = e_k F_k + P_k t_up,k`` ([P001] eq. 4–5, no
sensing: the data exist). Exchanges are synchronous: one lasts ``max_k T_k``; a round is
the sum of its exchanges. Downlink traffic (gradients, selections) is counted in bits
but, as in the federated rounds, not timed.

The SNR of device ``k``'s feature link is ``split.snr_db`` when set, else its own uplink
SNR on its share of the band, ``P_k h_k / (N0 B_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmoe.federated.world import ScenarioWorld
from fedmoe.split.links import FeatureLink
from fedmoe.wireless.devices import equal_share_rate, rb_snr_db
from fedmoe.wireless.ofdma import db_to_linear


@dataclass
class LinkBudget:
    """Per-device uplink of one round (arrays in the order of ``device_ids``)."""

    device_ids: np.ndarray
    rate_bps: np.ndarray
    bandwidth_hz: np.ndarray
    snr_linear: np.ndarray

    def index(self, device_id: int) -> int:
        hits = np.flatnonzero(self.device_ids == device_id)
        if hits.size == 0:
            raise KeyError(f"device {device_id} is not in this round")
        return int(hits[0])


def link_budget(world: ScenarioWorld, device_ids: list[int] | np.ndarray) -> LinkBudget:
    """Rates, bandwidths and feature-link SNRs when ``device_ids`` share the uplink evenly."""
    ids = np.asarray(device_ids, dtype=np.int64)
    wcfg = world.cfg.wireless
    prof = world.profiles.subset(ids)
    rb = max(1, wcfg.uplink.num_resource_blocks // max(len(ids), 1))
    bandwidth = np.full(len(ids), rb * wcfg.uplink.resource_block_hz)
    rate = equal_share_rate(prof, wcfg)
    if world.cfg.split.snr_db is not None:
        snr = np.full(len(ids), float(db_to_linear(world.cfg.split.snr_db)))
    else:
        snr = db_to_linear(rb_snr_db(prof, wcfg)) / rb
    return LinkBudget(ids, rate, bandwidth, np.asarray(snr, dtype=np.float64))


def uplink_seconds(world: ScenarioWorld, link: FeatureLink | None, budget: LinkBudget, device_id: int,
                   num_vectors: int, dim: int, side_bits: float) -> float:
    """Airtime of ``num_vectors`` feature vectors of ``dim`` entries plus ``side_bits`` of side information."""
    k = budget.index(device_id)
    rate = float(budget.rate_bps[k])
    if rate <= 0:
        return float("inf") if num_vectors or side_bits else 0.0
    if link is None:
        features = num_vectors * dim * world.cfg.split.value_bits / rate
    else:
        features = num_vectors * link.airtime_s(dim, float(budget.bandwidth_hz[k]))
    return float(features + side_bits / rate)


def exchange_cost(world: ScenarioWorld, device_id: int, flops: float, uplink_s: float) -> tuple[float, float]:
    """``(T_k, E_k)`` of one exchange of device ``device_id`` (module docstring)."""
    prof = world.profiles.subset([device_id])
    compute_s = float(flops / prof.compute_flops[0])
    energy = float(prof.energy_per_flop_j[0] * flops + prof.tx_power_w[0] * uplink_s)
    return compute_s + uplink_s, energy
