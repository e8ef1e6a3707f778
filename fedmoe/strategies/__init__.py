"""Server side: Flower strategies for the federated mixture of experts, and the ServerApp.

* :class:`ExpertWise` — expert-wise aggregation with resource-aware selection (default);
* :class:`PlainFedAvg` — the plain FedAvg baseline on the dense model;
* :class:`FedBuff` — semi-asynchronous rounds: buffered asynchronous expert-wise aggregation ([P010]);
* :data:`AGGREGATORS` — Flower's built-in strategies as the rule under ``ExpertWise``;
* :data:`STRATEGIES` — strategies by name (``federated.strategy``).
"""

from fedmoe.federated.rounds import RoundRecord
from fedmoe.strategies.aggregators import AGGREGATORS, make_aggregator
from fedmoe.strategies.discovery import DeviceInfo
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.strategies.fedbuff import FedBuff
from fedmoe.strategies.plain_fedavg import PlainFedAvg, baseline_config
from fedmoe.strategies.registry import STRATEGIES

__all__ = ["AGGREGATORS", "STRATEGIES", "DeviceInfo", "ExpertWise", "FedBuff", "PlainFedAvg", "RoundRecord",
           "baseline_config", "make_aggregator"]
