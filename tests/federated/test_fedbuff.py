"""Semi-asynchronous rounds (FedBuff, [P010]; fedmoe.federated.buffered, fedmoe.strategies.fedbuff): the event
order and the clock on hand-built latencies, staleness weights and the rebase by hand, the reduction to ExpertWise,
stale drops, resume, bad settings, and a run on Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmoe.cli import main as cli
from fedmoe.config import ConfigError
from fedmoe.federated.buffered import STALENESS_WEIGHTS, ArrivalQueue, rebased
from fedmoe.federated.parameters import to_numpy
from fedmoe.federated.protocol import TrainReply
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from fedmoe.strategies import ExpertWise, FedBuff
from fedmoe.strategies.fedbuff import check_fedbuff_config
from fedmoe.strategies.server_app import serve
from tests.federated.conftest import ReplayGrid, tiny_config


def reply(device: int, latency_s: float, energy_j: float = 1.0) -> TrainReply:
    return TrainReply(num_examples=10, expert_usage=(1.0,), train_loss=0.5, flops=1.0, upload_bits=8.0,
                      latency_s=latency_s, energy_j=energy_j, partition_id=device, stage=1)


def send(queue: ArrivalQueue, now: float, latencies: dict[int, float]) -> None:
    for device, lat in latencies.items():
        queue.dispatch(device, device + 1, now, 1, reply(device, lat), {"w": np.zeros(1, np.float32)},
                       {"w": np.zeros(1, np.float32)})


def taken(buffer) -> list[tuple[int, int]]:
    return [(f.device, tau) for f, tau in zip(buffer.taken, buffer.staleness)]


# ---------------------------------------------------------------- the event loop, by hand


def test_arrivals_are_buffered_in_virtual_time_order_with_their_staleness():
    """Four devices at t=0 with T = 3, 1, 4, 2 s and K = 2; the server dispatches two more after each update.

    By hand: update 1 at t=2 from devices 1 (a=1) and 3 (a=2), both τ=0. Then 4 (T=0.5 → a=2.5) and
    5 (T=5 → a=7) leave at t=2 with version 1: update 2 at t=3 from 4 (τ=0) and 0 (a=3, τ=1). Then 6
    (T=0.2 → a=3.2) leaves at t=3 with version 2: update 3 at t=4 from 6 (τ=0) and 2 (a=4, τ=2).
    Left in flight: 5 (a=7, version 1)."""
    q = ArrivalQueue()
    send(q, 0.0, {0: 3.0, 1: 1.0, 2: 4.0, 3: 2.0})
    b = q.collect(2, 0.0)
    assert taken(b) == [(1, 0), (3, 0)] and b.until_s == 2.0 and not b.dropped
    assert q.advance() == 1 and q.devices == {0, 2}
    send(q, 2.0, {4: 0.5, 5: 5.0})
    b = q.collect(2, 2.0)
    assert taken(b) == [(4, 0), (0, 1)] and b.until_s == 3.0
    q.advance()
    send(q, 3.0, {6: 0.2})
    b = q.collect(2, 3.0)
    assert taken(b) == [(6, 0), (2, 2)] and b.until_s == 4.0
    q.advance()
    assert [(f.device, f.version, f.arrival_s) for f in q.in_flight] == [(5, 1, 7.0)]


def test_a_stale_arrival_beyond_the_max_is_dropped_and_does_not_fill_the_buffer():
    q = ArrivalQueue()
    send(q, 0.0, {0: 1.0, 1: 5.0, 2: 9.0})
    q.collect(1, 0.0)
    q.advance()
    q.advance()  # version 2: devices 1 and 2 (version 0) have τ = 2
    send(q, 1.0, {3: 10.0})  # a = 11, τ = 0
    b = q.collect(2, 1.0, max_staleness=1)
    assert [f.device for f in b.dropped] == [1, 2]
    assert taken(b) == [(3, 0)] and b.until_s == 11.0  # the buffer waited for the last arrival
    assert len(q) == 0
    q2 = ArrivalQueue()
    send(q2, 0.0, {0: 1.0, 1: 5.0})
    q2.advance()
    assert taken(q2.collect(2, 0.0, max_staleness=1)) == [(0, 1), (1, 1)]  # τ = max is kept


def test_ties_in_arrival_go_by_dispatch_order_and_a_device_in_flight_cannot_leave_again():
    q = ArrivalQueue()
    send(q, 0.0, {7: 2.0, 3: 2.0, 5: 1.0})
    assert taken(q.collect(2, 0.0)) == [(5, 0), (7, 0)]
    with pytest.raises(ValueError, match="already in flight"):
        send(q, 1.0, {3: 1.0})


def test_staleness_weights_by_hand():
    s = STALENESS_WEIGHTS.get("inverse_sqrt")
    assert [s(0), s(3), s(8), s(15)] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert STALENESS_WEIGHTS.get("inverse")(1) == pytest.approx(0.5)
    assert STALENESS_WEIGHTS.get("inverse")(4) == pytest.approx(0.2)
    assert STALENESS_WEIGHTS.get("constant")(7) == 1.0


def test_rebase_steps_parameters_from_the_current_model_and_keeps_buffers_as_values():
    """Sent w^{v_k} = [1, 1, 5], device w_k = [3, -1, 9] (the third value a buffer), current w^v = [2, 0, 6],
    s = 0.5: parameters → w^v + s(w_k − w^{v_k}) = [2 + 1, 0 − 1]; the buffer → the device's own 9."""
    q = ArrivalQueue()
    item = q.dispatch(0, 1, 0.0, 1, reply(0, 1.0), {"g": np.array([3.0, -1.0, 9.0], np.float32),
                                                    "n": np.array([4], np.int64)},
                      {"g": np.array([1.0, 1.0, 5.0], np.float32), "n": np.array([0], np.int64)})
    out = rebased({"g": np.array([2.0, 0.0, 6.0], np.float32), "n": np.array([0], np.int64)}, item, 0.5,
                  {"g": np.array([True, True, False])})
    np.testing.assert_array_equal(out["g"], np.array([3.0, -1.0, 9.0], np.float32))
    assert out["g"].dtype == np.float32 and out["n"].tolist() == [4]
    out = rebased({"g": np.array([2.0, 0.0, 6.0], np.float32), "n": np.array([0], np.int64)}, item, 0.25,
                  {"g": np.array([True, True, False])})
    np.testing.assert_array_equal(out["g"], np.array([2.5, -0.5, 9.0], np.float32))


