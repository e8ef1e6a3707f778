"""End to end: the real ServerApp and ClientApp on Flower's Ray simulation backend, and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fedmoe.cli import main as cli
from fedmoe.federated.parameters import to_numpy
from fedmoe.federated.run_folder import RUN_OUTPUTS
from fedmoe.federated.world import world_for
from fedmoe.flower import to_record
from fedmoe.simulation import run_federated
from fedmoe.strategies import ExpertWise, PlainFedAvg
from tests.federated.conftest import LocalGrid, tiny_config


def test_two_rounds_on_ray_write_the_run_folder(tmp_path):
    cfg = tiny_config(partition={"num_devices": 3}, federated={"clients_per_round": 3})
    run = run_federated(cfg, tmp_path, progress=False)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    rounds = [r for r in doc["rounds"] if r["round"] > 0]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [r["stage"] for r in rounds] == [1, 2]
    assert all(r["completed"] == r["selected"] > 0 and r["failed"] == 0 for r in rounds)
    assert rounds[1]["clock_s"] == pytest.approx(rounds[0]["clock_s"] + rounds[1]["latency_s"])
    assert all(r["energy_j"] > 0 and 0.0 <= r["accuracy"] <= 1.0 for r in rounds)
    assert doc["summary"]["rounds"] == 2 and doc["summary"]["virtual_time_s"] == pytest.approx(rounds[1]["clock_s"])
    with open(tmp_path / "rounds.csv") as f:
        assert len(list(csv.DictReader(f))) == 3  # the initial model and two rounds
    for name in ("accuracy.png", "energy.png", "gate_usage.png", "config.json", "checkpoints/final.pt",
                 "checkpoints/round_0001.pt"):
        assert (tmp_path / name).is_file(), name
    assert {p.name for p in tmp_path.iterdir()} <= set(RUN_OUTPUTS)  # what --force replaces covers a run's files
    initial = to_numpy(world_for(cfg).template.state_dict())
    assert any(not np.array_equal(run.arrays[k], initial[k]) for k in run.arrays)


def test_a_failing_device_does_not_stop_the_round(tiny_cfg):
    world = world_for(tiny_cfg)
    strategy = ExpertWise(world)
    grid = LocalGrid(4, fail=[2])
    strategy.start(grid, to_record(to_numpy(world.template.state_dict())), num_rounds=1)
    rec = strategy.history[0]
    assert rec.completed == 3 and rec.failed == 1 and "injected failure" in rec.failures[0]


def test_plain_fedavg_baseline_averages_every_expert_over_everyone(tiny_cfg):
    strategy = PlainFedAvg(tiny_cfg)
    assert strategy.world.cfg.model.gate == "dense" and strategy.world.cfg.federated.stage1_rounds == 0
    grid = LocalGrid(4)
    strategy.start(grid, to_record(to_numpy(strategy.world.template.state_dict())), num_rounds=1)
    sent = [m for m in grid.sent if m.metadata.message_type.endswith("train")]
    assert all(m.content["config"]["stage"] == 2 and m.content["config"]["cost-weight"] == 0.0 for m in sent)
    assert strategy.history[0].completed == len(sent) > 0


def test_plain_fedavg_trains_every_parameter_even_where_the_mixture_trains_its_gate_alone():
    """The default scenario's stage II trains the gate alone, for 24 cheap passes; FedAvg's only stage must train
    the experts too, for ``local_epochs`` passes (with frozen experts the dense baseline never learned)."""
    from fedmoe.federated.local import RoundInstructions, local_update
    from fedmoe.scenarios import load_scenario
    from fedmoe.strategies.plain_fedavg import baseline_config
    from fedmoe.training import caches_routing_targets

    cfg = load_scenario("default", {"partition": {"num_devices": 2, "samples_per_device": 40}})
    assert caches_routing_targets(cfg.train) and cfg.federated.epochs_of_stage(2) != cfg.federated.local_epochs
    base = baseline_config(cfg)
    assert not caches_routing_targets(base.train) and base.federated.epochs_of_stage(2) == cfg.federated.local_epochs
    world = world_for(base)
    start = to_numpy(world.template.state_dict())
    instr = RoundInstructions(server_round=1, stage=2, local_epochs=base.federated.epochs_of_stage(2), lr=base.train.lr,
                              tau=1.0, cost_weight=0.0, rate_bps=1e6, num_rb=1, deadline_s=1e6, fit_standardiser=True)
    after = local_update(world, 0, start, None, instr).arrays
    moved = {k for k in after if k.startswith("experts.") and not np.array_equal(after[k], start[k])}
    assert moved, "no expert parameter changed in the baseline's round"


@pytest.mark.parametrize("setting, message", [
    ("federated.aggregator=nope", "unknown aggregator 'nope'"),
    ("federated.selection=nope", "unknown selection policy 'nope'"),
    ("federated.strategy=nope", "unknown strategy 'nope'"),
    ("federated.clients_per_round=500", "clients_per_round"),
    ("federated.stage1_rounds=99", "stage1_rounds"),
])
def test_run_rejects_bad_settings_in_one_line_before_starting(setting, message, capsys, tmp_path):
    code = cli(["run", "--quiet", "--out", str(tmp_path / "r"), "--set", setting])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("when", ["writing the report", "saving the last round's state"])
def test_a_failed_run_leaves_no_final_model(tmp_path, monkeypatch, when):
    """Issue 18, finding 7: a disk full during ``fedmoe run`` left ``checkpoints/final.pt`` (and part of a
    report) behind, so the folder looked like a finished run. A failed run removes what only a finished
    run writes; it keeps the state of its last complete round when there is one to resume, and otherwise
    removes the folder it made, as every command does."""
    import fedmoe.federated.report
    import fedmoe.federated.resume
    from fedmoe.federated.resume import load_state

    cfg = tiny_config(partition={"num_devices": 3}, federated={"clients_per_round": 3})
    out = tmp_path / "new" / "run"
    if when == "writing the report":  # after metrics.json, while drawing the plots
        monkeypatch.setattr(fedmoe.federated.report, "plot_run", _disk_full)
    else:  # final.pt is written, then saving the state after round 2 (of 2) finds the disk full
        real, saves = fedmoe.federated.resume.write_atomic, []

        def full_at_the_second_save(*args, **kwargs):
            saves.append(1)
            return _disk_full() if len(saves) == 2 else real(*args, **kwargs)

        monkeypatch.setattr(fedmoe.federated.resume, "write_atomic", full_at_the_second_save)
    with pytest.raises(OSError, match="No space left"):
        run_federated(cfg, out, progress=False)
    if when == "writing the report":  # all rounds done: nothing to resume, so the folder this run made goes
        assert not (tmp_path / "new").exists()
    else:  # the state after round 1 stays for --resume; nothing that looks finished does
        assert not (out / "checkpoints" / "final.pt").exists() and not (out / "metrics.json").exists()
        assert load_state(out, cfg).round == 1
