"""The round's typed reply (fedmoe.federated.protocol.TrainReply): the names it has on the wire,
its round trip through Flower's MetricRecord, and every malformed reply refused with an error
that names the key."""

from __future__ import annotations

import math

import pytest
from flwr.app import MetricRecord

from fedmoe.federated import protocol
from fedmoe.federated.protocol import ReplyError, TrainReply

MISSING = object()


def good() -> TrainReply:
    return TrainReply(num_examples=12, expert_usage=(1.0, 0.0, 0.5), train_loss=0.7, flops=1e6, upload_bits=3.2e4,
                      latency_s=0.5, energy_j=0.01, partition_id=2, stage=1)


def read(metrics) -> TrainReply:
    return TrainReply.from_metrics(metrics, num_experts=3, max_examples=12, num_devices=3)


def test_the_metric_names_on_the_wire():
    """The names are the protocol with devices that may run another release: they change only on purpose.
    (This is the one place where they are written out; everything else uses the constants.)"""
    assert {k: v for k, v in vars(protocol).items() if k.endswith("_KEY")} == {
        "NUM_EXAMPLES_KEY": "num-examples", "USAGE_KEY": "expert-usage", "TRAIN_LOSS_KEY": "train-loss",
        "FLOPS_KEY": "flops", "UPLOAD_BITS_KEY": "upload-bits", "LATENCY_KEY": "latency-s", "ENERGY_KEY": "energy-j",
        "PARTITION_KEY": "partition-id", "STAGE_KEY": "stage", "MODALITIES_KEY": "modalities",
        "ACCURACY_KEY": "accuracy", "MEAN_COST_KEY": "mean-cost", "CLOCK_KEY": "clock-s",
        "COMPLETED_KEY": "completed", "FAILED_KEY": "failed",
        "FORWARD_FLOPS_KEY": "forward-flops", "BACKWARD_FLOPS_KEY": "backward-flops"}
    assert list(good().to_metrics()) == ["num-examples", "expert-usage", "train-loss", "flops", "upload-bits",
                                         "latency-s", "energy-j", "partition-id", "stage"]


def test_a_reply_round_trips_through_a_metric_record():
    reply = good()
    assert read(reply.to_metrics()) == reply
    assert read(MetricRecord(reply.to_metrics())) == reply  # as Flower carries it
    assert TrainReply.from_metrics(reply.to_metrics()) == reply  # no bounds given: none checked
    assert read({**reply.to_metrics(), "num-examples": 12.0, "stage": 1.0}) == reply  # integral floats are integers


BAD = [
    ("num-examples", MISSING, "no 'num-examples'"),
    ("num-examples", 0, "num-examples=0 is outside [1, 12]"),
    ("num-examples", 13, "num-examples=13 is outside [1, 12] (the device's training samples)"),
    ("num-examples", 2.5, "not a finite integer"),
    ("num-examples", True, "not a finite integer"),
    ("num-examples", math.nan, "not a finite integer"),
    ("expert-usage", MISSING, "no 'expert-usage'"),
    ("expert-usage", 0.5, "not a list of numbers"),
    ("expert-usage", [1.0, 0.0], "2 entries, the model has 3 experts"),
    ("expert-usage", [1.5, 0.0, 0.0], "outside [0, 1]"),
    ("expert-usage", [math.nan, 0.0, 0.0], "outside [0, 1]"),
    ("train-loss", math.nan, "not a finite number"),
    ("train-loss", "low", "not a finite number"),
    ("flops", -1.0, "flops=-1 is negative"),
    ("upload-bits", math.inf, "not a finite number"),
    ("latency-s", math.nan, "not a finite number"),
    ("energy-j", -0.1, "is negative"),
    ("partition-id", 3, "partition-id=3 is outside [0, 2]"),
    ("partition-id", -1, "outside [0, 2]"),
    ("partition-id", 1.5, "not a finite integer"),
    ("stage", 3, "stage=3 is outside [1, 2]"),
    ("stage", MISSING, "no 'stage'"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD, ids=[f"{k}={v if v is not MISSING else 'missing'}"
                                                                  for k, v, _ in BAD])
def test_a_malformed_reply_is_a_value_error_naming_its_key(key, value, fragment):
    metrics = good().to_metrics()
    if value is MISSING:
        del metrics[key]
    else:
        metrics[key] = value
    with pytest.raises(ReplyError) as err:
        read(metrics)
    assert isinstance(err.value, ValueError)
    assert err.value.key == key and key in str(err.value) and fragment in str(err.value), str(err.value)