# ---------------------------------------------------------------- the strategy on the real ClientApp
# One scenario for every run below, so that their grids replay each other's replies (the scenario travels in every
# message): three stage-I rounds (devices keep no state between stage-I messages), K = 2 of 4 in flight. The
# reduction and the drop tests set K, concurrency and the max staleness on the strategy itself for that reason.

ASYNC = {"strategy": "fedbuff", "centralised_reference": False, "rounds": 3, "stage1_rounds": 3,
         "fedbuff": {"buffer_size": 2, "concurrency": 4}}


@pytest.fixture(scope="module")
def async_cfg():
    return tiny_config(federated=ASYNC)


def start(strategy, grid, rounds: int):
    return strategy.start(grid, to_record(to_numpy(strategy.world.template.state_dict())), num_rounds=rounds)


def test_buffer_equal_to_concurrency_equal_to_clients_per_round_is_expert_wise(async_cfg, replay_cache):
    """K = concurrency = clients_per_round = 4, FedAvg, η = 1: every update has τ = 0 and both rounds are
    ExpertWise's, on the same replies (the grid replays them), arrays, clock and energy included."""
    sync = ExpertWise(world_for(async_cfg))
    a = start(sync, ReplayGrid(4, replay_cache), 2)
    buff = FedBuff(world_for(async_cfg))
    buff.buffer_size = buff.concurrency = async_cfg.federated.clients_per_round
    grid = ReplayGrid(4, replay_cache)
    b = start(buff, grid, 2)
    assert sum(m.metadata.message_type == "train" for m in grid.sent) == 8
    assert [r.staleness for r in buff.history] == [[0, 0, 0, 0]] * 2
    for k in a.arrays.keys():
        np.testing.assert_array_equal(a.arrays[k].numpy(), b.arrays[k].numpy(), err_msg=k)
    for x, y in zip(sync.history, buff.history):
        assert x.devices == y.devices and x.energy_j == y.energy_j
        # t_dispatch + T_k − t_dispatch: equal to max T_k up to the last bit
        assert (y.latency_s, y.clock_s) == pytest.approx((x.latency_s, x.clock_s), rel=1e-12)


