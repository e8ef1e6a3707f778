"""A device's answers to the device query and to evaluation requests are checked like its training replies
(issue 18, findings 2 and 5): a malformed or implausible answer is a logged refusal of that device's answer,
and the run goes on with the others."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import MessageType

from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import (
    ACCURACY_KEY,
    MEAN_COST_KEY,
    MODALITIES_KEY,
    NUM_EXAMPLES_KEY,
    PARTITION_KEY,
    EvaluateReply,
    QueryReply,
    ReplyError,
)
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from fedmoe.strategies.discovery import discover_devices
from fedmoe.strategies.expert_wise import ExpertWise
from tests.federated.conftest import ReplayGrid, edit_metrics, tiny_config

BAD_NODE = 2  # device 1


@pytest.fixture(scope="module")
def cfg():
    return tiny_config(partition={"num_devices": 3}, federated={"rounds": 1, "clients_per_round": 3,
                                                               "fraction_evaluate": 1.0})


def _run(cfg, grid):
    world = world_for(cfg)
    strategy = ExpertWise(world)
    result = strategy.start(grid, to_record(state_to_numpy(world.template.state_dict())), num_rounds=1)
    return strategy, result


# --------------------------------------------------------------------------- the device query

QUERY_KINDS = {
    "2 modalities": (edit_metrics(**{MODALITIES_KEY: [1, 0]}), "modalities has 2 entries"),
    "modality flag 0.5": (edit_metrics(**{MODALITIES_KEY: [1.0, 0.5, 1.0, 1.0, 1.0]}), "entries other than 0 and 1"),
    "scalar modalities": (edit_metrics(**{MODALITIES_KEY: 1}), "modalities is not a list"),
    "count -10^12": (edit_metrics(**{NUM_EXAMPLES_KEY: -10 ** 12}), "num-examples=-1000000000000 is outside"),
    "count above the device's samples": (edit_metrics(**{NUM_EXAMPLES_KEY: 10 ** 9}), "the device's training samples"),
    "list partition-id": (edit_metrics(**{PARTITION_KEY: [1, 2]}), "partition-id=[1, 2] is not a finite integer"),
    "partition-id out of range": (edit_metrics(**{PARTITION_KEY: 7}), "partition-id=7 is outside [0, 2]"),
    "no partition-id": (edit_metrics(**{PARTITION_KEY: None}), "no 'partition-id'"),
    "no metrics": (edit_metrics(metrics=None), "without 'metrics'"),
}


@pytest.mark.parametrize("kind", list(QUERY_KINDS))
def test_a_malformed_query_answer_leaves_that_device_out_and_the_run_goes_on(kind, cfg, replay_cache, caplog):
    tamper, reason = QUERY_KINDS[kind]
    grid = ReplayGrid(3, replay_cache, tamper={BAD_NODE: tamper}, tamper_on=MessageType.QUERY)
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.discovery"):
        strategy, _ = _run(cfg, grid)
    assert sorted(strategy.devices) == [1, 3]
    assert strategy.history[0].completed == 2 and sorted(strategy.history[0].devices) == [0, 2]
    assert any(f"left out node {BAD_NODE} answered the device query with" in r.message and reason in r.message
               for r in caplog.records), [r.message for r in caplog.records]


def test_two_nodes_claiming_one_device_are_both_left_out(cfg, replay_cache, caplog):
    """The server cannot tell which of two nodes claiming partition 0 is device 0: it trusts neither."""
    grid = ReplayGrid(3, replay_cache, tamper={BAD_NODE: edit_metrics(**{PARTITION_KEY: 0})},
                      tamper_on=MessageType.QUERY)
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.discovery"):
        strategy, _ = _run(cfg, grid)
    assert sorted(strategy.devices) == [3] and strategy.history[0].devices == [2]
    assert sum("partition-id 0 is claimed by nodes [1, 2]" in r.message for r in caplog.records) == 2


def test_an_error_answer_leaves_that_device_out(cfg, caplog):
    grid = ReplayGrid(3, {})  # its own cache: the node's config differs, not the messages
    grid.contexts[BAD_NODE].node_config["partition-id"] = "one"
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.discovery"):
        strategy, _ = _run(cfg, grid)
    assert sorted(strategy.devices) == [1, 3] and strategy.history[0].completed == 2
    assert f"left out node {BAD_NODE} failed the device query: node config partition-id='one'" in caplog.text


def test_discovery_needs_min_devices(cfg, replay_cache):
    """Other modes need every device (``min_devices`` defaults to all): too few is one line naming the refusal."""
    from fedmoe.federated.world import config_json

    grid = ReplayGrid(3, replay_cache, tamper={BAD_NODE: edit_metrics(**{MODALITIES_KEY: [1, 0]})},
                      tamper_on=MessageType.QUERY)
    with pytest.raises(RuntimeError, match=f"^node {BAD_NODE} answered the device query with modalities has 2 entries"):
        discover_devices(grid, 3, config_json(cfg))
    assert len(discover_devices(grid, 3, config_json(cfg), min_devices=2)) == 2


def test_query_reply_reads_back_and_refuses_by_hand():
    good = QueryReply(partition_id=1, num_examples=40, modalities=(True, False, True, True, False))
    assert QueryReply.from_metrics(good.to_metrics(), num_devices=3, max_examples=lambda d: 48) == good
    with pytest.raises(ReplyError, match="num-examples=49 is outside"):
        QueryReply.from_metrics({**good.to_metrics(), NUM_EXAMPLES_KEY: 49}, num_devices=3, max_examples=lambda d: 48)


# --------------------------------------------------------------------------- client-side evaluation

EVALUATE_KINDS = {
    "no accuracy": (edit_metrics(**{ACCURACY_KEY: None}), "no 'accuracy'"),
    "accuracy 999999.98 with 10^9 examples": (edit_metrics(**{ACCURACY_KEY: 999999.98, NUM_EXAMPLES_KEY: 10 ** 9}),
                                              "num-examples=1000000000 is outside [1, 10]"),
    "accuracy 999999.98": (edit_metrics(**{ACCURACY_KEY: 999999.98}), "accuracy=1e+06 is outside [0, 1]"),
    "NaN accuracy": (edit_metrics(**{ACCURACY_KEY: float("nan")}), "accuracy=nan is not a finite number"),
    "count -10^12": (edit_metrics(**{NUM_EXAMPLES_KEY: -10 ** 12}), "is outside"),
    "negative mean cost": (edit_metrics(**{MEAN_COST_KEY: -1.0}), "mean-cost=-1 is negative"),
    "other partition-id": (edit_metrics(**{PARTITION_KEY: 0}), "partition-id 0 is not the node's device 1"),
    "no metrics": (edit_metrics(metrics=None), "reply lacks 'metrics'"),
}


class _KeepEvaluations(ReplayGrid):
    """Keeps the evaluate replies (after tampering) by node."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        for r in replies:
            if r.metadata.message_type.startswith(MessageType.EVALUATE) and "metrics" in r.content.metric_records:
                self.evaluations = {**getattr(self, "evaluations", {}),
                                    r.metadata.src_node_id: dict(r.content["metrics"])}
        return replies


