"""Expert-hosting handler of the fedmoe ClientApp (message type ``query.expert``, [P004]).

Device ``k`` (``partition-id`` ``k``) hosts expert ``k`` of the distributed mixture
(:mod:`fedmoe.strategies.distributed_experts`). ``config["phase"]``:

``deploy``
    ``arrays`` are the expert's parameters; the device keeps them in ``context.state``;
``infer``
    ``arrays["z"]`` are the features the server sent over the device's (noisy) downlink;
    the reply's ``arrays["out"]`` are the expert's logits on them.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict

from fedmoe.clients.common import app, request
from fedmoe.federated.protocol import PARTITION_KEY
from fedmoe.flower import to_numpy, to_record

EXPERT_KEY = "fedmoe.expert"


def _expert(world, num_classes: int):
    from fedmoe.models.experts import mlp_layers

    d = world.cfg.distributed
    return mlp_layers(d.feature_dim, d.hidden, num_classes)


@app.query("expert")
def expert(msg: Message, context: Context) -> Message:
    """Keep the deployed expert, or run it on received features (module docstring)."""
    import torch

    world, pid, config, phase = request(msg, context)
    if pid >= world.cfg.distributed.num_experts:
        raise ValueError(f"device {pid} hosts no expert (distributed.num_experts={world.cfg.distributed.num_experts})")
    if phase == "deploy":
        context.state[EXPERT_KEY] = msg.content["arrays"]
        return Message(content=RecordDict({"metrics": MetricRecord({PARTITION_KEY: pid})}), reply_to=msg)
    if phase != "infer":
        raise ValueError(f"unknown expert phase {phase!r}")
    stored = context.state.array_records.get(EXPERT_KEY)
    if stored is None:
        raise ValueError(f"device {pid} has no deployed expert (send phase 'deploy' first)")
    module = _expert(world, int(config["num-classes"]))
    module.load_state_dict({k: torch.as_tensor(v) for k, v in to_numpy(stored).items()})
    module.eval()
    with torch.no_grad():
        out = module(torch.as_tensor(to_numpy(msg.content["arrays"])["z"])).numpy()
    content = RecordDict({"arrays": to_record({"out": out}), "metrics": MetricRecord({PARTITION_KEY: pid})})
    return Message(content=content, reply_to=msg)