@pytest.fixture(scope="module")
def async_run(async_cfg, replay_cache):
    """Four devices, all in flight, K = 2, three server updates; every dispatch is recorded."""
    strategy = FedBuff(world_for(async_cfg))
    sent = []
    real = strategy.queue.dispatch

    def record(*args, **kwargs):
        item = real(*args, **kwargs)
        sent.append((item.device, item.version, item.dispatched_s, item.arrival_s, item.reply.energy_j))
        return item

    strategy.queue.dispatch = record
    start(strategy, ReplayGrid(4, replay_cache), 3)
    return strategy, sent


def test_each_update_takes_the_next_k_arrivals_and_the_clock_stops_at_the_kth(async_run):
    """The records against the event loop replayed by hand from the dispatches (device, version, time, T_k):
    who is aggregated, with which staleness, at which virtual time, for what energy."""
    strategy, sent = async_run
    assert [d for d, *_ in sent[:4]] == [0, 1, 2, 3] and all(v == 0 and t == 0.0 for _, v, t, *_ in sent[:4])
    pending, clock, added = [], 0.0, 0
    for version, rec in enumerate(strategy.history):
        while added < len(sent) and sent[added][1] == version:  # dispatched with this version, at this clock
            assert sent[added][2] == pytest.approx(clock)
            pending.append(sent[added])
            added += 1
        pending.sort(key=lambda s: s[3])
        got, pending = pending[:2], pending[2:]
        assert rec.devices == sorted(d for d, *_ in got)
        assert rec.staleness == [version - v for _, v, *_ in sorted(got)]  # in device order, as the devices
        assert rec.clock_s == pytest.approx(got[-1][3])  # the K-th arrival, not the slowest device in flight
        assert rec.latency_s == pytest.approx(got[-1][3] - clock)
        assert rec.energy_j == pytest.approx(sum(e for *_, e in got))
        clock = rec.clock_s
    assert any(t > 0 for r in strategy.history for t in r.staleness)  # the run did buffer stale updates
    assert strategy.history[0].clock_s < max(a for *_, a, _ in sent[:4])


def test_the_server_update_is_the_staleness_weighted_mean_step_by_hand(async_cfg, replay_cache, monkeypatch):
    """Every update of the shared group against ``w^v + η_g Σ n_k s(τ_k) Δ_k / Σ n_k`` on its parameters and
    ``w^v + η_g (Σ n_k w_k / Σ n_k − w^v)`` on its buffers, from the arrivals the strategy buffered, η_g = 0.5."""
    import fedmoe.strategies.fedbuff as module
    from fedmoe.federated.parameters import SHARED

    strategy = FedBuff(world_for(async_cfg))
    strategy.server_lr = 0.5
    calls, merged = [], []
    real_rebased, real_aggregate = module.rebased, strategy.aggregate_train
    monkeypatch.setattr(module, "rebased", lambda current, item, weight, steps: (
        calls.append((len(merged), current, item, weight)) or real_rebased(current, item, weight, steps)))

    def aggregate(server_round, replies):
        out = real_aggregate(server_round, replies)
        merged.append(out[0])
        return out

    strategy.aggregate_train = aggregate
    start(strategy, ReplayGrid(4, replay_cache), 3)
    layout = strategy.layout
    params = {n for n, _ in strategy.world.template.named_parameters()}
    is_param = np.zeros(layout.entries(SHARED)[-1][2].stop, dtype=bool)
    for name, _, where in layout.entries(SHARED):
        is_param[where] = name in params
    assert is_param.any() and not is_param.all()  # the shared group holds parameters and statistics
    for r, rec in enumerate(strategy.history):
        got = [(cur, item, w) for i, cur, item, w in calls if i == r]
        assert [w for *_, w in got] == pytest.approx([1 / math.sqrt(1 + t) for t in rec.staleness])
        n = np.array([item.reply.num_examples for _, item, _ in got], dtype=np.float64)
        cur = got[0][0][SHARED].astype(np.float64)
        step = sum(nk * w * item.delta[SHARED] for nk, (_, item, w) in zip(n, got)) / n.sum()
        mean = sum(nk * item.arrays[SHARED].astype(np.float64) for nk, (_, item, _) in zip(n, got)) / n.sum()
        expected = np.where(is_param, cur + 0.5 * step, cur + 0.5 * (mean - cur))
        new = layout.pack({k: merged[r][k].numpy() for k in strategy.groups[SHARED]})[SHARED]
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-6)
    assert any(t > 0 for r in strategy.history for t in r.staleness)


