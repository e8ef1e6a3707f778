"""Shared fixtures of the federated tests: a tiny scenario, and an in-process Grid that runs the
real ClientApp handlers (no Ray) for tests of the Strategy API."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmoe.config import FedMoEConfig
from fedmoe.scenarios import load_scenario

TINY = {
    "partition": {"num_devices": 4, "samples_per_device": 48},
    # One expert per modality and the score-function gate: the federated mechanics (aggregation per
    # expert, validation, faults, resume) are tested on five experts with distinct modalities.
    "model": {"modalities": ["camera", "lidar", "radar", "gps", "rf"], "subsets": [], "experts_per_modality": 1,
              "expert_widths": {"gps": [16, 32, 64]},
              "head_hidden": 32},
    "train": {"batch_size": 32, "cost_weight": 1.0, "gate_estimator": "score_function", "stage1_epochs": 6,
              "stage2_epochs": 6,
              "tasks": {"beam_objective": "cross_entropy"}},
    "federated": {"rounds": 2, "stage1_rounds": 1, "clients_per_round": 4, "test_samples": 64,
                  "checkpoint_every": 1, "deadline_s": 1000.0, "local_epochs": 1, "stage2_local_epochs": 1,
                  "selection": "deadline-max-devices"},
}


def tiny_config(**sections) -> FedMoEConfig:
    """The default scenario shrunk to seconds; ``sections`` override (nested dicts)."""
    from fedmoe.config import deep_merge

    return load_scenario("default", deep_merge(TINY, sections))


@pytest.fixture(scope="session")
def tiny_cfg() -> FedMoEConfig:
    return tiny_config()


class LocalGrid(Grid):
    """A Grid whose nodes are the real ``clients.app`` handlers called in this process.

    Node ``i + 1`` is partition ``i``; every node keeps its own ``Context`` (and so its own
    ``context.state``) across messages, as a SuperNode does.
    """

    def __init__(self, num_nodes: int, fail: Iterable[int] = (), silent_after: dict[int, int] | None = None,
                 tamper: dict[int, Callable[[Message], None]] | None = None) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        # what the ServerApp runtime sets before any Message is built
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.contexts = {i + 1: Context(run_id=1, node_id=i + 1, node_config={"partition-id": i, "num-partitions": num_nodes},
                                        state=RecordDict(), run_config={}) for i in range(num_nodes)}
        self.fail = set(fail)
        self.silent_after = dict(silent_after or {})  # node -> training messages it answers before going silent
        self.answered: dict[int, int] = {}
        self.tamper = dict(tamper or {})  # node -> edits its training replies in place (a faulty or malicious device)
        self.timeouts: list[float | None] = []
        self.sent: list[Message] = []
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id="", ttl=None) -> Message:
        return Message(content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        """Every message through the real ClientApp (``clients.app:app``, which routes
        ``<type>.<action>``); an exception becomes an error reply, as Flower's runtime makes it.
        A node in ``fail`` errs on every training message; a node in ``silent_after`` stops
        answering training messages after that many (as if it disconnected: no reply at all);
        a node in ``tamper`` has its training replies edited by that function."""
        from flwr.app import Error

        from clients.app import app as client_app

        self.timeouts.append(timeout)
        replies = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            training = msg.metadata.message_type.startswith(MessageType.TRAIN)
            if node in self.fail and training:
                replies.append(Message(Error(code=0, reason="injected failure"), reply_to=msg))
                continue
            if training and node in self.silent_after:
                if self.answered.get(node, 0) >= self.silent_after[node]:
                    continue
                self.answered[node] = self.answered.get(node, 0) + 1
            try:
                reply = client_app(msg, self.contexts[node])
            except Exception as err:  # noqa: BLE001 - becomes the reply's error, as a SuperNode makes it
                reply = Message(Error(code=0, reason=str(type(err)) + ":<'" + str(err) + "'>"), reply_to=msg)
            if training and node in self.tamper and not reply.has_error():
                self.tamper[node](reply)
            replies.append(reply)
        return replies


@pytest.fixture
def local_grid_factory():
    return LocalGrid


def assert_close(a, b, **kw) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), **kw)
