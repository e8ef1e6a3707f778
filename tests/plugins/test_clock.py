"""The virtual clock of any strategy: max latency and summed energy per round, running totals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmoe.plugins.clock import VirtualClock


def test_a_round_lasts_its_slowest_device_and_costs_the_sum_of_energies():
    clock = VirtualClock()
    first = clock.advance(1, [0.5, 2.0, 1.25], [1.0, 0.25, 0.5])
    second = clock.advance(2, [0.75], [3.0])
    assert (first.latency_s, first.energy_j, first.clock_s) == (2.0, 1.75, 2.0)
    assert (second.latency_s, second.clock_s, second.total_energy_j) == (0.75, 2.75, 4.75)
    assert clock.metrics() == {"round-latency-s": 0.75, "round-energy-j": 3.0, "clock-s": 2.75,
                               "total-energy-j": 4.75}


def test_a_round_with_nobody_accepted_lasts_the_idle_latency_and_costs_nothing():
    clock = VirtualClock()
    assert clock.advance(1, [], [], idle_latency_s=20.0).latency_s == 20.0
    assert clock.advance(2, [], []).latency_s == 0.0
    assert clock.clock_s == 20.0 and clock.energy_j == 0.0


def test_the_plan_charges_only_the_devices_that_completed():
    from fedmoe.federated.selection import RoundPlan

    plan = RoundPlan(devices=np.array([3, 5, 8]), num_rb=np.array([10, 20, 30]), rate_bps=np.ones(3),
                     latency_s=np.array([1.0, 4.0, 2.0]), energy_j=np.array([0.5, 0.25, 2.0]))
    clock = VirtualClock()
    tick = clock.advance_plan(1, plan, completed=[3, 8], idle_latency_s=9.0)
    assert (tick.latency_s, tick.energy_j, tick.participants) == (2.0, 2.5, 2)
    assert clock.advance_plan(2, plan, completed=[], idle_latency_s=9.0).latency_s == 9.0


def test_reported_costs_are_read_under_the_configured_names_and_bad_values_left_out(caplog, digits_grid):
    from flwr.app import Error, Message, MessageType, MetricRecord, RecordDict

    digits_grid(1)  # sets the run identity Flower needs to build messages

    def reply(metrics):
        return Message(RecordDict({"m": MetricRecord(metrics)}), dst_node_id=7, message_type=MessageType.TRAIN)

    clock = VirtualClock(latency_key="t", energy_key="e")
    replies = [reply({"t": 1.5, "e": 2.0}), reply({"t": 3.0, "e": -1.0}), reply({"t": 0.5}),
               reply({"t": float("nan"), "e": 1.0}), reply({"t": 2.5, "e": 0.5}),
               Message(Error(code=0, reason="x"), reply_to=reply({}))]
    tick = clock.advance_reported(4, replies)
    assert (tick.latency_s, tick.energy_j, tick.participants) == (2.5, 2.5, 2)
    assert sum("virtual clock leaves out" in r.message for r in caplog.records) == 3


@pytest.mark.parametrize("bad", [[-1.0], [math.inf]])
def test_negative_or_infinite_costs_are_refused(bad):
    with pytest.raises(ValueError, match="finite and >= 0"):
        VirtualClock().advance(1, bad, [0.0])


def test_the_state_round_trips():
    clock = VirtualClock()
    clock.advance(1, [1.0], [2.0])
    again = VirtualClock()
    again.load_state_dict(clock.state_dict())
    assert again.history == clock.history and again.clock_s == 1.0


def test_output_names_must_differ():
    with pytest.raises(ValueError, match="must differ"):
        VirtualClock(clock_key="x", round_latency_key="x")
