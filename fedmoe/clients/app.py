"""The federated fedmoe ClientApp (Flower 1.41 Message API).

One app for simulation and deployment: the device is ``context.node_config["partition-id"]``
(out of ``"num-partitions"``), the scenario arrives as JSON in every message's config,
and the device's data, sensors and radio are derived from both
(:class:`fedmoe.federated.world.ScenarioWorld`). Parameters travel packed, one flat
array per group (:class:`fedmoe.federated.parameters.PackedLayout`). Per-device state (the score-function
critic, parameters declared local) lives in ``context.state`` and, when the device has a state
folder, on its disk too, so that a resumed run finds it (:mod:`fedmoe.federated.device_state`).

Handlers:

``@app.query()``
    the device's partition id, sample count and sensors (the server asks once).
``@app.train()``
    one round of local training (:func:`fedmoe.federated.local.local_update`), with the
    faults of ``federated.faults`` injected when configured (:mod:`fedmoe.federated.faults`).
``@app.evaluate()``
    the global model on the device's own held-out data.

The other modes' handlers are registered on the same ``app`` (:mod:`fedmoe.clients.common`) by
:mod:`fedmoe.clients.split`, :mod:`fedmoe.clients.distributed` and :mod:`fedmoe.clients.v2i`, which this module
imports: ``fedmoe.clients.app:app`` is the whole ClientApp.

Heavy imports (torch, the model zoo) happen inside the handlers, so that a deployment
that starts a fresh process per message pays for them only when it trains: the query
handler reads the config alone and never imports torch. On a SuperNode with a state folder
the device's generated data and the experts' counted costs are kept there between messages
(:mod:`fedmoe.federated.prepared`), and every message logs what it found there and how long it
took (:func:`fedmoe.clients.common.log_prepared`).
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict

from fedmoe.clients import common

# A statement of its own (import sorting would merge it into the one above), so that its noqa covers these only.
# isort: split
from fedmoe.clients import distributed, split, v2i  # noqa: F401  their handlers (experts, split learning, V2I) on ``app``
from fedmoe.clients.common import device_id, device_world, log_prepared, message_config
from fedmoe.federated.protocol import QueryReply
from fedmoe.flower import to_numpy, to_record

app = common.app
"""The whole ClientApp (``fedmoe.clients.app:app`` in pyproject.toml): the object every handler module
registers on. An assignment, not an import: ``flwr run`` checks by reading this file that it
assigns ``app``."""

LOCAL_STATE_KEY = "fedmoe.local"


def _global_arrays(msg: Message, world) -> dict:
    """The global model of a message, by state-dict name (it travels packed per group)."""
    return world.layout.unpack(to_numpy(msg.content["arrays"]))


def _local_state(context: Context, store, server_round: int, evaluating: bool = False) -> dict:
    """The device's local state as it was after the newest round before ``server_round`` (up to
    it, ``evaluating``): from its state folder's ``store`` when it has one
    (:mod:`fedmoe.federated.device_state`), else from ``context.state``."""
    if store is not None:
        return store.load_up_to(server_round) if evaluating else store.load_before(server_round)
    rec = context.state.array_records.get(LOCAL_STATE_KEY)
    return {} if rec is None else to_numpy(rec)


def _keep_local_state(context: Context, store, server_round: int, state: dict) -> None:
    """Keep the state after training ``server_round``: in ``context.state`` and, when the device has
    a state folder, on disk (a resumed run reads it there)."""
    context.state[LOCAL_STATE_KEY] = to_record(state)
    if store is not None:
        store.save(server_round, state)


def _state_store(msg: Message, context: Context, device_id: int):
    """The device's :class:`~fedmoe.federated.device_state.DeviceStateStore`, or ``None`` without a state folder."""
    from fedmoe.federated.device_state import DeviceStateStore, state_folder

    folder = state_folder(dict(context.node_config), dict(msg.content["config"]))
    return None if folder is None else DeviceStateStore(folder, device_id)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Partition id, sample count and sensors of this device (no data is generated)."""
    from fedmoe.data.partition import device_modalities, local_size

    cfg = message_config(msg)
    pid = device_id(context, cfg.partition.num_devices)
    answer = QueryReply(partition_id=pid, num_examples=local_size(cfg.partition, cfg.data.seed, pid),
                        modalities=tuple(bool(x) for x in device_modalities(cfg.partition, cfg.data.seed, pid)))
    return Message(content=RecordDict({"metrics": MetricRecord(answer.to_metrics())}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training; replies with the shared parameters and the experts used."""
    import time

    from fedmoe.federated import faults
    from fedmoe.federated.local import RoundInstructions, local_update

    started = time.time()
    world, pid = device_world(msg, context)
    instr = RoundInstructions.from_config(dict(msg.content["config"]))
    injected = world.cfg.federated.faults
    fate = faults.before_training(injected, instr.server_round, pid)
    store = _state_store(msg, context, pid)
    local_state = _local_state(context, store, instr.server_round)
    malicious = pid in faults.malicious_devices(injected, world.num_devices)
    tamper = (lambda wire, sent: faults.sign_flip(injected, wire, sent)) if malicious else None
    result = local_update(world, pid, _global_arrays(msg, world), local_state, instr, tamper=tamper)
    if result.local_state:
        _keep_local_state(context, store, instr.server_round, result.local_state)
    arrays, metrics = result.wire, dict(result.metrics)
    faults.after_training(injected, fate, metrics)
    content = RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(metrics)})
    log_prepared(world, pid, f"train round {instr.server_round}", started)
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the global model on this device's own held-out data."""
    import time

    from fedmoe.federated.local import local_evaluate

    started = time.time()
    world, pid = device_world(msg, context)
    server_round = int(msg.content["config"].get("server-round", 0))
    local_state = _local_state(context, _state_store(msg, context, pid), server_round, evaluating=True)
    metrics = local_evaluate(world, pid, _global_arrays(msg, world), local_state)
    log_prepared(world, pid, f"evaluate round {server_round}", started)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