@pytest.fixture(scope="module")
def honest_evaluations(cfg, replay_cache):
    grid = _KeepEvaluations(3, replay_cache)
    _, result = _run(cfg, grid)
    assert set(grid.evaluations) == {1, 2, 3}
    return grid.evaluations, result.evaluate_metrics_clientapp[1]


@pytest.mark.parametrize("kind", list(EVALUATE_KINDS))
def test_a_malformed_evaluation_is_left_out_of_the_accuracy(kind, cfg, replay_cache, honest_evaluations, caplog):
    """The accuracy is the others' weighted mean, recomputed here from their replies."""
    tamper, reason = EVALUATE_KINDS[kind]
    grid = ReplayGrid(3, replay_cache, tamper={BAD_NODE: tamper}, tamper_on=MessageType.EVALUATE)
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.expert_wise"):
        _, result = _run(cfg, grid)
    others = [m for node, m in honest_evaluations[0].items() if node != BAD_NODE]
    n = np.array([m[NUM_EXAMPLES_KEY] for m in others], dtype=float)
    acc = np.array([m[ACCURACY_KEY] for m in others])
    got = result.evaluate_metrics_clientapp[1]
    assert got[NUM_EXAMPLES_KEY] == n.sum() and got[ACCURACY_KEY] == pytest.approx((n * acc).sum() / n.sum(), abs=1e-12)
    assert any(f"left out the evaluation of node {BAD_NODE}" in r.message and reason in r.message
               for r in caplog.records), [r.message for r in caplog.records]


def test_honest_evaluations_are_all_counted(honest_evaluations):
    replies, metrics = honest_evaluations
    n = np.array([m[NUM_EXAMPLES_KEY] for m in replies.values()], dtype=float)
    acc = np.array([m[ACCURACY_KEY] for m in replies.values()])
    assert metrics[NUM_EXAMPLES_KEY] == n.sum() and metrics[ACCURACY_KEY] == pytest.approx((n * acc).sum() / n.sum())


def test_evaluate_reply_reads_back():
    good = EvaluateReply(num_examples=10, accuracy=0.25, mean_cost=0.5, partition_id=2)
    assert EvaluateReply.from_metrics(good.to_metrics(), max_examples=10, num_devices=3) == good
