"""Base-station handler of the fedmoe ClientApp: V2I agent training (message type ``train.v2i``, [P002]).

Base station ``r`` (``partition-id`` ``r``) serves one road section:
``speed_scale = v2i.federated.road_speed_scale[r]`` and the radar SNR
``v2i.federated.snr_db[r]`` (``v2i.snr_db`` when that list is empty). The server
(:mod:`fedmoe.strategies.v2i_federated`) sends the global agent every round.

Message content:

``config``
    ``scenario`` (the fedmoe config as JSON), ``phase`` = ``"train"``, ``round`` (the server round).
``arrays``
    the global agent's state dict (:func:`fedmoe.flower.to_record`).

The base station builds ``v2i.agent.policy``, loads the arrays and runs
``v2i.federated.local_updates`` updates of :func:`fedmoe.v2i.training.train_agent` on its
road, seeded from ``(v2i.seed, round, r)`` (:func:`fedmoe.v2i.federated.local_seed`). Its
Adam optimisers start fresh every round: nothing is kept in ``context.state``, so a
deployment may run each message in a fresh process. The reply carries the new state dict
(``arrays``) and ``metrics``: ``partition-id``, ``num-episodes`` (updates ×
``episodes_per_update``, the server's aggregation weight), ``energy-j`` (mean rollout energy
per slot of the last :data:`fedmoe.v2i.federated.LAST_UPDATES` updates), ``speed-scale``,
``snr-db`` and ``wall-s``.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict

from fedmoe.clients.common import app, request
from fedmoe.flower import to_numpy, to_record


@app.train("v2i")
def train_v2i(msg: Message, context: Context) -> Message:
    """One round of local training on this base station's road (module docstring)."""
    from fedmoe.v2i.federated import local_round

    world, pid, config, phase = request(msg, context)
    if phase != "train":
        raise ValueError(f"unknown v2i phase {phase!r} (expected 'train')")
    if "round" not in config:
        raise ValueError("message config lacks 'round'")
    if "arrays" not in msg.content.array_records:
        raise ValueError("message lacks the global agent ('arrays')")
    arrays, metrics = local_round(world.cfg.v2i, to_numpy(msg.content["arrays"]), int(config["round"]), pid)
    content = RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
