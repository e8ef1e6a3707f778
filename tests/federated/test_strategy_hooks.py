"""The public hooks a user's strategy overrides (docs/federated.md, "Your own strategy or rule")."""

from __future__ import annotations

from flwr.app import ConfigRecord

from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import RoundInstructions
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from fedmoe.strategies import ExpertWise
from tests.federated.conftest import LocalGrid


class RisingLambda(ExpertWise):
    """The example of the docs: λ grows with the round."""

    def cost_weight(self, server_round: int) -> float:
        return self.world.cfg.train.cost_weight * (1 + server_round / 10)


def _sent_lambdas(strategy: ExpertWise, server_round: int) -> set[float]:
    grid = LocalGrid(strategy.world.num_devices)
    arrays = to_record(state_to_numpy(strategy.world.template.state_dict()))
    msgs = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    assert msgs
    return {RoundInstructions.from_config(dict(m.content["config"])).cost_weight for m in msgs}


def test_cost_weight_is_what_the_devices_are_sent_each_round(tiny_cfg):
    lam = tiny_cfg.train.cost_weight
    assert lam > 0  # else every λ below would be 0 alike
    assert _sent_lambdas(ExpertWise(world_for(tiny_cfg)), 3) == {lam}
    rising = RisingLambda(world_for(tiny_cfg))
    assert _sent_lambdas(rising, 1) == {lam * 1.1}
    assert _sent_lambdas(rising, 5) == {lam * 1.5}
