"""Server strategies by name: ``federated.strategy`` selects one.

A factory takes the scenario config and an optional ``on_round`` callback and returns a
Flower :class:`~flwr.serverapp.strategy.Strategy`. Strategies that expose ``world``
(their :class:`~fedmoe.federated.world.ScenarioWorld`) and ``history`` (a list of
:class:`~fedmoe.federated.rounds.RoundRecord`) get the virtual-clock plots of the run
folder. Register your own::

    from fedmoe.strategies import STRATEGIES, ExpertWise

    class Greedy(ExpertWise):
        def cost_weight(self, server_round):  # e.g. raise λ as the rounds go by
            return self.world.cfg.train.cost_weight * (1 + server_round / 10)

    STRATEGIES.register("greedy", lambda cfg, on_round=None: Greedy(world_for(cfg), on_round=on_round))

and run it with ``fedmoe run --set federated.strategy=greedy``. A factory may carry a ``check``
attribute, ``check(cfg)``, which ``fedmoe run`` calls before anything starts (a one-line
:class:`~fedmoe.config.ConfigError` for settings the strategy cannot run with; ``fedbuff`` has one).
"""

from __future__ import annotations

from typing import Callable

from flwr.serverapp.strategy import Strategy

from fedmoe.config import FedMoEConfig
from fedmoe.federated.rounds import RoundRecord
from fedmoe.federated.world import world_for
from fedmoe.registry import Registry
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.strategies.fedbuff import FedBuff, check_fedbuff_config
from fedmoe.strategies.plain_fedavg import PlainFedAvg

StrategyFactory = Callable[..., Strategy]
"""``factory(cfg: FedMoEConfig, on_round=None) -> Strategy``."""

STRATEGIES: Registry[StrategyFactory] = Registry("strategy")


@STRATEGIES.register("expert_wise")
def expert_wise(cfg: FedMoEConfig, on_round: Callable[[RoundRecord], None] | None = None) -> ExpertWise:
    return ExpertWise(world_for(cfg), on_round=on_round)


@STRATEGIES.register("plain_fedavg")
def plain_fedavg(cfg: FedMoEConfig, on_round: Callable[[RoundRecord], None] | None = None) -> PlainFedAvg:
    return PlainFedAvg(cfg, on_round=on_round)


@STRATEGIES.register("fedbuff")
def fedbuff(cfg: FedMoEConfig, on_round: Callable[[RoundRecord], None] | None = None) -> FedBuff:
    return FedBuff(world_for(cfg), on_round=on_round)


fedbuff.check = check_fedbuff_config  # type: ignore[attr-defined]  # run before Ray starts (modes.federated)
