"""Checkpoint and resume (fedmoe.federated.resume, device_state): a run stopped after round 3's
training and resumed from the state saved after round 2 ends with the same global arrays, bit
for bit, as a run never stopped; each saved part matters; bad resumes fail in one line."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedmoe.federated import resume as resume_mod
from fedmoe.federated.device_state import DeviceStateStore, state_folder
from fedmoe.federated.resume import ResumeError, load_state, resume_path
from strategies.expert_wise import ExpertWise
from strategies.server_app import serve
from tests.federated.conftest import LocalGrid, tiny_config

ROUNDS, STOP_IN = 4, 3
# FedAvgM with momentum (a rule with state), the critic of stage II and the heads as local keys
# (state the devices keep), random selection (the server's RNG decides who takes part)
RESUMABLE = {"federated": {"rounds": ROUNDS, "stage1_rounds": 1, "aggregator": "fedavgm",
                           "aggregator_options": {"server_momentum": 0.9}, "local_keys": ["heads.trunk.*"],
                           "selection": "random", "clients_per_round": 3}}


class Stop(Exception):
    """Stands for the server process dying in the middle of a round."""


def stop_in_round(n: int):
    def on_round(record) -> None:
        if record.round == n:
            raise Stop(f"stopped in round {n}")
    return on_round


def run(run_dir: Path, **kw):
    return serve(LocalGrid(4), kw.pop("cfg", None) or tiny_config(**RESUMABLE), run_dir,
                 client_state_dir=run_dir / "client_state", **kw)


def stopped_then_resumed(run_dir: Path, client_state: bool = True):
    with pytest.raises(Stop):
        run(run_dir, on_round=stop_in_round(STOP_IN))
    return serve(LocalGrid(4), tiny_config(**RESUMABLE), run_dir, resume=True,
                 client_state_dir=run_dir / "client_state" if client_state else None)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run(tmp_path_factory.mktemp("uninterrupted"))


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resumed_run_ends_bit_for_bit_where_the_uninterrupted_one_does(uninterrupted, tmp_path):
    with pytest.raises(Stop):
        run(tmp_path, on_round=stop_in_round(STOP_IN))
    saved = load_state(tmp_path, tiny_config(**RESUMABLE))
    assert saved.round == STOP_IN - 1
    # the devices that trained in the stopped round wrote a state one round ahead of the server's
    ahead = [p for p in (tmp_path / "client_state").glob(f"device_*/round_{STOP_IN:06d}.npz")]
    assert ahead
    resumed = serve(LocalGrid(4), tiny_config(**RESUMABLE), tmp_path, resume=True,
                    client_state_dir=tmp_path / "client_state")
    assert same_arrays(uninterrupted.arrays, resumed.arrays)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(resumed.metrics["rounds"]) == strip(uninterrupted.metrics["rounds"])
    assert resumed.metrics["summary"] == uninterrupted.metrics["summary"]
    assert resumed.metrics["resumed_after_round"] == STOP_IN - 1
    assert [r["round"] for r in resumed.metrics["rounds"]] == list(range(ROUNDS + 1))
    assert resumed.strategy.clock_s == uninterrupted.strategy.clock_s


def _drop_rules(state):
    return {**state, "rules": {}}


def _drop_rng(state):
    from strategies import STRATEGIES

    fresh = STRATEGIES.get("expert_wise")(tiny_config(**RESUMABLE))  # the RNG as a new run starts it
    return {**state, "rng": fresh._rng.bit_generator.state}


@pytest.mark.parametrize("part", ["device state", "aggregation rule state", "selection RNG"])
def test_each_saved_part_matters(uninterrupted, tmp_path, monkeypatch, part):
    """Resuming without one part of the state gives other arrays: the equality test can fail."""
    if part == "aggregation rule state":
        real = ExpertWise.load_state_dict
        monkeypatch.setattr(ExpertWise, "load_state_dict", lambda self, s: real(self, _drop_rules(s)))
    elif part == "selection RNG":
        real = ExpertWise.load_state_dict
        monkeypatch.setattr(ExpertWise, "load_state_dict", lambda self, s: real(self, _drop_rng(s)))
    resumed = stopped_then_resumed(tmp_path, client_state=part != "device state")
    assert not same_arrays(uninterrupted.arrays, resumed.arrays)


def test_a_fresh_run_in_the_same_folder_does_not_pick_up_old_state(uninterrupted, tmp_path):
    with pytest.raises(Stop):
        run(tmp_path, on_round=stop_in_round(STOP_IN))
    again = run(tmp_path)
    assert same_arrays(uninterrupted.arrays, again.arrays)
    assert "resumed_after_round" not in again.metrics


def test_a_crash_while_saving_leaves_the_previous_state(tmp_path, monkeypatch):
    """The resume state is replaced whole or not at all: a failed write keeps round 1's."""
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        if str(dst).endswith(resume_mod.RESUME_FILE):
            calls["n"] += 1
            if calls["n"] == 2:  # the save after round 2
                raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path)
    assert load_state(tmp_path, tiny_config(**RESUMABLE)).round == 1
    assert [p.name for p in resume_path(tmp_path).parent.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------------------- bad resumes


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run folder holding the state after round 1 of 4."""
    d = tmp_path_factory.mktemp("saved")
    with pytest.raises(Stop):
        run(d, on_round=stop_in_round(2))
    return d


def test_resume_refuses_another_configuration_naming_the_keys(saved_run):
    other = tiny_config(**{**RESUMABLE, "federated": {**RESUMABLE["federated"], "local_epochs": 2}},
                        train={"lr": 0.01})
    with pytest.raises(ResumeError, match=r"federated\.local_epochs \(1 != 2\).*train\.lr") as err:
        load_state(saved_run, other)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case, pattern", [
    ("missing", "nothing to resume"),
    ("not a pickle", "not a readable fedmoe resume state"),
    ("another object", "not a fedmoe resume state"),
    ("finished", "finished all 4 rounds"),
])
def test_resume_refuses_what_cannot_be_resumed(saved_run, tmp_path, case, pattern):
    cfg = tiny_config(**RESUMABLE)
    target = tmp_path
    if case == "not a pickle":
        resume_path(tmp_path).parent.mkdir(parents=True)
        resume_path(tmp_path).write_bytes(b"\x00garbage")
    elif case == "another object":
        resume_path(tmp_path).parent.mkdir(parents=True)
        resume_path(tmp_path).write_bytes(pickle.dumps({"round": 1}))
    elif case == "finished":
        state = pickle.loads(resume_path(saved_run).read_bytes())
        state.round = ROUNDS
        resume_path(tmp_path).parent.mkdir(parents=True)
        resume_path(tmp_path).write_bytes(pickle.dumps(state))
    with pytest.raises(ResumeError, match=pattern) as err:
        serve(LocalGrid(4), cfg, target, resume=True)
    assert "\n" not in str(err.value)


def test_resume_is_refused_for_modes_that_cannot_resume(tmp_path):
    from strategies.server_app import serve_any

    cfg = tiny_config(mode="split")
    with pytest.raises(ResumeError, match="federated' only"):
        serve_any(LocalGrid(4), cfg, tmp_path, resume=True)


def test_cli_resume_errors_are_one_line_with_status_2(tmp_path, capsys):
    from fedmoe.cli import main

    code = main(["run", "--out", str(tmp_path / "never"), "--resume", "--quiet", "--set", "federated.rounds=2",
                 "--set", "federated.stage1_rounds=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fedmoe: error: nothing to resume") and "\n" not in err
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------- device state


def test_device_state_versions(tmp_path):
    store = DeviceStateStore(tmp_path, 3)
    assert store.load_before(5) == {} and store.versions() == []
    for r in (2, 5, 7):
        store.save(r, {"critic.w": np.full(2, float(r))})
    assert store.versions() == [5, 7]  # the two newest are kept
    assert store.load_before(7)["critic.w"][0] == 5.0
    assert store.load_up_to(7)["critic.w"][0] == 7.0
    assert store.load_before(8)["critic.w"][0] == 7.0
    assert store.load_before(5) == {}


def test_state_folder_prefers_the_node_config(tmp_path):
    assert state_folder({"state-dir": str(tmp_path / "node")}, {"client-state-dir": "x"}) == tmp_path / "node"
    assert state_folder({}, {"client-state-dir": str(tmp_path)}) == tmp_path
    assert state_folder({"state-dir": " "}, {}) is None
