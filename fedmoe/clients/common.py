"""What every handler of the fedmoe ClientApp shares: the :class:`~flwr.clientapp.ClientApp`
object itself and reading a message's request.

:mod:`fedmoe.clients.app` (federated rounds), :mod:`fedmoe.clients.split`, :mod:`fedmoe.clients.distributed` and
:mod:`fedmoe.clients.v2i` register their handlers on :data:`app`; :mod:`fedmoe.clients.app` imports them
all, so ``fedmoe.clients.app:app`` is the whole ClientApp. Nothing here imports a handler module.
"""

from __future__ import annotations

import re

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


def device_id(context: Context, num_devices: int) -> int:
    """The device this node is: its node config's ``partition-id``, checked to be an integer in
    ``[0, num_devices)`` and, if the node config has ``num-partitions``, that it equals
    ``num_devices``; else a one-line ``ValueError`` naming the node-config key."""
    cfg = context.node_config
    if "partition-id" not in cfg:
        raise ValueError("node config lacks 'partition-id' (start the SuperNode with --node-config "
                         "\"partition-id=K num-partitions=N\")")
    pid = node_int(cfg, "partition-id")
    if "num-partitions" in cfg and node_int(cfg, "num-partitions") != num_devices:
        raise ValueError(f"node config says num-partitions={cfg['num-partitions']}, the scenario has "
                         f"partition.num_devices={num_devices}")
    if not 0 <= pid < num_devices:
        raise ValueError(f"node config partition-id {pid} is outside [0, {num_devices})")
    return pid


def node_int(node_config, key: str) -> int:
    """The integer value of ``key`` in a node config (an int, or a string of one); else a ``ValueError``."""
    value = node_config[key]
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"node config {key}={value!r}: expected an integer")


def message_world(msg: Message):
    """The :class:`~fedmoe.federated.world.ScenarioWorld` of the scenario a message carries
    (``config["scenario"]``, the fedmoe config as JSON)."""
    from fedmoe.federated.world import world_for

    config = msg.content["config"]
    if "scenario" not in config:
        raise ValueError("message config lacks 'scenario' (the fedmoe config as JSON)")
    return world_for(str(config["scenario"]))


def request(msg: Message, context: Context):
    """``(world, device id, config, phase)`` of a message to a handler with phases (split, experts)."""
    world = message_world(msg)
    pid = device_id(context, world.num_devices)
    config = msg.content["config"]
    if "phase" not in config:
        raise ValueError("message config lacks 'phase'")
    return world, pid, config, str(config["phase"])
