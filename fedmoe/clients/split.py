"""Split-learning handlers of the fedmoe ClientApp (message types ``train.split`` and ``evaluate.split``).

They are registered on :data:`fedmoe.clients.app.app`, so one ClientApp serves federated and split
runs, in simulation and in deployment. The device side is :mod:`fedmoe.split.device`; the
server's loop is :mod:`fedmoe.strategies.split_learning`. One message is one exchange; its
``config["phase"]`` says what the device does, after first applying any gradient the
message carries for its previous chunk (``arrays["grad"]``, with the selection it was
computed for in ``arrays["grad-selected"]`` in stage II):

``features``
    reply the gate's inputs of chunk ``config["chunk"]`` (``features``, ``present``);
``encode``
    reply the features of the selected pairs of the chunk (``z``, ``expert``, ``row``,
    ``batch``, ``present``, ``label.<task>``); the selection is ``arrays["selected"]``, or
    every available expert when absent (stage I);
``finish``
    reply the round's metrics, and (SplitFed, ``config["upload-experts"]``) the experts
    it computed, packed per group.

A SplitFed message may carry the averaged experts (``arrays["experts"]`` …, packed per
group); the device loads them before anything else. The device's experts, standardiser and
optimiser moments live in ``context.state`` between messages.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from fedmoe.clients.common import app, request
from fedmoe.federated.protocol import (
    BACKWARD_FLOPS_KEY,
    FORWARD_FLOPS_KEY,
    NUM_EXAMPLES_KEY,
    PARTITION_KEY,
    SPLIT_LABEL_PREFIX,
    USAGE_KEY,
)
from fedmoe.flower import to_numpy, to_record

DEVICE_KEY = "fedmoe.split.device"
ROUND_KEY = "fedmoe.split.round"
EXPERTS_KEY = "experts"


def _state(context: Context) -> dict:
    rec = context.state.array_records.get(DEVICE_KEY)
    return {} if rec is None else to_numpy(rec)


def _arrays(msg: Message) -> dict:
    rec = msg.content.array_records.get("split")
    return {} if rec is None else to_numpy(rec)


def _experts(msg: Message, world) -> dict | None:
    rec = msg.content.array_records.get(EXPERTS_KEY)
    return None if rec is None else world.layout.unpack(to_numpy(rec))


def _encoded_arrays(enc) -> dict:
    out = {"z": enc.features, "expert": enc.expert.astype("int32"), "row": enc.row.astype("int32"),
           "batch": enc.batch.astype("int32"), "present": enc.present}
    out.update({f"{SPLIT_LABEL_PREFIX}{k}": v for k, v in enc.labels.items()})
    return out


def _round_usage(context: Context, world, rows_per_expert) -> list[float]:
    import numpy as np

    rec = context.state.metric_records.get(ROUND_KEY)
    prior = np.zeros(len(rows_per_expert)) if rec is None else np.asarray(list(rec["rows"]), dtype=float)
    return [float(x) for x in prior + np.asarray(rows_per_expert, dtype=float)]


@app.train("split")
def split_train(msg: Message, context: Context) -> Message:
    """One split-learning exchange of a training round (module docstring)."""
    import numpy as np

    from fedmoe.split.device import (
        apply_gradients,
        chunk_rows,
        encode,
        gate_inputs,
        load_device,
        round_batches,
        training_samples,
    )

    world, pid, config, phase = request(msg, context)
    server_round = int(config["server-round"])
    if phase not in ("features", "encode", "finish"):
        raise ValueError(f"unknown split phase {phase!r}")
    arrays = _arrays(msg)
    part = load_device(world, pid, _state(context), _experts(msg, world))
    samples = training_samples(world, pid, part.model)
    batches = round_batches(world, pid, server_round, len(samples))
    per_message = world.cfg.split.batches_per_message
    metrics: dict = {PARTITION_KEY: pid, NUM_EXAMPLES_KEY: int(len(samples)), BACKWARD_FLOPS_KEY: 0.0,
                     FORWARD_FLOPS_KEY: 0.0}
    rows = np.zeros(part.model.num_experts)
    if "grad" in arrays:
        chunk = chunk_rows(batches, int(config["grad-chunk"]), per_message)
        metrics[BACKWARD_FLOPS_KEY] = apply_gradients(world, part, samples, chunk, arrays.get("grad-selected"),
                                                    arrays["grad"])
    reply: dict = {}
    if phase == "features":
        feats, present = gate_inputs(part.model, samples, chunk_rows(batches, int(config["chunk"]), per_message))
        reply = {"features": feats, "present": present}
    elif phase == "encode":
        enc = encode(world, part, samples, chunk_rows(batches, int(config["chunk"]), per_message),
                     arrays.get("selected"))
        reply = _encoded_arrays(enc)
        metrics[FORWARD_FLOPS_KEY] = enc.forward_flops
        rows = np.bincount(enc.expert, minlength=part.model.num_experts)
    state = part.state()
    context.state[DEVICE_KEY] = to_record(state)
    usage = _round_usage(context, world, rows) if phase != "features" else None
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if phase == "finish":
        passes = max(len(samples) * world.cfg.federated.local_epochs, 1)
        metrics[USAGE_KEY] = [u / passes for u in (usage or [])]
        context.state.pop(ROUND_KEY, None)
        if bool(config.get("upload-experts", False)):
            content["arrays"] = to_record(world.layout.pack({k: state[k] for k in world.layout.expert_keys}))
        content["metrics"] = MetricRecord(metrics)
    else:
        if usage is not None:
            context.state[ROUND_KEY] = MetricRecord({"rows": usage})
        content["split"] = to_record(reply) if reply else ArrayRecord()
    return Message(content=content, reply_to=msg)


@app.evaluate("split")
def split_evaluate(msg: Message, context: Context) -> Message:
    """One exchange of the split evaluation on the device's held-out data (phases ``features``, ``encode``)."""
    import numpy as np

    from fedmoe.config import MODALITIES
    from fedmoe.federated.local import budgeted
    from fedmoe.split.device import encode, gate_inputs, load_device

    world, pid, config, phase = request(msg, context)
    part = load_device(world, pid, _state(context), _experts(msg, world))
    if not context.state.array_records.get(DEVICE_KEY):
        context.state[DEVICE_KEY] = to_record(part.state())  # keep the standardiser a first load fitted
    samples = budgeted(world.evaluation_data(pid), MODALITIES, part.model)
    size = world.cfg.train.batch_size
    batches = [np.arange(i, min(i + size, len(samples))) for i in range(0, len(samples), size)]
    if phase == "features":
        feats, present = gate_inputs(part.model, samples, batches)
        reply = {"features": feats, "present": present}
    elif phase == "encode":
        reply = _encoded_arrays(encode(world, part, samples, batches, _arrays(msg).get("selected")))
    else:
        raise ValueError(f"unknown split evaluation phase {phase!r}")
    metrics = MetricRecord({PARTITION_KEY: pid, NUM_EXAMPLES_KEY: int(len(samples))})
    return Message(content=RecordDict({"split": to_record(reply), "metrics": metrics}), reply_to=msg)
