"""The V2I agent trained across base stations (mode "v2i"): the round loop on the in-process grid,
the expert-wise aggregation by hand, failing base stations, the CLI on Ray."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fedmoe.config import ConfigError, deep_merge
from fedmoe.registry import UnknownNameError
from fedmoe.scenarios import load_scenario
from fedmoe.strategies.v2i_federated import POLICIES, REPORTED, TRAIN_V2I, V2IFederated, aggregate_groups, serve_v2i
from fedmoe.v2i.agents import build_agent
from fedmoe.v2i.federated import group_keys, local_round, local_seed, road, state_arrays
from tests.conftest import run_cli_on_ray
from tests.federated.conftest import LocalGrid

TINY = {"v2i": {"federated": {"rounds": 2, "local_updates": 2},
                "agent": {"hidden": 16, "episodes_per_update": 4, "episode_slots": 16, "eval_episodes": 4,
                          "eval_slots": 120, "warmup_slots": 20}}}
TINY_SETS = [f"v2i.{section}.{k}={v}" for section, values in TINY["v2i"].items() for k, v in values.items()]


def tiny_v2i(**sections):
    """The v2i scenario (3 base stations) shrunk to seconds; ``sections`` override (nested dicts)."""
    return load_scenario("v2i", deep_merge(TINY, sections))


def _stations(loop: V2IFederated) -> V2IFederated:
    """Skip the device query: base station ``r`` is LocalGrid node ``r + 1``."""
    loop.node_of = {r: r + 1 for r in range(loop.cfg.partition.num_devices)}
    return loop


def _expected_round(cfg, initial, stations, server_round=1):
    """The episode-weighted mean of what each base station computes on its own (equal weights here)."""
    outs = [local_round(cfg.v2i, initial, server_round, s) for s in stations]
    weights = [m["num-episodes"] for _, m in outs]
    return {k: sum(w * a[k].astype(np.float64) for (a, _), w in zip(outs, weights)) / sum(weights) for k in initial}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = tiny_v2i()
    grid = LocalGrid(cfg.partition.num_devices)
    out = tmp_path_factory.mktemp("v2i")
    return cfg, grid, serve_v2i(grid, cfg, out), out


def test_short_run_reports_every_road_and_policy(run):
    cfg, grid, res, out = run
    doc = res.metrics
    assert [r["completed"] for r in doc["rounds"]] == [3, 3] and all(r["failed"] == 0 for r in doc["rounds"])
    assert all(r["num_episodes"] == 3 * 2 * 4 for r in doc["rounds"])  # stations × local updates × episodes
    assert all(r["groups_averaged"] == {"temporal": 3, "critic": 3, "spatial": 3} for r in doc["rounds"])
    assert [row["speed_scale"] for row in doc["roads"]] == [0.5, 1.0, 1.6]
    for row in doc["roads"]:
        for p in POLICIES:
            assert set(row[p]) == set(REPORTED) and all(np.isfinite(v) for v in row[p].values())
        # every policy met the same episodes: the same per-episode lower bound
        assert len({row[p]["lower_bound_j"] for p in POLICIES}) == 1
        assert row["vision_only"]["energy_j"] == pytest.approx(40.0, abs=1e-12)  # K e_vis, exactly
        assert row["vision_only"]["reliable_slots"] == 1.0 and row["oracle"]["reliable_slots"] == 1.0
        assert abs(row["oracle"]["gap_to_bound"]) < 0.02  # exact per-episode play; the rest is the start-up
        assert row["oracle"]["energy_j"] < row["vision_only"]["energy_j"]
    # faster roads drift faster: the bound grows with the road's speed
    bounds = [row["oracle"]["lower_bound_j"] for row in doc["roads"]]
    assert bounds == sorted(bounds) and bounds[0] < bounds[-1]
    for p in POLICIES:
        assert doc["average"][p]["energy_j"] == pytest.approx(np.mean([row[p]["energy_j"] for row in doc["roads"]]))
    # the federated and the alone agent are different agents
    assert doc["roads"][0]["federated"]["energy_j"] != doc["roads"][0]["alone"]["energy_j"]
    assert doc["alone_updates"] == 4
    assert json.loads((out / "metrics.json").read_text())["roads"] == doc["roads"]
    assert json.loads((out / "config.json").read_text())["mode"] == "v2i"
    assert (out / "energy_per_road.png").stat().st_size > 0


def test_every_station_gets_the_global_agent_its_round_and_the_scenario(run):
    cfg, grid, res, _ = run
    train = [m for m in grid.sent if m.metadata.message_type == "train.v2i"]
    assert len(train) == 2 * 3
    assert sorted((m.content["config"]["round"], m.metadata.dst_node_id) for m in train) == \
        [(r, n) for r in (1, 2) for n in (1, 2, 3)]
    assert all(m.content["config"]["phase"] == "train" for m in train)
    first = [m for m in train if m.content["config"]["round"] == 1]
    init = state_arrays(build_agent(cfg.v2i, seed=cfg.v2i.seed))
    from fedmoe.flower import to_numpy

    for m in first:
        got = to_numpy(m.content["arrays"])
        assert got.keys() == init.keys() and all(np.array_equal(got[k], init[k]) for k in init)
    assert len({local_seed(cfg.v2i, r, s) for r in (1, 2) for s in range(3)}) == 6


def test_aggregation_is_the_episode_weighted_mean_per_group():
    groups = {"temporal": ["t.w", "t.b"], "spatial": ["s.w"], "critic": ["c.w"]}
    glob = {"t.w": np.zeros((2, 2), np.float32), "t.b": np.zeros(2, np.float32), "s.w": np.full(3, 9.0, np.float32),
            "c.w": np.full(1, 5.0, np.float32)}
    a = {"t.w": np.ones((2, 2), np.float32), "t.b": np.array([1.0, 2.0], np.float32),
         "s.w": np.array([1.0, 2.0, 3.0], np.float32)}
    b = {"t.w": np.full((2, 2), 5.0, np.float32), "t.b": np.array([3.0, 6.0], np.float32)}  # no spatial expert
    new, used = aggregate_groups(glob, [(a, 1.0), (b, 3.0)], groups)
    np.testing.assert_array_equal(new["t.w"], np.full((2, 2), (1 * 1 + 3 * 5) / 4))  # 4.0
    np.testing.assert_array_equal(new["t.b"], [(1 + 9) / 4, (2 + 18) / 4])  # 2.5, 5.0
    np.testing.assert_array_equal(new["s.w"], [1.0, 2.0, 3.0])  # only a carries it
    np.testing.assert_array_equal(new["c.w"], [5.0])  # nobody: the global value stays
    assert used == {"temporal": 2, "spatial": 1, "critic": 0}
    assert new["t.w"].dtype == np.float32 and glob["t.w"].sum() == 0  # the input is not modified
    with pytest.raises(ValueError, match="positive"):
        aggregate_groups(glob, [(a, 0.0)], groups)


def test_groups_of_the_hetero_moe_cover_its_state_dict_once():
    agent = build_agent(tiny_v2i().v2i)
    groups = group_keys(agent)
    assert set(groups) == {"temporal", "critic", "spatial"}
    keys = [k for ks in groups.values() for k in ks]
    assert sorted(keys) == sorted(agent.state_dict()) and len(keys) == len(set(keys))
    assert all(k.startswith(("temporal.", "policy_head.")) for k in groups["temporal"])
    assert all(k.startswith("spatial.") for k in groups["spatial"])


def test_a_round_is_the_mean_of_what_each_base_station_computes():
    cfg = tiny_v2i()
    loop = _stations(V2IFederated(cfg))
    initial = dict(loop.arrays)
    rec = loop.train_round(LocalGrid(3), 1)
    expected = _expected_round(cfg, initial, [0, 1, 2])
    for k in initial:
        np.testing.assert_allclose(loop.arrays[k], expected[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(loop.arrays["spatial.0.weight"], initial["spatial.0.weight"])  # training moved it
    assert rec.completed == 3 and rec.train_energy_j == pytest.approx(np.mean(list(rec.station_energy_j.values())))
    assert all(m["spread"] > 0 and m["step"] > 0 for m in rec.group_motion.values())


def test_an_erroring_base_station_is_logged_and_the_round_goes_on(caplog):
    cfg = tiny_v2i()
    loop = _stations(V2IFederated(cfg))
    initial = dict(loop.arrays)
    with caplog.at_level(logging.WARNING):
        rec = loop.train_round(LocalGrid(3, fail=[2]), 1)  # node 2 = base station 1
    assert rec.completed == 2 and rec.failed == 1 and rec.stations == [0, 2]
    assert rec.failures == ["base station 1: injected failure"] and "base station 1 failed" in caplog.text
    assert rec.num_episodes == 2 * 2 * 4 and rec.groups_averaged == {"temporal": 2, "critic": 2, "spatial": 2}
    expected = _expected_round(cfg, initial, [0, 2])
    for k in initial:
        np.testing.assert_allclose(loop.arrays[k], expected[k], rtol=1e-5, atol=1e-6)


def _garbage_array(reply):
    from flwr.app import Array

    record = reply.content["arrays"]
    key = sorted(record.keys())[0]
    record[key] = Array(dtype=record[key].dtype, shape=tuple(record[key].shape), stype="numpy.ndarray",
                        data=bytes(range(15)))


def _metric(key, value):
    from flwr.app import MetricRecord

    def tamper(reply):
        m = dict(reply.content["metrics"])
        if value is None:
            m.pop(key)
        else:
            m[key] = value
        reply.content["metrics"] = MetricRecord(m)
    return tamper


@pytest.mark.parametrize(("tamper", "reason"), [
    (_garbage_array, "not a .npy blob"),
    (_metric("num-episodes", [8, 8]), "num-episodes=[8, 8] is not a finite number"),
    (_metric("energy-j", None), "no 'energy-j'"),
    (_metric("energy-j", float("nan")), "energy-j=nan is not a finite number"),
], ids=["garbage array", "list num-episodes", "no energy", "NaN energy"])
def test_a_malformed_station_reply_is_left_out_and_the_round_goes_on(tamper, reason, caplog):
    """Issue 18, finding 2, for the V2I base stations: the round goes on with the others."""
    cfg = tiny_v2i()
    loop = _stations(V2IFederated(cfg))
    with caplog.at_level(logging.WARNING):
        rec = loop.train_round(LocalGrid(3, tamper={2: tamper}, tamper_on=TRAIN_V2I), 1)
    assert rec.completed == 2 and rec.stations == [0, 2] and len(rec.failures) == 1
    assert rec.failures[0].startswith("base station 1: ") and reason in rec.failures[0], rec.failures


def test_a_silent_or_misconfigured_station_is_left_out_and_no_reply_keeps_the_agent(caplog):
    cfg = tiny_v2i(split={"message_timeout_s": 7.0})
    loop = _stations(V2IFederated(cfg))
    grid = LocalGrid(3, fail=[1], silent_after={3: 0})
    grid.contexts[2].node_config["partition-id"] = 5  # a SuperNode started with a bad partition id
    initial = dict(loop.arrays)
    with caplog.at_level(logging.WARNING):
        rec = loop.train_round(grid, 1)
    assert grid.timeouts == [7.0]
    assert rec.completed == 0 and rec.failed == 3 and rec.train_energy_j is None
    assert rec.failures[0] == "base station 0: injected failure"
    assert "partition-id 5 is outside [0, 3)" in rec.failures[1]
    assert rec.failures[2] == "base station 2: no reply within 7 s"
    assert "no base station replied" in caplog.text
    assert all(np.array_equal(loop.arrays[k], initial[k]) for k in initial)


def test_roads_and_config_checks():
    from fedmoe.strategies.modes.v2i import check_v2i_config

    cfg = tiny_v2i(v2i={"federated": {"snr_db": [5.0, 10.0, 20.0]}})
    assert [road(cfg.v2i, r) for r in range(3)] == [(0.5, 5.0), (1.0, 10.0), (1.6, 20.0)]
    assert road(tiny_v2i().v2i, 2) == (1.6, 10.0)  # the scenario's v2i.federated.snr_db
    with pytest.raises(ValueError, match="base station 3 has no road"):
        road(cfg.v2i, 3)
    with pytest.raises(ConfigError, match="one base station per road"):
        tiny_v2i(partition={"num_devices": 2})
    with pytest.raises(UnknownNameError, match="nope"):
        check_v2i_config(tiny_v2i(v2i={"agent": {"policy": "nope"}}))
    check_v2i_config(tiny_v2i(v2i={"agent": {"policy": "ppo_mlp"}}))


def test_a_monolithic_agent_is_averaged_as_one_group():
    cfg = tiny_v2i(v2i={"federated": {"rounds": 1, "local_updates": 1}, "agent": {"policy": "ppo_mlp"}})
    loop = _stations(V2IFederated(cfg))
    rec = loop.train_round(LocalGrid(3), 1)
    assert set(loop.groups) == {"all"} and rec.groups_averaged == {"all": 3}


def test_federated_v2i_on_ray_through_the_cli(tmp_path, capsys):
    """The real ServerApp and ClientApp on Flower's Ray backend: 3 base stations, 2 rounds."""
    assert run_cli_on_ray("v2i", tmp_path, TINY_SETS) == 0
    out = capsys.readouterr().out
    assert "across 3 base stations" in out and "average over roads" in out
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["mode"] == "v2i" and [r["completed"] for r in doc["rounds"]] == [3, 3]
    assert [row["road"] for row in doc["roads"]] == [0, 1, 2]
    for row in doc["roads"]:
        assert set(POLICIES) <= set(row)
        assert row["vision_only"]["energy_j"] == pytest.approx(40.0, abs=1e-12)
        assert abs(row["oracle"]["gap_to_bound"]) < 0.02
    assert (tmp_path / "energy_per_road.png").is_file()


def test_an_unknown_agent_fails_before_ray_starts(tmp_path, capsys):
    assert run_cli_on_ray("v2i", tmp_path, TINY_SETS + ["v2i.agent.policy=nope"]) != 0
    assert "unknown V2I agent 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_alone_agent_budget_defaults_to_one_station_and_can_match_the_federation():
    cfg = tiny_v2i()
    assert V2IFederated(cfg).alone_updates() == 2 * 2  # rounds × local_updates
    cfg = tiny_v2i(v2i={"federated": {"alone_updates": 12}})
    assert V2IFederated(cfg).alone_updates() == 12
    with pytest.raises(ConfigError, match="alone_updates"):
        tiny_v2i(v2i={"federated": {"alone_updates": 0}})
