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


def _scenario_json(msg: Message) -> str:
    config = msg.content["config"]
    if "scenario" not in config:
        raise ValueError("message config lacks 'scenario' (the fedmoe config as JSON)")
    return str(config["scenario"])


def message_config(msg: Message):
    """The :class:`~fedmoe.config.FedMoEConfig` a message carries (``config["scenario"]``), parsed without
    building its world (no torch: what a query needs)."""
    import json

    from fedmoe.config import parse_config

    return parse_config(json.loads(_scenario_json(msg)), source="scenario from the server")


def message_world(msg: Message):
    """The :class:`~fedmoe.federated.world.ScenarioWorld` of the scenario a message carries
    (``config["scenario"]``, the fedmoe config as JSON)."""
    from fedmoe.federated.world import world_for

    return world_for(_scenario_json(msg))


def device_world(msg: Message, context: Context):
    """``(world, device id)`` of a message to this node; the world's
    :attr:`~fedmoe.federated.world.ScenarioWorld.prepared` is this node's cache of generated data
    (:func:`prepared_cache`)."""
    world = message_world(msg)
    pid = device_id(context, world.num_devices)
    world.prepared = prepared_cache(context)
    return world, pid


def prepared_cache(context: Context):
    """The :class:`~fedmoe.federated.prepared.PreparedCache` in the node config's ``state-dir`` (a SuperNode's own
    folder), or ``None`` without one (simulation: workers keep partitions in memory)."""
    from fedmoe.federated.device_state import state_folder
    from fedmoe.federated.prepared import PreparedCache

    folder = state_folder(dict(context.node_config), {})
    return None if folder is None else PreparedCache(folder)


def log_prepared(world, pid: int, what: str, started: float) -> None:
    """On a node with a cache of prepared data: one log line saying what the message found there, how long its
    handler took and how old this process was when the handler started (its start-up and imports)."""
    import logging
    import time

    cache = world.prepared
    if cache is None:
        return
    import psutil

    age = started - psutil.Process().create_time()
    found = ", ".join(f"{name} {event}" for name, event in cache.events) or "nothing looked up"
    cache.events.clear()
    logging.getLogger("flwr").info("fedmoe device %d %s: process start-up %.1f s, handler %.1f s (prepared: %s)",
                                   pid, what, age, time.time() - started, found)


def request(msg: Message, context: Context):
    """``(world, device id, config, phase)`` of a message to a handler with phases (split, experts)."""
    world, pid = device_world(msg, context)
    config = msg.content["config"]
    if "phase" not in config:
        raise ValueError("message config lacks 'phase'")
    return world, pid, config, str(config["phase"])
