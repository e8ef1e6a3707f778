"""The ``fedmoe`` command line: help, one-line config errors, data make/stats, demo."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fedmoe.cli import main
from fedmoe.config import ConfigError
from fedmoe.data.samples import ISACSamples
from fedmoe.overrides import parse_assignment

TINY = ["--num-samples", "400", "--quiet"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fedmoe.cli", *args], capture_output=True, text=True, timeout=240)


def test_help_lists_the_subcommands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("demo", "data", "scenarios"):
        assert word in proc.stdout
    proc = run_cli("data", "--help")
    assert proc.returncode == 0 and "make" in proc.stdout and "stats" in proc.stdout


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("data.num_samples=-5", "data.num_samples: Input should be greater than 0 (allowed: > 0 and <= 5e+07; got -5)"),
        ("wireless.channel.carrier_ghz=500", "wireless.channel.carrier_ghz"),
        ("data.scene.num_blockerz=3", "data.scene.num_blockerz: unknown field"),
        ("wireless.channel.scenario='rma'", "wireless.channel.scenario"),
    ],
)
def test_bad_config_value_is_one_line_and_exit_2(setting, expected):
    proc = run_cli("data", "make", "--out", "unused.npz", "--set", setting)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_bad_toml_file_and_unknown_scenario(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nnum_samples = = 3\n")
    proc = run_cli("data", "make", "--out", str(tmp_path / "x.npz"), "--scenario", str(bad))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("data", "make", "--out", str(tmp_path / "x.npz"), "--scenario", "atlantis")
    assert proc.returncode == 2 and "unknown scenario 'atlantis'" in proc.stderr and "default" in proc.stderr


def test_parse_assignment_reads_toml_values():
    assert parse_assignment("data.seed=3") == ("data.seed", 3)
    assert parse_assignment("wireless.channel.scenario=uma") == ("wireless.channel.scenario", "uma")
    assert parse_assignment("data.scene.uav_height_m=[20.0, 30.0]") == ("data.scene.uav_height_m", [20.0, 30.0])
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_assignment("novalue")


def test_data_make_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "d.npz"
    assert main(["data", "make", "--out", str(out), "--seed", "4", *TINY]) == 0
    assert "wrote 400 samples" in capsys.readouterr().out
    s = ISACSamples.load(out)
    assert len(s) == 400 and set(s.inputs) == {"camera", "lidar", "radar", "gps", "rf"}


def test_data_stats_reports_baselines_by_condition(tmp_path, capsys):
    data = tmp_path / "d.npz"
    main(["data", "make", "--out", str(data), *TINY])
    out = tmp_path / "stats"
    code = main(["data", "stats", "--input", str(data), "--out", str(out), "--epochs", "1", "--quiet",
                 "--set", "data.test_fraction=0.25"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1 LoS" in printed and "top-1 blk" in printed
    report = json.loads((out / "stats.json").read_text())
    assert report["summary"]["num_samples"] == 400
    assert report["baselines"]["test_samples"] == 100
    groups = {r["group"]: r for r in report["baselines"]["results"]}
    assert {"camera", "gps", "rf", "all"} <= set(groups)
    for r in groups.values():
        assert set(r["top1"]) == {"all", "los", "blocked"}
        assert all(0.0 <= v <= 1.0 for v in r["top1"].values() if not np.isnan(v))
    for png in ("labels.png", "examples.png", "baselines.png"):
        assert (out / png).stat().st_size > 5_000


def test_demo_runs_end_to_end_without_baselines(tmp_path):
    proc = run_cli("demo", "--out", str(tmp_path / "demo"), "--epochs", "0", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "400 samples" in proc.stdout
    assert (tmp_path / "demo" / "stats.json").is_file() and (tmp_path / "demo" / "examples.png").is_file()


def test_missing_input_file_is_one_line(tmp_path):
    proc = run_cli("data", "stats", "--input", str(tmp_path / "nope.npz"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "no such dataset file" in proc.stderr and "Traceback" not in proc.stderr


def test_scenarios_by_name_or_path(tmp_path):
    from fedmoe.scenarios import SCENARIOS, load_scenario, resolve_scenario

    assert "default" in SCENARIOS.names()
    assert load_scenario("default").name == "default"
    own = tmp_path / "mine.toml"
    own.write_text('name = "mine"\n[partition]\nnum_devices = 3\n')
    cfg = load_scenario(str(own), {"partition": {"num_devices": 4}})
    assert cfg.name == "mine" and cfg.partition.num_devices == 4  # --set wins over the file
    assert load_scenario(None).name == "default"  # built-in defaults, no file
    with pytest.raises(ConfigError, match="no such config file"):
        resolve_scenario(tmp_path / "absent.toml")


def test_a_folder_named_like_a_scenario_does_not_hide_it(tmp_path, monkeypatch):
    """Issue 18, finding 7: names were looked up in the working folder first, so a folder ``default``
    there (``fedmoe run --out default`` makes one) broke every command. Registered names come first;
    a path must look like one (a separator or ``.toml``)."""
    from fedmoe.scenarios import load_scenario, resolve_scenario

    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "split").write_text('name = "not the built-in split"\n')
    assert load_scenario("default").name == "default"
    assert load_scenario("split").mode == "split"
    with pytest.raises(ConfigError, match="is a folder"):
        resolve_scenario("./default")
    (tmp_path / "mine.toml").write_text('name = "mine"\n')
    assert load_scenario("mine.toml").name == "mine"
    with pytest.raises(ConfigError, match=r"unknown scenario 'mine'.*ending in \.toml, e\.g\. \./mine"):
        resolve_scenario("mine")
    assert main(["data", "make", "--out", "x.npz", "--num-samples", "5", "--quiet"]) == 0


def test_a_relative_extends_is_relative_to_its_file(tmp_path, monkeypatch):
    """Issue 18, finding 7: ``extends = "base.toml"`` was looked up in the working folder, so it found
    another file (or none) depending on where the command ran."""
    from fedmoe.scenarios import load_scenario

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.toml").write_text('name = "base"\n[partition]\nnum_devices = 7\n')
    (tmp_path / "configs" / "child.toml").write_text('extends = "base.toml"\nname = "child"\n')
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "base.toml").write_text('name = "decoy"\n[partition]\nnum_devices = 2\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_scenario("../configs/child.toml")
    assert cfg.name == "child" and cfg.partition.num_devices == 7


def test_train_writes_a_report_and_diagnostics(tmp_path, capsys):
    out = tmp_path / "train"
    code = main(["train", "--out", str(out), "--num-samples", "600", "--quiet",
                 "--set", "train.stage1_epochs=1", "--set", "train.stage2_epochs=1",
                 "--set", "model.experts_per_modality=1", "--set", "partition.num_devices=5"])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert set(s["accuracy"]) == {"all", "los", "blocked"} and s["mean_flops"] > 0 and s["mean_latency_s"] > 0
    # the default mixture: GPS, GPS+RF and GPS+RF+radar experts, scored on top-1, top-3 and the power ratio
    assert len(s["usage"]) == 3 and [e["stage"] for e in report["epochs"]] == [1, 2]
    assert (set(s["scores"]) == {"top1", "topk", "power_ratio_db"}
            and s["scores"]["topk"]["all"] >= s["scores"]["top1"]["all"])
    assert (out / "diagnostics.png").stat().st_size > 5_000


def test_train_rejects_an_unknown_gate(tmp_path):
    proc = run_cli("train", "--out", str(tmp_path), "--num-samples", "200", "--set", "model.gate='sparse'")
    assert proc.returncode == 2 and "gate 'sparse'" in proc.stderr and "Traceback" not in proc.stderr


def test_sweep_writes_a_table_and_a_pareto_plot(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--out", str(out), "--num-samples", "500", "--quiet", "--lambdas", "0,30",
                 "--set", "train.stage1_epochs=1", "--set", "train.stage2_epochs=1",
                 "--set", "model.modalities=[]", "--set", "model.subsets=[['gps','rf'],['gps','rf','radar']]",
                 "--set", "model.experts_per_modality=1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "λ=0 " in table and "λ=30" in table and "costly LoS" in table
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["lambda"] for p in points] == [0.0, 30.0]
    for p in points:
        assert 0 <= p["accuracy"] <= 1 and p["mean_latency_s"] > 0 and set(p["usage"]) == {"gps+rf_s", "gps+rf+radar_s"}
    assert (out / "pareto.png").stat().st_size > 10_000


@pytest.mark.parametrize("bad", ["", "a,b", "-1", "1,nan"])
def test_sweep_rejects_bad_lambdas(bad, tmp_path):
    proc = run_cli("sweep", "--out", str(tmp_path), "--lambdas", bad)
    assert proc.returncode == 2 and "--lambdas" in proc.stderr and "Traceback" not in proc.stderr


def test_only_usage_errors_are_reported_as_bad_input(monkeypatch, capsys):
    """A :class:`fedmoe.errors.UsageError` (every error about the user's input derives from it) is one
    line with status 2; any other ``ValueError`` is a bug and is not dressed up as bad input."""
    import fedmoe.cli
    from fedmoe.errors import UsageError

    def raise_(err):
        def command(args):
            raise err
        return command

    monkeypatch.setattr(fedmoe.cli, "cmd_scenarios", raise_(UsageError("--thing 'x': not a thing")))
    assert main(["scenarios"]) == 2
    assert capsys.readouterr().err == "fedmoe: error: --thing 'x': not a thing\n"
    assert issubclass(ConfigError, UsageError) and issubclass(UsageError, ValueError)
    monkeypatch.setattr(fedmoe.cli, "cmd_scenarios", raise_(ValueError("shapes (3,) and (4,) differ")))
    with pytest.raises(ValueError, match="shapes"):
        main(["scenarios"])
