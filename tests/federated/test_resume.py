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
from fedmoe.federated.resume import ResumeError, load_state, resume_path, save_state
from fedmoe.strategies.expert_wise import ExpertWise
from fedmoe.strategies.server_app import serve
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
    from fedmoe.strategies import STRATEGIES

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


def test_resume_accepts_other_operator_settings(saved_run):
    """``report`` (what the run writes for its operator, e.g. TensorBoard) changes nothing the run computes."""
    assert load_state(saved_run, tiny_config(**RESUMABLE, report={"tensorboard": True})).round == 1
    with pytest.raises(ResumeError, match=r"train\.lr \(") as err:  # the other sections are still compared
        load_state(saved_run, tiny_config(**RESUMABLE, report={"tensorboard": True}, train={"lr": 0.01}))
    assert "report" not in str(err.value)


@pytest.mark.parametrize("case, pattern", [
    ("missing", "nothing to resume"),
    ("not an archive", "not an .npz archive"),
    ("another archive", "not a fedmoe resume state"),
    ("finished", "finished all 4 rounds"),
])
def test_resume_refuses_what_cannot_be_resumed(saved_run, tmp_path, case, pattern):
    cfg = tiny_config(**RESUMABLE)
    target = tmp_path
    if case == "not an archive":
        resume_path(tmp_path).parent.mkdir(parents=True)
        resume_path(tmp_path).write_bytes(b"\x00garbage")
    elif case == "another archive":
        resume_path(tmp_path).parent.mkdir(parents=True)
        np.savez(resume_path(tmp_path), round=np.array(1))
    elif case == "finished":
        state = load_state(saved_run, cfg)
        state.round = ROUNDS
        save_state(tmp_path, state)
    with pytest.raises(ResumeError, match=pattern) as err:
        serve(LocalGrid(4), cfg, target, resume=True)
    assert "\n" not in str(err.value)


def test_resume_is_refused_for_modes_that_cannot_resume(tmp_path):
    from fedmoe.strategies.server_app import serve_any

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


# ---------------------------------------------------------------------------- hostile state files


class _Payload:
    """Unpickling this object opens (so creates) ``marker``: code run by whoever loads the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _object_array_npz(path: Path, payload: object) -> None:
    """An .npz whose one member is an object array: the .npy format stores it as a pickle."""
    np.savez(path, state=np.array([payload, 1], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("where", ["resume.pkl (the old state file)", "resume.npz is a pickle",
                                   "resume.npz holds an object array"])
def test_a_crafted_pickle_where_the_state_lives_is_never_executed(saved_run, tmp_path, where):
    """Issue 18, finding 3: ``checkpoints/resume.pkl`` was unpickled by ``--resume`` (and by the
    deployed ServerApp with ``resume=true``): a crafted one ran code. No state file is unpickled now."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    marker = tmp_path / "pwned"
    state = resume_path(run_dir)
    if where.startswith("resume.pkl"):
        state.unlink()
        (state.parent / "resume.pkl").write_bytes(pickle.dumps(_Payload(marker)))
        pattern = "a pickle is never loaded"
    elif where == "resume.npz is a pickle":
        state.write_bytes(pickle.dumps(_Payload(marker)))
        pattern = "not an .npz archive"
    else:
        _object_array_npz(state, _Payload(marker))
        pattern = "Python objects"
    with pytest.raises(ResumeError, match=pattern) as err:
        serve(LocalGrid(4), tiny_config(**RESUMABLE), run_dir, resume=True)
    assert not marker.exists()
    assert "\n" not in str(err.value)


def _copy_run(saved_run: Path, tmp_path: Path) -> Path:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    return run_dir


@pytest.mark.parametrize("mode", [0o664, 0o646], ids=["group-writable", "world-writable"])
def test_a_state_file_others_may_write_is_refused(saved_run, tmp_path, mode):
    """A state file writable by the group or by others could hold anything another user put there."""
    run_dir = _copy_run(saved_run, tmp_path)
    os.chmod(resume_path(run_dir), mode)
    with pytest.raises(ResumeError, match=f"mode {mode:04o} lets the group or others write it"):
        load_state(run_dir, tiny_config(**RESUMABLE))
    os.chmod(resume_path(run_dir), 0o644)
    assert load_state(run_dir, tiny_config(**RESUMABLE)).round == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_state_file_of_another_user_is_refused(saved_run, tmp_path):
    run_dir = _copy_run(saved_run, tmp_path)
    os.chown(resume_path(run_dir), 4242, 4242)
    with pytest.raises(ResumeError, match="owned by uid 4242, not by this user"):
        load_state(run_dir, tiny_config(**RESUMABLE))


