"""fedmoe.plugins.exchange: send_and_receive with pulls spaced by what a pull costs.

The polling loop runs on a scripted grid and a simulated clock (each pull's cost, each reply's arrival
and each wait are known, so every wait is checked against the rule by hand); a Flower simulation on
Ray checks that Flower's real InMemoryGrid is wrapped and every reply comes back once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from fedmoe.plugins.exchange import AdaptivePolling, adaptive_polling, poll_interval
from tests.federated.conftest import LocalGrid


class ScriptedGrid:
    """Message ``i`` is answered at time ``ready[i]``; a pull costs ``per_id`` seconds per id asked for."""

    def __init__(self, clock, ready: list[float], per_id: float) -> None:
        self.clock, self.ready, self.per_id = clock, ready, per_id
        self.asked: list[int] = []

    def push_messages(self, messages):
        return [str(i) for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        ids = list(message_ids)
        self.asked.append(len(ids))
        self.clock.t += self.per_id * len(ids)
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ids
                if self.ready[int(i)] <= self.clock.t]

    def get_node_ids(self):
        return [7, 8]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.waits.append(s)
        self.t += s


def test_the_wait_is_the_pull_cost_over_the_busy_share_within_bounds():
    assert poll_interval(0.001) == pytest.approx(0.02)          # 1 ms / 5 %
    assert poll_interval(1e-6) == pytest.approx(0.002)          # at least the minimum
    assert poll_interval(0.1) == pytest.approx(0.5)             # at most the maximum
    assert poll_interval(0.001, busy_share=0.5) == pytest.approx(0.002)


def test_every_reply_comes_back_and_each_wait_follows_the_last_pulls_cost():
    clock = Clock()
    grid = ScriptedGrid(clock, ready=[0.05, 0.3, 1.0, 1.0], per_id=0.002)
    polling = AdaptivePolling(grid, clock=clock, sleep=clock.sleep)
    replies = polling.send_and_receive([object()] * 4)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["0", "1", "2", "3"]
    # a pull asking for n ids costs 2n ms; the wait after it is that over 5 %, so 40 ms per id still waiting
    expected = [min(0.5, 0.002 * n / 0.05) for n in grid.asked[:-1]]
    assert clock.waits == pytest.approx(expected)
    assert grid.asked[0] == 4 and grid.asked[-1] == 2 and polling.pulls == len(grid.asked)
    assert clock.t - 1.0 < 0.08 + 0.004  # the last replies are picked up within one wait (2 ids: 80 ms) of arriving


def test_a_timeout_returns_what_arrived_after_at_least_one_pull_and_never_waits_past_it():
    clock = Clock()
    grid = ScriptedGrid(clock, ready=[0.0, 99.0], per_id=0.001)
    polling = AdaptivePolling(grid, clock=clock, sleep=clock.sleep)
    replies = polling.send_and_receive([object()] * 2, timeout=1.0)
    assert [r.metadata.reply_to_message_id for r in replies] == ["0"]
    assert 1.0 <= clock.t <= 1.0 + 0.001 + 1e-12  # gave up at the timeout (plus the last pull's own cost)
    assert max(clock.waits) <= 0.5
    clock = Clock()
    assert AdaptivePolling(ScriptedGrid(clock, [5.0], 0.001), clock=clock,
                           sleep=clock.sleep).send_and_receive([object()], timeout=0.0) == []
    assert clock.waits == []  # timeout 0: one pull, no wait


def test_the_wrapper_passes_everything_else_to_the_grid_and_refuses_bad_options():
    clock = Clock()
    polling = AdaptivePolling(ScriptedGrid(clock, [], 0.0))
    assert polling.get_node_ids() == [7, 8]
    for bad in ({"busy_share": 0.0}, {"busy_share": 1.5}, {"min_interval_s": 1.0, "max_interval_s": 0.5}):
        with pytest.raises(ValueError):
            AdaptivePolling(ScriptedGrid(clock, [], 0.0), **bad)


def test_grids_that_answer_by_themselves_are_left_alone():
    local = LocalGrid(2)  # overrides send_and_receive: the tests' in-process grid keeps its own
    assert adaptive_polling(local) is local


DRIVER = r'''
import json, time
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation
from fedmoe.plugins.exchange import AdaptivePolling, adaptive_polling

client = ClientApp()

@client.query()
def answer(msg, context):
    return Message(RecordDict({"c": ConfigRecord({"node": int(context.node_id)})}), reply_to=msg)

server, out = ServerApp(), {}

@server.main()
def main(grid, context):
    wrapped = adaptive_polling(grid)
    out["wrapped"] = isinstance(wrapped, AdaptivePolling) and adaptive_polling(wrapped) is wrapped
    out["grid"] = type(grid).__name__
    while len(nodes := sorted(wrapped.get_node_ids())) < 4:  # the virtual nodes register first
        time.sleep(0.1)
    for _ in range(2):
        msgs = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=n) for n in nodes]
        replies = wrapped.send_and_receive(msgs, timeout=60)
        out.setdefault("answers", []).append(sorted(int(r.content["c"]["node"]) for r in replies))
    out["nodes"], out["pulls"] = nodes, wrapped.pulls

run_simulation(server_app=server, client_app=client, num_supernodes=4,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                               "init_args": {"num_cpus": 2, "include_dashboard": False}})
print("RESULT " + json.dumps(out))
'''


def test_flowers_in_memory_grid_is_wrapped_and_every_node_answers_once_per_exchange(tmp_path):
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "FLWR_HOME": str(tmp_path / "flwr")}
    proc = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=240, env=env,
                          cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["wrapped"] and out["grid"] == "InMemoryGrid"
    assert len(out["nodes"]) == 4 and out["answers"] == [out["nodes"], out["nodes"]]
    assert out["pulls"] >= 2