def test_a_device_in_flight_is_not_dispatched_again(async_run):
    strategy, sent = async_run
    assert len(sent) == 4 + 2 + 2
    busy: dict[int, float] = {}
    for device, _, t, arrival, _ in sent:
        assert device not in busy or busy[device] <= t, f"device {device} sent again while in flight"
        busy[device] = arrival


def test_updates_beyond_max_staleness_are_dropped_in_a_run(async_cfg, replay_cache):
    strategy = FedBuff(world_for(async_cfg))
    strategy.max_staleness = 0
    start(strategy, ReplayGrid(4, replay_cache), 2)
    second = strategy.history[1]
    assert second.dropped >= 1 and all(t == 0 for r in strategy.history for t in r.staleness)
    assert sum("dropped, staleness 1 > 0" in f for f in second.failures) == second.dropped
    assert second.failed >= second.dropped


# ---------------------------------------------------------------- resume


class Stop(Exception):
    pass


def test_a_resumed_run_continues_as_the_uninterrupted_one(async_cfg, replay_cache, tmp_path):
    """Stopped in round 3, resumed from the state saved after round 2 (devices in flight included): same arrays
    and the same round records as the run never stopped."""
    whole = serve(ReplayGrid(4, replay_cache), async_cfg, tmp_path / "whole")

    def stop(record):
        if record.round == 3:
            raise Stop

    with pytest.raises(Stop):
        serve(ReplayGrid(4, replay_cache), async_cfg, tmp_path / "cut", on_round=stop)
    resumed = serve(ReplayGrid(4, replay_cache), async_cfg, tmp_path / "cut", resume=True)
    assert resumed.metrics["resumed_after_round"] == 2
    assert all(np.array_equal(whole.arrays[k], resumed.arrays[k]) for k in whole.arrays)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(resumed.metrics["rounds"]) == strip(whole.metrics["rounds"])
    assert resumed.strategy.history[2].staleness and len(resumed.strategy.queue) == len(whole.strategy.queue) > 0


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("fedbuff, message", [
    ({"buffer_size": 5, "concurrency": 3}, "buffer_size (5) exceeds concurrency (3)"),
    ({"concurrency": 9}, "federated.fedbuff.concurrency=9 exceeds partition.num_devices=4"),
    ({"concurrency": 3, "buffer_size": 2, "staleness": "nope"}, "federated.fedbuff.staleness: unknown staleness"),
])
def test_bad_settings_are_refused_in_one_line(fedbuff, message):
    with pytest.raises((ConfigError, ValueError, KeyError)) as err:
        check_fedbuff_config(tiny_config(federated={"strategy": "fedbuff", "fedbuff": fedbuff}))
    assert message in str(err.value).replace("\n", " ")


def test_more_in_flight_than_resource_blocks_is_refused():
    cfg = tiny_config(partition={"num_devices": 120},
                      federated={"strategy": "fedbuff", "fedbuff": {"concurrency": 101, "buffer_size": 3}})
    with pytest.raises(ConfigError, match="concurrency=101 exceeds the 100 uplink resource blocks"):
        check_fedbuff_config(cfg)


def test_cli_refuses_a_bad_fedbuff_setting_before_starting(capsys, tmp_path):
    code = cli(["run", "--quiet", "--out", str(tmp_path / "r"), "--set", "federated.strategy=fedbuff",
                "--set", "federated.fedbuff.staleness=nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "federated.fedbuff.staleness" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- Ray


@pytest.mark.slow  # ~40 s on a loaded 2-core machine, Ray's start-up mostly
def test_semi_asynchronous_rounds_on_ray(tmp_path):
    import json

    from fedmoe.simulation import run_federated

    cfg = tiny_config(partition={"num_devices": 3},
                      federated={"strategy": "fedbuff", "clients_per_round": 3, "centralised_reference": False,
                                 "fedbuff": {"buffer_size": 2, "concurrency": 3}})
    run_federated(cfg, tmp_path, progress=False)
    rounds = [r for r in json.loads((tmp_path / "metrics.json").read_text())["rounds"] if r["round"] > 0]
    assert [r["completed"] for r in rounds] == [2, 2]
    assert rounds[0]["selected"] == 3 and rounds[1]["selected"] == 2  # the two that arrived are sent again
    assert len(rounds[1]["staleness"]) == 2 and set(rounds[1]["staleness"]) <= {0, 1}
    assert rounds[1]["clock_s"] == pytest.approx(rounds[0]["clock_s"] + rounds[1]["latency_s"])
    assert all(math.isfinite(r["accuracy"]) for r in rounds)