def _rewrite_document(path: Path, edit) -> None:
    """Rewrite the resume state at ``path`` with ``edit(doc, arrays)`` applied (a hand-crafted file)."""
    import json

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    doc = json.loads(arrays["state"].tobytes())
    edit(doc, arrays)
    arrays["state"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    os.unlink(path)
    np.savez(path, **arrays)


def _drop_entry(node, key):
    node["$dict"] = [pair for pair in node["$dict"] if pair[0] != key]


def _set_entry(node, key, value):
    node["$dict"] = [[k, value if k == key else v] for k, v in node["$dict"]]


def _first_record(doc):
    return doc["strategy"]["$dict"][0][1][0]  # history[0]: a RoundRecord


TAMPERED = {
    "an unregistered class": (lambda d, a: _first_record(d).update({"$record": "Popen"}), "'Popen' is not a record"),
    "a field of the wrong type": (lambda d, a: _first_record(d)["fields"].update({"selected": "3"}),
                                  "selected: expected int"),
    "an unknown field": (lambda d, a: _first_record(d)["fields"].update({"shell": 1}), "unknown fields \\['shell'\\]"),
    "an unknown tag": (lambda d, a: d.update({"rng": {"$eval": "1"}}), "unknown tag '\\$eval'"),
    "an extra member": (lambda d, a: a.update({"value/extra": np.zeros(2)}), "not referenced"),
    "a member outside the layout": (lambda d, a: a.update({"payload": np.zeros(2)}), "unexpected member 'payload'"),
    "a global array of another shape": (
        lambda d, a: a.update({f"global/{d['global'][0]}": np.zeros(3, dtype=np.float32)}), "global array"),
    "a missing global array": (lambda d, a: d["global"].append("extra.weight"), "'global/extra.weight' is missing"),
    "a round that is not a number": (lambda d, a: d.update({"round": "1"}), "round: expected a round number"),
    "a strategy without one of its keys": (lambda d, a: _drop_entry(d["strategy"], "clock_s"),
                                           "strategy state has keys"),
    "a random state that is not one": (lambda d, a: _set_entry(d["rng"], "python", {"$tuple": [3]}),
                                       "the python state is not one"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_hand_crafted_state_is_refused_in_one_line(saved_run, tmp_path, case):
    """Only what fedmoe writes is read back: a record class, field, tag or member it does not write,
    or values of the wrong type or shape, are refused before the run starts."""
    edit, pattern = TAMPERED[case]
    run_dir = _copy_run(saved_run, tmp_path)
    _rewrite_document(resume_path(run_dir), edit)
    with pytest.raises(ResumeError, match=pattern) as err:
        serve(LocalGrid(4), tiny_config(**RESUMABLE), run_dir, resume=True)
    assert "\n" not in str(err.value)


def test_an_archive_declaring_more_than_memory_is_refused_before_reading(saved_run, tmp_path):
    """A member whose header declares a huge array is refused from its header (nothing is decompressed)."""
    import zipfile

    run_dir = _copy_run(saved_run, tmp_path)
    path = resume_path(run_dir)
    header = io_header(np.dtype(np.float64), (10**12,))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("value/huge.npy", header)
    with pytest.raises(ResumeError, match="declares"):
        load_state(run_dir, tiny_config(**RESUMABLE))


def io_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A .npy header for ``shape`` of ``dtype``, with no values after it."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_every_flower_rule_state_round_trips_through_the_file(tmp_path):
    """FedAdam's moments (dicts of arrays) and FedAvgM's momentum (a list) and current arrays (an
    ArrayRecord) come back bit for bit onto fresh rules built from the config."""
    from fedmoe.federated.resume import ServerState
    from fedmoe.strategies.aggregators import make_aggregator
    from fedmoe.strategies.resumable import live_state, plain_state

    rng = np.random.default_rng(0)
    adam = make_aggregator("fedadam")
    adam.current_arrays = {"w": rng.standard_normal(3).astype(np.float32)}
    adam.m_t = {"w": rng.standard_normal(3).astype(np.float32)}
    adam.v_t = {"w": np.abs(rng.standard_normal(3)).astype(np.float32)}
    cfg = tiny_config(**RESUMABLE)
    state = ServerState(1, cfg.model_dump(mode="json"), {}, {"rules": plain_state({"shared": adam})},
                        {1: {"accuracy": 0.5, "score": "topk"}}, {})
    save_state(tmp_path, state)
    back = live_state(load_state(tmp_path, cfg).strategy["rules"], lambda: make_aggregator("fedadam"))["shared"]
    for name in ("current_arrays", "m_t", "v_t"):
        assert getattr(back, name).keys() == getattr(adam, name).keys()
        assert all(np.array_equal(getattr(back, name)[k], getattr(adam, name)[k]) for k in getattr(adam, name))
        assert all(getattr(back, name)[k].dtype == np.float32 for k in getattr(adam, name))
    assert back.eta == adam.eta and back.tau == adam.tau


def test_device_state_others_may_write_is_refused(tmp_path):
    """A device loads its own state only from a file nobody else could have written."""
    from fedmoe.files import UnsafeFileError

    store = DeviceStateStore(tmp_path, 0)
    path = store.save(1, {"critic.w": np.ones(2)})
    os.chmod(path, 0o666)
    with pytest.raises(UnsafeFileError, match="lets the group or others write it"):
        store.load_before(2)
    os.chmod(path, 0o600)
    assert store.load_before(2)["critic.w"].tolist() == [1.0, 1.0]
