"""Round records and the virtual clock (fedmoe.federated.rounds.RoundLedger), by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmoe.federated.protocol import TrainReply
from fedmoe.federated.rounds import RoundLedger


def reply(device: int, n: int, latency: float, energy: float, usage=(1.0, 0.0), loss=1.0, stage=1) -> TrainReply:
    return TrainReply(num_examples=n, expert_usage=usage, train_loss=loss, flops=600.0 * n, upload_bits=1e4,
                      latency_s=latency, energy_j=energy, partition_id=device, stage=stage)


@pytest.fixture
def ledger() -> RoundLedger:
    return RoundLedger(np.array(["strong", "weak", "weak"]), local_epochs=2, deadline_s=20.0)


def test_a_round_lasts_as_long_as_its_slowest_reply_and_costs_the_sum(ledger):
    rec = ledger.close_round(1, 1, [reply(0, 10, 2.0, 1.0, loss=1.0), reply(2, 30, 5.0, 3.0, (0.5, 0.5), loss=3.0)],
                             ["device 1 (node 2): crashed"], selected=3, planned_latency_s=4.0)
    assert (rec.latency_s, rec.energy_j, rec.clock_s) == (5.0, 4.0, 5.0)
    assert (rec.selected, rec.completed, rec.failed, rec.devices) == (3, 2, 1, [0, 2])
    assert rec.train_loss == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert rec.usage_by_class == {"strong": [1.0, 0.0], "weak": [0.5, 0.5]}
    assert ledger.loss == {0: 1.0, 2: 3.0} and ledger.reported == {}  # costs are remembered from stage II on
    ledger.close_round(2, 2, [reply(1, 20, 1.0, 0.5, stage=2)], [], selected=1, planned_latency_s=1.0)
    assert ledger.clock_s == 6.0 and ledger.reported == {1: (600.0 * 20 / (20 * 2), 1e4)}
    assert [r.round for r in ledger.history] == [1, 2]


def test_a_round_without_replies_lasts_the_deadline_if_devices_were_selected(ledger):
    rec = ledger.close_round(1, 1, [], ["2 device(s) did not reply in time"], selected=2, planned_latency_s=3.0)
    assert rec.latency_s == 20.0 and math.isnan(rec.train_loss) and rec.completed == 0
    assert ledger.close_round(2, 1, [], [], selected=0, planned_latency_s=0.0).latency_s == 0.0
    assert ledger.clock_s == 20.0


def test_state_round_trips(ledger):
    ledger.close_round(1, 2, [reply(0, 10, 2.0, 1.0, stage=2)], [], selected=1, planned_latency_s=2.0)
    state = ledger.state_dict()
    other = RoundLedger(np.array(["strong", "weak", "weak"]), local_epochs=2, deadline_s=20.0)
    other.load_state_dict({**state, "rng": "ignored"})
    assert (other.history, other.clock_s, other.reported, other.loss) == \
        (ledger.history, ledger.clock_s, ledger.reported, ledger.loss)
    state["history"].clear()
    assert len(ledger.history) == 1  # a copy, not the ledger's own lists
