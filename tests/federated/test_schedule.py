"""The stage schedule of a federated run (fedmoe.federated.schedule): stages, learning rate and τ per round."""

from __future__ import annotations

import pytest

from fedmoe.federated.schedule import StageSchedule


def schedule(**kw) -> StageSchedule:
    base = dict(rounds=10, stage1_rounds=4, lr=1e-2, lr_schedule="cosine", tau_start=2.0, tau_end=0.2, cost_weight=0.5)
    return StageSchedule(**{**base, **kw})


def test_stages_and_progress():
    s = schedule()
    assert [s.stage(t) for t in range(1, 11)] == [1] * 4 + [2] * 6
    assert [s.progress(t) for t in (1, 4, 5, 10)] == [(0, 4), (3, 4), (0, 6), (5, 6)]


def test_cosine_learning_rate_restarts_each_stage():
    s = schedule()
    for first, last in ((1, 4), (5, 10)):
        assert s.learning_rate(first) == pytest.approx(1e-2)
        assert s.learning_rate(last) == pytest.approx(1e-4)
    lrs = [s.learning_rate(t) for t in range(5, 11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert schedule(lr_schedule="constant").learning_rate(7) == 1e-2
    assert schedule(rounds=5).learning_rate(5) == 1e-2  # a stage of one round keeps lr


def test_temperature_is_tau_start_in_stage_one_and_anneals_in_stage_two():
    s = schedule()
    assert [s.temperature(t) for t in (1, 4, 5)] == [2.0, 2.0, 2.0]
    assert s.temperature(10) == pytest.approx(0.2)
    taus = [s.temperature(t) for t in range(5, 11)]
    assert all(a > b for a, b in zip(taus, taus[1:]))
    assert s.cost_weight == 0.5
