"""Plain FedAvg on the full all-modality model: the baseline of the federated MoE.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data" (AISTATS 2017), run on the same devices, channel and virtual clock as
:class:`fedmoe.strategies.ExpertWise`, without any of its resource awareness.
"""

from __future__ import annotations

from typing import Any, Callable

from fedmoe.config import FedMoEConfig
from fedmoe.federated.rounds import RoundRecord
from fedmoe.federated.world import world_for
from fedmoe.strategies.expert_wise import ExpertWise


def baseline_config(cfg: FedMoEConfig) -> FedMoEConfig:
    """``cfg`` turned into the plain-FedAvg baseline: dense gate (every expert on every sample),
    one training stage in which every parameter trains (never the gate alone: ``routing_trains_experts``) for
    ``local_epochs`` passes a round (not the mixture's ``stage2_local_epochs`` of gate-only passes), λ = 0,
    random selection, equal bandwidth split, FedAvg."""
    return cfg.model_copy(deep=True, update={
        "model": cfg.model.model_copy(update={"gate": "dense"}),
        "train": cfg.train.model_copy(update={"cost_weight": 0.0, "routing_trains_experts": True}),
        "federated": cfg.federated.model_copy(update={
            "stage1_rounds": 0, "stage2_local_epochs": None, "selection": "random", "allocation": "equal",
            "max_modalities": 5,
            "strategy": "plain_fedavg", "aggregator": "fedavg", "aggregator_options": {}}),
    })


class PlainFedAvg(ExpertWise):
    r"""FedAvg of every parameter over every participant, on the dense mixture.

    .. math::

        w^{t+1} = \frac{\sum_{k \in S_t} n_k w_k}{\sum_{k \in S_t} n_k}

    for every parameter (experts included: with the dense gate every device computes
    every expert it has), :math:`S_t` drawn uniformly (``clients_per_round``) and the
    uplink split equally among them. Latency and energy go on the same virtual clock as
    :class:`~fedmoe.strategies.ExpertWise`, so time-to-accuracy can be compared.

    Config keys clients must honour: as :class:`~fedmoe.strategies.ExpertWise` (stage is
    always 2, λ is 0, every sensor is allowed).

    Parameters
    ----------
    cfg : FedMoEConfig
        The scenario; it is turned into the baseline by :func:`baseline_config`.
    on_round : callable, optional
        ``on_round(record)`` after each aggregation.
    """

    expert_wise = False

    def __init__(self, cfg: FedMoEConfig, on_round: Callable[[RoundRecord], None] | None = None,
                 **_: Any) -> None:
        super().__init__(world_for(baseline_config(cfg)), on_round=on_round)
