"""PollingGrid (fedmoe.strategies.polling_grid): the same replies as Flower's send_and_receive, collected with
pulls every interval instead of every 3 s; a timeout returns what arrived; only the deployment grid is wrapped."""

from __future__ import annotations

import time

import pytest
from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.superlink.grid.http_grid import HttpGrid
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from fedmoe.strategies.polling_grid import PollingGrid, with_fast_replies


class SlowNodesGrid(HttpGrid):
    """A deployment grid whose node ``n``'s reply becomes available ``delays[n]`` s after the push."""

    def __init__(self, delays: dict[int, float]) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        super().__init__(token="test")
        self.delays = delays
        self.pending: dict[str, tuple[float, Message]] = {}
        self.pulls = 0

    def push_messages(self, messages):
        ids = []
        for i, msg in enumerate(messages):
            mid = f"m{i}"
            msg.metadata.__dict__["_message_id"] = mid
            reply = Message(RecordDict({"metrics": MetricRecord({"node": msg.metadata.dst_node_id})}), reply_to=msg)
            self.pending[mid] = (time.monotonic() + self.delays[msg.metadata.dst_node_id], reply)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        now = time.monotonic()
        ready = [mid for mid in message_ids if mid in self.pending and self.pending[mid][0] <= now]
        return [self.pending.pop(mid)[1] for mid in ready]


def _messages(nodes):
    return [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=n) for n in nodes]


def test_every_reply_is_collected_soon_after_it_arrives():
    inner = SlowNodesGrid({1: 0.0, 2: 0.3, 3: 0.6})
    t0 = time.monotonic()
    replies = PollingGrid(inner, interval_s=0.05).send_and_receive(_messages([1, 2, 3]))
    took = time.monotonic() - t0
    assert sorted(r.content["metrics"]["node"] for r in replies) == [1, 2, 3]
    assert 0.6 <= took < 1.5  # Flower's own loop: 3 s (one pull, 3 s of sleep, the next pull)
    assert inner.pulls >= 5


def test_a_timeout_returns_the_replies_that_arrived():
    inner = SlowNodesGrid({1: 0.0, 2: 30.0})
    t0 = time.monotonic()
    replies = PollingGrid(inner, interval_s=0.05).send_and_receive(_messages([1, 2]), timeout=0.4)
    assert 0.35 <= time.monotonic() - t0 < 2.0
    assert [r.content["metrics"]["node"] for r in replies] == [1]


def test_no_messages_no_wait():
    inner = SlowNodesGrid({})
    assert list(PollingGrid(inner).send_and_receive([])) == []


def test_only_the_deployment_grid_is_wrapped():
    http = SlowNodesGrid({})
    assert isinstance(with_fast_replies(http), PollingGrid) and with_fast_replies(http).inner is http
    memory = InMemoryGrid.__new__(InMemoryGrid)
    assert with_fast_replies(memory) is memory
    with pytest.raises(ValueError, match="interval_s"):
        PollingGrid(http, interval_s=0)
