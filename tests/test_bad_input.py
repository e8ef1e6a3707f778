"""Bad input everywhere a user types: one line naming what is wrong, a non-zero exit, nothing written.

One table per entry point:

* the ``fedmoe`` command line (:func:`fedmoe.cli.main`, in this process): config values given
  with ``--set`` (for every command that reads a config), scenario names and files,
  registered names (gates, strategies, ...), ``--out`` paths, ``--input`` files, options;
* the ``flwr run`` run config (:func:`fedmoe.strategies.server_app.config_from_run_config`);
* a SuperNode's node config (``fedmoe.clients.common.device_id``,
  :func:`fedmoe.federated.device_state.state_folder`) and how its errors reach the server.

An error from our code is exactly one stderr line ``fedmoe: error: ...`` with exit status 2
(a usage, config or path error) or 1 (a failure while running); an option argparse refuses by
its type is argparse's usage lines and one ``error:`` line, status 2. In every case the working
folder (where the default ``--out`` folders go) is the same before and after, byte for byte.
No case gets as far as starting Ray, Flower or a deployment (:func:`no_processes` fails the
test if one tried).
"""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedmoe.cli import main
from fedmoe.config import ConfigError

CONFIG_COMMANDS = {
    "demo": ["demo", "--epochs", "0"],
    "data-make": ["data", "make", "--out", "out.npz"],
    "data-stats": ["data", "stats", "--epochs", "0"],
    "train": ["train"],
    "sweep": ["sweep"],
    "run": ["run"],
    "deploy-local": ["deploy", "local"],
}
"""Every command that reads a config (``--scenario``, ``--set``); the writers use their default ``--out``."""


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header of an array of ``dtype`` and ``shape`` (the values follow it in a member)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def crafted_dataset(path: Path, members: dict[str, tuple[str, tuple[int, ...]]], headers_only: tuple[str, ...] = (),
                    compression: int = zipfile.ZIP_DEFLATED) -> None:
    """An .npz of zero-filled members ``{key: (dtype, shape)}`` written in 1 MiB chunks (so a member that
    deflates from gigabytes to a megabyte never exists in memory here); the keys in ``headers_only`` get
    their header and no values."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for key, (dtype, shape) in members.items():
            nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                f.write(npy_header(dtype, shape))
                while key not in headers_only and nbytes > 0:
                    chunk = min(nbytes, 1 << 20)
                    f.write(bytes(chunk))
                    nbytes -= chunk


VALID_DATASET = {"present": ("bool", (10, 5)), "inputs/gps": ("float32", (10, 6)), "labels/beam": ("int64", (10,)),
                 "bits/names": ("<U3", (1,)), "bits/values": ("int64", (1,))}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with the files the cases point at; the commands' default outputs go here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("a regular file, not a folder\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "earlier" / "checkpoints").mkdir(parents=True)
    (tmp_path / "earlier" / "notes.txt").write_text("not a run's file\n")
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "taken.npz").mkdir()
    (tmp_path / "bad.toml").write_text("[data\nnum_samples = 3\n")
    (tmp_path / "latin1.toml").write_bytes(b"name = '\xe9t\xe9'\n")
    (tmp_path / "value.toml").write_text("[data]\nnum_samples = -5\n")
    (tmp_path / "orphan.toml").write_text('extends = "absent.toml"\n')
    (tmp_path / "unknown_base.toml").write_text('extends = "atlantis"\n')
    (tmp_path / "number_base.toml").write_text("extends = 3\n")
    (tmp_path / "cycle_a.toml").write_text('extends = "cycle_b.toml"\n')
    (tmp_path / "cycle_b.toml").write_text('extends = "cycle_a.toml"\n')
    (tmp_path / "notes.npz").write_text("not an archive\n")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "zipish.npz").write_bytes(b"PK\x03\x04 truncated")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    crafted_dataset(tmp_path / "extra.npz", {**VALID_DATASET, "inputs/sonar": ("float32", (10, 2))})
    crafted_dataset(tmp_path / "rows.npz", {**VALID_DATASET, "labels/beam": ("int64", (11,))})
    crafted_dataset(tmp_path / "strings.npz", {**VALID_DATASET, "labels/beam": ("<U8", (10,))})
    crafted_dataset(tmp_path / "present.npz", {**VALID_DATASET, "present": ("float32", (10, 5))})
    crafted_dataset(tmp_path / "lying.npz", {**VALID_DATASET, "inputs/radar": ("float32", (10**9, 2, 16, 16))},
                    headers_only=("inputs/radar",))
    np.savez(tmp_path / "objects.npz", present=np.ones((2, 5), bool), **{"bits/names": np.array([{"a": 1}], object)},
             allow_pickle=True)
    crafted_dataset(tmp_path / "bzip.npz", VALID_DATASET, compression=zipfile.ZIP_BZIP2)
    with zipfile.ZipFile(tmp_path / "bzip.npz", "r") as zf:
        blob = bytearray((tmp_path / "bzip.npz").read_bytes())
        for info in zf.infolist():  # claim a compression method zipfile does not implement (99: AES)
            blob[info.header_offset + 8:info.header_offset + 10] = (99).to_bytes(2, "little")
        central = blob.find(b"PK\x01\x02")
        while central != -1:
            blob[central + 10:central + 12] = (99).to_bytes(2, "little")
            central = blob.find(b"PK\x01\x02", central + 4)
    (tmp_path / "aes.npz").write_bytes(bytes(blob))
    return tmp_path


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test (instead of starting anything) if a case got past validation to a simulation or deployment."""
    import flwr.simulation

    from fedmoe.deploy.local import LocalCluster

    def refuse(*args, **kwargs):
        raise AssertionError("bad input got as far as starting a simulation or deployment")

    monkeypatch.setattr(flwr.simulation, "run_simulation", refuse)
    monkeypatch.setattr(LocalCluster, "start", refuse)


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root``: is it a folder, its size and its modification time."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def run_bad(argv: list[str], workdir: Path, capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """``fedmoe ARGV`` in this process: its exit status and stderr lines; asserts nothing was written."""
    capsys.readouterr()
    before = snapshot(workdir)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert snapshot(workdir) == before, f"{argv} wrote or changed files"
    return code, lines


def assert_one_line(argv: list[str], workdir: Path, capsys, fragments: list[str], status: int = 2) -> str:
    """``fedmoe ARGV`` fails with ``status`` and exactly one line ``fedmoe: error: ...`` holding every fragment."""
    code, lines = run_bad(argv, workdir, capsys)
    assert code == status, (argv, code, lines)
    assert len(lines) == 1 and lines[0].startswith("fedmoe: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_usage_error(argv: list[str], workdir: Path, capsys, fragments: list[str]) -> None:
    """``fedmoe ARGV`` is refused by argparse: status 2, its usage lines, then one ``error:`` line."""
    code, lines = run_bad(argv, workdir, capsys)
    assert code == 2, (argv, code, lines)
    assert lines[0].startswith("usage: fedmoe") and sum(": error: " in ln for ln in lines) == 1, lines
    assert lines[-1].startswith("fedmoe") and ": error: " in lines[-1], lines
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def sets(*assignments: str) -> list[str]:
    return [a for s in assignments for a in ("--set", s)]


# --------------------------------------------------------------------------- config values (--set)

SET_CASES = [
    # unknown keys
    (["data.num_sampels=5"], ["data.num_sampels", "unknown field"]),
    (["model.gates='topn'"], ["model.gates", "unknown field"]),
    (["train.epochs=3"], ["train.epochs", "unknown field"]),
    (["federated.faults.crash=0.1"], ["federated.faults.crash", "unknown field"]),
    (["wireless.channel.carier_ghz=28"], ["wireless.channel.carier_ghz", "unknown field"]),
    (["partition.devices=4"], ["partition.devices", "unknown field"]),
    (["split.links='ideal'"], ["split.links", "unknown field"]),
    (["v2i.agent.policies='ppo_mlp'"], ["v2i.agent.policies", "unknown field"]),
    (["nosuchsection.x=1"], ["nosuchsection", "unknown field"]),
    # wrong types
    (["data.num_samples='many'"], ["data.num_samples", "valid integer", "'many'"]),
    (["data.scene.static_site='maybe'"], ["data.scene.static_site", "valid boolean", "'maybe'"]),
    (["model.expert_dim=[32]"], ["model.expert_dim", "valid integer"]),
    (["train.lr='fast'"], ["train.lr", "valid number", "'fast'"]),
    (["federated.rounds=2.5"], ["federated.rounds", "2.5"]),
    (["federated.faults.seed='x'"], ["federated.faults.seed", "'x'"]),
    (["federated.aggregator_options={mu=[1]}"], ["federated.aggregator_options.mu", "float, int, bool, str"]),
    (["wireless.devices.tx_power_dbm=[1, 2, 3]"], ["wireless.devices.tx_power_dbm", "at most 2"]),
    (["partition.num_devices='ten'"], ["partition.num_devices", "'ten'"]),
    (["split.snr_db='loud'"], ["split.snr_db", "'loud'"]),
    (["v2i.beta='fast'"], ["v2i.beta", "'fast'"]),
    (["data=3"], ["data", "valid dictionary"]),
    # out of range
    (["data.num_samples=0"], ["data.num_samples", "> 0", "got 0"]),
    (["data.test_fraction=1"], ["data.test_fraction", "< 1"]),
    (["model.experts_per_modality=9"], ["model.experts_per_modality", "<= 3", "got 9"]),
    (["train.lr=-1"], ["train.lr", "> 0", "got -1"]),
    (["federated.rounds=0"], ["federated.rounds", ">= 1", "got 0"]),
    (["federated.stage1_rounds=100000"], ["stage1_rounds (100000) exceeds rounds"]),
    (["federated.faults.crash_rate=1.5"], ["federated.faults.crash_rate", "<= 1", "got 1.5"]),
    (["federated.faults.crash_rate=0.6", "federated.faults.hang_rate=0.6"], ["federated.faults", "exceeds 1"]),
    (["wireless.channel.carrier_ghz=500"], ["wireless.channel.carrier_ghz", "<= 100", "got 500"]),
    (["wireless.uplink.resource_block_hz=1e9"], ["wireless.uplink", "resource_block_hz"]),
    (["partition.dirichlet_alpha=0"], ["partition.dirichlet_alpha", "> 0"]),
    (["partition.modality_availability.camera=1.5"], ["modality_availability.camera", "[0, 1]"]),
    (["split.value_bits=0"], ["split.value_bits", ">= 1"]),
    (["v2i.gamma=2"], ["v2i.gamma", "<= 1", "got 2"]),
    (["v2i.beta=[0.1]"], ["v2i", "beta has 1 values"]),
    (["data.scene.uav_height_m=[60, 10]"], ["uav_height_m", "lower bound 60 exceeds upper bound 10"]),
    # values outside an enumeration
    (["wireless.channel.fading='nakagami'"], ["wireless.channel.fading", "'rayleigh'", "'nakagami'"]),
    (["wireless.channel.scenario='rma'"], ["wireless.channel.scenario", "'umi'", "'rma'"]),
    (["partition.label_skew='zipf'"], ["partition.label_skew", "'dirichlet'", "'zipf'"]),
    (["partition.quantity_skew='pareto'"], ["partition.quantity_skew", "'pareto'"]),
    (["model.modalities=['sonar']"], ["model.modalities.0", "'sonar'"]),
    (["train.lr_schedule='linear'"], ["train.lr_schedule", "'cosine'", "'linear'"]),
    (["federated.allocation='greedy'"], ["federated.allocation", "'min-latency'", "'greedy'"]),
    (["split.link='optical'"], ["split.link", "'analog'", "'optical'"]),
    (["distributed.dataset='mnist'"], ["distributed.dataset", "'mnist'"]),
    (["mode='centralised'"], ["mode", "'federated'", "'centralised'"]),
    # two problems: one line
    (["data.num_samples=0", "data.seed=-1"], ["data.num_samples", "got 0); ", "data.seed", "got -1"]),
    # --set itself
    (["novalue"], ["--set 'novalue'", "key.path=value"]),
    (["=3"], ["--set '=3'", "key.path=value"]),
    (["data..seed=3"], ["--set 'data..seed=3'", "empty part"]),
    (["data.seed=1", "data.seed.x=2"], ["data.seed.x", "data.seed is set to a value"]),
    (["data.seed.x=2", "data.seed=1"], ["data.seed", "conflicts"]),
]


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS))
@pytest.mark.parametrize(("settings", "fragments"), SET_CASES, ids=[" ".join(c[0]) for c in SET_CASES])
def test_bad_config_values(command, settings, fragments, workdir, capsys):
    assert_one_line([*CONFIG_COMMANDS[command], "--quiet", *sets(*settings)], workdir, capsys, fragments)


# --------------------------------------------------------------------------- scenarios (--scenario)

SCENARIO_CASES = [
    ("atlantis", ["unknown scenario 'atlantis'", "default"]),
    ("", ["empty scenario name"]),
    ("absent.toml", ["absent.toml", "no such config file"]),
    ("bad.toml", ["bad.toml", "not valid TOML", "line 1"]),
    ("latin1.toml", ["latin1.toml", "UTF-8"]),
    ("./file.txt", ["file.txt", "not valid TOML"]),
    ("file.txt", ["unknown scenario 'file.txt'", "ending in .toml", "./file.txt"]),
    ("value.toml", ["value.toml", "data.num_samples", "got -5"]),
    ("orphan.toml", ["orphan.toml", "extends", "absent.toml", "no such config file"]),
    ("unknown_base.toml", ["unknown_base.toml", "extends", "unknown scenario 'atlantis'"]),
    ("number_base.toml", ["number_base.toml", "'extends' must be a scenario name or path"]),
    ("cycle_a.toml", ["cycle", "cycle_a.toml -> cycle_b.toml -> cycle_a.toml"]),
    ("dir.toml", ["dir.toml", "is a folder"]),
    ("./folder", ["folder", "is a folder"]),
    ("folder", ["unknown scenario 'folder'"]),
    ("folder/", ["folder", "is a folder"]),
]


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS))
@pytest.mark.parametrize(("scenario", "fragments"), SCENARIO_CASES, ids=[c[0] or "empty" for c in SCENARIO_CASES])
def test_bad_scenarios(command, scenario, fragments, workdir, capsys):
    assert_one_line([*CONFIG_COMMANDS[command], "--quiet", "--scenario", scenario], workdir, capsys, fragments)


# --------------------------------------------------------------------------- registered names and run checks

NAME_CASES = [
    (["train"], ["model.gate='sparse'"], ["model.gate", "unknown gate 'sparse'", "gumbel_hard"]),
    (["train"], ["model.gate_backbone='rnn'"], ["model.gate_backbone", "unknown gate backbone 'rnn'", "mlp"]),
    (["sweep", "--lambdas", "0,1"], ["model.gate='sparse'"], ["model.gate", "unknown gate 'sparse'"]),
    (["run"], ["model.gate='sparse'"], ["model.gate", "unknown gate 'sparse'"]),
    (["run"], ["model.gate='channel_aware'"], ["model.gate", "link quality", 'mode = "distributed"']),
    (["train"], ["model.gate='channel_aware'"], ["model.gate", "link quality", 'mode = "distributed"']),
    (["run"], ["federated.strategy='fedsgd'"], ["federated.strategy", "unknown strategy 'fedsgd'", "expert_wise"]),
    (["run"], ["federated.aggregator='fedfancy'"], ["federated.aggregator", "unknown aggregator 'fedfancy'"]),
    (["run"], ["federated.selection='best'"], ["federated.selection", "unknown selection policy 'best'"]),
    (["run"], ["federated.aggregator_options={bogus=1}"], ["federated.aggregator_options", "bogus"]),
    (["run"], ["federated.clients_per_round=11"], ["federated.clients_per_round=11", "partition.num_devices=10"]),
    (["run"], ["mode='split'", "model.gate='sparse'"], ["model.gate", "unknown gate 'sparse'"]),
    (["run"], ["mode='split'", "split.link='digital'", "split.link_options={bitz=3}"], ["split.link_options", "bitz"]),
    (["run"], ["mode='distributed'", "distributed.link_options={bitz=3}"], ["distributed.link_options", "bitz"]),
    (["run"], ["mode='v2i'", "partition.num_devices=3", "v2i.agent.policy='random'"],
     ["v2i.agent.policy", "unknown V2I agent 'random'"]),
    (["run"], ["mode='v2i'"], ["mode v2i", "partition.num_devices=10"]),
    (["deploy", "local"], ["model.gate='sparse'"], ["model.gate", "unknown gate 'sparse'"]),
    (["deploy", "local"], ["federated.strategy='fedsgd'"], ["federated.strategy", "unknown strategy 'fedsgd'"]),
    (["run"], ["wireless.trace.path='nope.csv'"], ["nope.csv: no such trace file"]),
    (["run"], ["wireless.trace.path='nope'", "wireless.trace.format='csv'"],
     ["wireless.trace.format", "unknown channel trace format 'csv'", "deepsense, fedmoe"]),
    (["run"], ["wireless.trace.path='nope'", "wireless.trace.format='deepsense'"],
     ["nope: no such DeepSense scenario folder"]),
    (["run"], ["mode='split'", "wireless.trace.path='t.csv'"], ["wireless.trace", "mode federated only", "split"]),
]


@pytest.mark.parametrize(("command", "settings", "fragments"), NAME_CASES,
                         ids=[f"{c[0][0]} {' '.join(c[1])}" for c in NAME_CASES])
def test_unknown_names_and_run_checks_fail_before_anything_starts(command, settings, fragments, workdir, capsys):
    assert_one_line([*command, "--quiet", *sets(*settings)], workdir, capsys, fragments)


MEMORY_CASES = [  # every command that generates data, asked for more samples than memory holds (10^7 ≈ 155 GB)
    (["run"], ["partition.samples_per_device=10000000"], ["partition.samples_per_device=10000000"]),
    (["run"], ["mode='split'", "partition.samples_per_device=10000000"], ["partition.samples_per_device=10000000"]),
    (["run"], ["partition.num_devices=100", "partition.samples_per_device=100000"], ["the centralised reference"]),
    (["deploy", "local"], ["partition.samples_per_device=10000000"], ["partition.samples_per_device=10000000"]),
    (["data", "make", "--out", "x.npz", "--num-samples", "10000000"], [], ["--num-samples=10000000"]),
    (["data", "stats"], ["data.num_samples=10000000"], ["data.num_samples=10000000"]),
    (["train"], ["data.num_samples=10000000"], ["data.num_samples=10000000"]),
    (["sweep", "--num-samples", "10000000"], [], ["--num-samples=10000000"]),
]


@pytest.mark.timeout(30)  # without the check a case starts generating 155 GB: fail soon instead of swapping
@pytest.mark.parametrize(("command", "settings", "fragments"), MEMORY_CASES,
                         ids=[f"{' '.join(c[0][:2])} {' '.join(c[1])}" for c in MEMORY_CASES])
def test_more_data_than_memory_is_refused_before_anything_starts(command, settings, fragments, workdir, capsys):
    """Issue 18, finding 7: 10^7 samples per device (about 75 GB of data) started anyway. The data a
    command generates at once is estimated (bytes of a sample × samples) and refused when it exceeds
    the memory available."""
    from fedmoe.memory import available_bytes

    if (available_bytes() or 0) > 200e9:
        pytest.skip("this machine has more than 200 GB available: 10^7 samples would fit")
    assert_one_line([*command, "--quiet", *sets(*settings)], workdir, capsys,
                    [*fragments, "needs about", "of memory, more than the", "available"])


# --------------------------------------------------------------------------- output paths (--out)

OUT_CASES = [
    (["demo", "--epochs", "0", "--out", "file.txt"], ["--out file.txt", "exists and is not a folder"]),
    (["data", "stats", "--out", "file.txt"], ["--out file.txt", "exists and is not a folder"]),
    (["data", "stats", "--out", "file.txt/stats"], ["--out file.txt/stats", "file.txt is not a folder"]),
    (["data", "stats", "--input", "absent.npz", "--out", "file.txt"], ["--out file.txt"]),
    (["data", "make", "--out", "taken.npz"], ["--out taken.npz", "is a folder"]),
    (["data", "make", "--out", "file.txt/data.npz"], ["--out file.txt/data.npz", "file.txt is not a folder"]),
    (["train", "--out", "file.txt"], ["--out file.txt", "exists and is not a folder"]),
    (["train", "--out", "file.txt/a/b"], ["--out file.txt/a/b", "file.txt is not a folder"]),
    (["sweep", "--out", "file.txt"], ["--out file.txt", "exists and is not a folder"]),
    (["run", "--out", "file.txt"], ["--out file.txt", "exists and is not a folder"]),
    (["run", "--out", "file.txt/run"], ["--out file.txt/run", "file.txt is not a folder"]),
    (["deploy", "certs", "--out", "file.txt"], ["file.txt", "not a folder"]),
    (["deploy", "certs", "--out", "file.txt/pki"], ["--out file.txt/pki", "file.txt is not a folder"]),
    (["deploy", "node-key", "--out", "folder"], ["--out folder", "is a folder"]),
    (["deploy", "node-key", "--out", "file.txt/node.key"], ["--out file.txt/node.key", "file.txt is not a folder"]),
    (["deploy", "local", "--out", "file.txt"], ["--out file.txt", "exists and is not a folder"]),
    (["deploy", "local", "--out", "file.txt/deploy"], ["--out file.txt/deploy", "file.txt is not a folder"]),
]


@pytest.mark.parametrize(("argv", "fragments"), OUT_CASES, ids=[" ".join(c[0]) for c in OUT_CASES])
def test_bad_output_paths(argv, fragments, workdir, capsys):
    assert_one_line(argv, workdir, capsys, fragments)


# --------------------------------------------------------------------------- input files (--input)

INPUT_CASES = [
    ("absent.npz", ["absent.npz", "no such dataset file"]),
    ("folder", ["folder", "is a folder"]),
    ("notes.npz", ["notes.npz", "not a fedmoe dataset file"]),
    ("empty.npz", ["empty.npz", "not a fedmoe dataset file"]),
    ("zipish.npz", ["zipish.npz", "not a fedmoe dataset file"]),
    ("foreign.npz", ["foreign.npz", "not a fedmoe dataset file", "bits/names"]),
    ("extra.npz", ["extra.npz", "not a fedmoe dataset file", "unexpected array 'inputs/sonar'"]),
    ("rows.npz", ["rows.npz", "labels/beam has 11 rows, the file has 10 samples"]),
    ("strings.npz", ["strings.npz", "labels/beam has dtype <U8"]),
    ("present.npz", ["present.npz", "present is float32[10, 5]"]),
    ("lying.npz", ["lying.npz", "inputs/radar declares (1000000000, 2, 16, 16)", "its member holds"]),
    ("objects.npz", ["objects.npz", "bits/names holds Python objects"]),
    ("aes.npz", ["aes.npz", "not a readable .npz archive", "NotImplementedError"]),
]


@pytest.mark.parametrize(("path", "fragments"), INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_bad_input_files(path, fragments, workdir, capsys):
    assert_one_line(["data", "stats", "--input", path, "--epochs", "0", "--quiet"], workdir, capsys, fragments)


def test_a_small_archive_that_inflates_is_refused_from_its_headers(workdir, capsys):
    """Issue 18, finding 7: a 1 MB compressed .npz grew to 1.4 GB before ``--input`` noticed it was not a
    dataset. Keys and sizes are now checked from the headers, before any member is decompressed."""
    import tracemalloc

    members = {**VALID_DATASET, "inputs/camera": ("uint8", (100_000, 3, 32, 32))}  # 300 MiB of zeros, rows != 10
    crafted_dataset(workdir / "bomb.npz", members)
    assert (workdir / "bomb.npz").stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        assert_one_line(["data", "stats", "--input", "bomb.npz", "--epochs", "0", "--quiet"], workdir, capsys,
                        ["bomb.npz", "not a fedmoe dataset file", "inputs/camera", "100000 rows", "10 samples"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"{peak / 1e6:.0f} MB allocated while refusing the archive"


# --------------------------------------------------------------------------- options

USAGE_CASES = [  # refused by argparse (an option's type or value): usage lines and one error line
    (["data", "make", "--out", "x.npz", "--num-samples", "0"], ["--num-samples", ">= 1", "got 0"]),
    (["data", "make", "--out", "x.npz", "--num-samples", "-3"], ["--num-samples", "got -3"]),
    (["data", "make", "--out", "x.npz", "--num-samples", "many"], ["--num-samples", "'many'"]),
    (["train", "--seed", "-1"], ["--seed", ">= 0", "got -1"]),
    (["demo", "--epochs", "-1"], ["--epochs", ">= 0", "got -1"]),
    (["data", "stats", "--epochs", "-2"], ["--epochs", "got -2"]),
    (["sweep", "--num-samples", "0"], ["--num-samples", "got 0"]),
    (["sweep", "--lambdas", "a,b"], ["--lambdas", "'a,b'"]),
    (["sweep", "--lambdas", "-1"], ["--lambdas", "'-1'"]),
    (["sweep", "--lambdas", ""], ["--lambdas", "''"]),
    (["sweep", "--lambdas", "1,nan"], ["--lambdas", "'1,nan'"]),
    (["sweep", "--lambdas", "inf"], ["--lambdas", "'inf'"]),
    (["deploy", "certs", "--out", "pki", "--nodes", "two"], ["--nodes", "'two'"]),
    (["deploy", "certs", "--out", "pki", "--days", "soon"], ["--days", "'soon'"]),
    (["deploy", "local", "--timeout", "later"], ["--timeout", "'later'"]),
    (["data", "make"], ["--out"]),
    (["scenarios", "--set", "x=1"], ["unrecognized arguments"]),
    (["federate"], ["invalid choice", "'federate'"]),
    (["run", "--resume", "--force"], ["--force", "not allowed with argument --resume"]),
]


@pytest.mark.parametrize(("argv", "fragments"), USAGE_CASES, ids=[" ".join(c[0]) or "none" for c in USAGE_CASES])
def test_bad_options_refused_by_argparse(argv, fragments, workdir, capsys):
    assert_usage_error(argv, workdir, capsys, fragments)


OPTION_CASES = [  # refused by our code: one line
    (["run", "--ray-address", "garbage"], ["--ray-address 'garbage'", "HOST:PORT"]),
    (["run", "--ray-address", "head:99999"], ["--ray-address 'head:99999'", "HOST:PORT"]),
    (["run", "--ray-address", "head:port"], ["--ray-address 'head:port'"]),
    (["run", "--resume"], ["nothing to resume in runs/run"]),
    (["run", "--out", "earlier"], ["--out earlier: not empty (checkpoints, notes.txt)", "--resume", "--force"]),
    (["run", "--resume", "--out", "folder"], ["nothing to resume in folder"]),
    (["run", "--resume", "--set", "mode='split'"], ["resume", "mode 'federated' only"]),
    (["deploy", "certs", "--out", "pki", "--nodes", "-1"], ["--nodes", "-1"]),
    (["deploy", "certs", "--out", "pki", "--days", "0"], ["--days", "got 0"]),
    (["deploy", "certs", "--out", "pki", "--days", "5000"], ["--days", "got 5000"]),
    (["deploy", "certs", "--out", "pki", "--hosts", "bad host"], ["--hosts", "'bad host'"]),
    (["deploy", "certs", "--out", "pki", "--hosts", ","], ["--hosts", "at least one"]),
    (["deploy", "certs", "--out", "pki", "--hosts", "a.example,a.example"], ["--hosts", "duplicate"]),
    (["deploy", "node-key", "--out", "node.pub"], ["node.pub", "private key"]),
    (["deploy", "local", "--nodes", "3"], ["--nodes 3", "partition.num_devices=10"]),
    (["deploy", "local", "--nodes", "0"], ["--nodes: expected at least 1, got 0"]),
    (["deploy", "local", "--nodes", "0", "--set", "partition.num_devices=0"], ["partition.num_devices", "got 0"]),
    (["deploy", "local", "--nodes", "4", "--set", "partition.num_devices=5"], ["--nodes 4", "partition.num_devices=5"]),
    (["deploy", "local", "--timeout", "0"], ["--timeout", "got 0"]),
    (["deploy", "local", "--app", "folder"], ["folder", "no pyproject.toml"]),
    (["deploy", "local", "--set", "data.seed=1;x=2"], ["--set", "';'"]),
]


@pytest.mark.parametrize(("argv", "fragments"), OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_bad_options(argv, fragments, workdir, capsys):
    assert_one_line(argv, workdir, capsys, fragments)


def test_an_unreachable_ray_cluster_is_a_runtime_failure(workdir, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_one_line(["run", "--quiet", "--ray-address", f"127.0.0.1:{port}"], workdir, capsys,
                    [f"Ray cluster at 127.0.0.1:{port}", "nothing answers there"], status=1)


def test_a_failing_command_removes_the_folder_it_made(workdir, capsys, monkeypatch):
    """A failure after the checks (here: while writing the report) leaves no half-written --out."""
    import fedmoe.data.plots

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fedmoe.data.plots, "plot_examples", broken)
    assert_one_line(["data", "stats", "--out", "new/stats", "--num-samples", "20", "--epochs", "0", "--quiet"],
                    workdir, capsys, ["disk full"], status=1)
    assert not (workdir / "new").exists()


# --------------------------------------------------------------------------- the `flwr run` run config

RUN_CONFIG_CASES = [
    ({"scenario": "atlantis"}, ["scenario", "unknown scenario 'atlantis'"]),
    ({"scenario": "absent.toml"}, ["scenario", "absent.toml", "no such config file"]),
    ({"scenario": "bad.toml"}, ["bad.toml", "not valid TOML"]),
    ({"scenario": 3}, ["scenario=3", "expected a string"]),
    ({"overrides": "data.seed=1;novalue"}, ["overrides", "'novalue'", "key.path=value"]),
    ({"overrides": "data..seed=1"}, ["overrides", "empty part"]),
    ({"overrides": "data.num_samples=0"}, ["data.num_samples", "got 0"]),
    ({"overrides": "data.num_sampels=10"}, ["data.num_sampels", "unknown field"]),
    ({"overrides": "wireless.channel.fading='nakagami'"}, ["wireless.channel.fading", "'nakagami'"]),
    ({"overrides": "federated.aggregator_options={mu=[1]}"}, ["federated.aggregator_options.mu"]),
    ({"overrides": 5}, ["overrides=5", "expected a string"]),
    ({"resume": "yes"}, ["resume='yes'", "true or false"]),
    ({"resume": 1}, ["resume=1", "true or false"]),
    ({"run-dir": ""}, ["run-dir", "expected the run folder"]),
    ({"run-dir": "   "}, ["run-dir", "expected the run folder"]),
    ({"run-dir": 7}, ["run-dir=7", "expected a string"]),
    ({"run-dir": "file.txt"}, ["run-dir", "file.txt", "exists and is not a folder"]),
    ({"run-dir": "file.txt/run"}, ["run-dir", "file.txt is not a folder"]),
    ({"run-dir": "earlier"}, ["run config run-dir earlier: not empty", "--force"]),
    ({"force": "yes"}, ["force='yes'", "true or false"]),
    ({"resume": True, "force": True}, ["resume=true and force=true exclude each other"]),
    ({"overrides": "wireless.trace.path='t.csv'"}, ["wireless.trace.path='t.csv' is relative", "absolute path"]),
    ({"overrides": "data.input='~/d.npz'"}, ["data.input='~/d.npz' is relative"]),
    ({"overrides": "federated.dynamics.availability={model='trace', path='a.csv'}"},
     ["federated.dynamics.availability.path='a.csv' is relative"]),
]


@pytest.mark.parametrize(("run_config", "fragments"), RUN_CONFIG_CASES, ids=[repr(c[0]) for c in RUN_CONFIG_CASES])
def test_bad_run_config(run_config, fragments, workdir):
    from fedmoe.strategies.server_app import config_from_run_config

    before = snapshot(workdir)
    with pytest.raises(ValueError) as err:
        config_from_run_config(run_config)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert snapshot(workdir) == before


def test_run_config_defaults_and_values(workdir):
    from fedmoe.strategies.server_app import config_from_run_config

    rc = config_from_run_config({})
    assert ((rc.cfg.name, rc.run_dir, rc.resume, rc.scenario_file.name)
            == ("default", Path("runs/flwr"), False, "default.toml"))
    rc = config_from_run_config({"scenario": "split",
                                 "overrides": " partition.num_devices=4 ; federated.clients_per_round=4 ;",
                                 "run-dir": "runs/x", "resume": True})
    assert (rc.cfg.mode, rc.cfg.partition.num_devices, rc.cfg.federated.clients_per_round) == ("split", 4, 4)
    assert (rc.run_dir, rc.resume) == (Path("runs/x"), True)
    assert not (workdir / "runs").exists()  # checked, not made


# --------------------------------------------------------------------------- a SuperNode's node config

def node_context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=dict(node_config), state=RecordDict(), run_config={})


DEVICE_ID_CASES = [
    ({}, ["lacks 'partition-id'", "--node-config"]),
    ({"partition-id": "abc"}, ["partition-id='abc'", "expected an integer"]),
    ({"partition-id": 1.5}, ["partition-id=1.5", "expected an integer"]),
    ({"partition-id": True}, ["partition-id=True", "expected an integer"]),
    ({"partition-id": -1}, ["partition-id -1 is outside [0, 4)"]),
    ({"partition-id": 4}, ["partition-id 4 is outside [0, 4)"]),
    ({"partition-id": "7"}, ["partition-id 7 is outside [0, 4)"]),
    ({"partition-id": 0, "num-partitions": 3}, ["num-partitions=3", "partition.num_devices=4"]),
    ({"partition-id": 0, "num-partitions": "four"}, ["num-partitions='four'", "expected an integer"]),
]


@pytest.mark.parametrize(("node_config", "fragments"), DEVICE_ID_CASES, ids=[repr(c[0]) for c in DEVICE_ID_CASES])
def test_bad_partition_id(node_config, fragments):
    from fedmoe.clients.common import device_id

    with pytest.raises(ValueError) as err:
        device_id(node_context(node_config), 4)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_good_partition_ids():
    from fedmoe.clients.common import device_id

    for node_config, expected in [({"partition-id": 2}, 2), ({"partition-id": "2", "num-partitions": "4"}, 2),
                                  ({"partition-id": 3.0, "num-partitions": 4}, 3), ({"partition-id": 0}, 0)]:
        assert device_id(node_context(node_config), 4) == expected


STATE_DIR_CASES = [
    ({"state-dir": "file.txt"}, {}, ["node config state-dir file.txt", "exists and is not a folder"]),
    ({"state-dir": "file.txt/state"}, {}, ["node config state-dir file.txt/state", "file.txt is not a folder"]),
    ({}, {"client-state-dir": "file.txt"}, ["message config client-state-dir file.txt", "not a folder"]),
    ({"state-dir": "file.txt"}, {"client-state-dir": "folder"}, ["node config state-dir"]),
]


@pytest.mark.parametrize(("node_config", "message_config", "fragments"), STATE_DIR_CASES,
                         ids=[repr(c[:2]) for c in STATE_DIR_CASES])
def test_bad_state_dir(node_config, message_config, fragments, workdir):
    from fedmoe.federated.device_state import state_folder

    before = snapshot(workdir)
    with pytest.raises(ValueError) as err:
        state_folder(node_config, message_config)
    assert len(str(err.value).splitlines()) == 1
    for fragment in fragments:
        assert fragment in str(err.value)
    assert snapshot(workdir) == before


def test_good_state_dirs(workdir):
    from fedmoe.federated.device_state import state_folder

    assert state_folder({"state-dir": "folder"}, {}) == Path("folder")
    assert state_folder({"state-dir": "new/state"}, {"client-state-dir": "file.txt"}) == Path("new/state")
    assert not (workdir / "new").exists()  # made when the device first saves its state


def test_a_bad_state_dir_fails_the_device_before_training_in_one_line(workdir, monkeypatch):
    """The ServerApp records the SuperNode's error (as a SuperNode reports it) as one line naming
    ``state-dir``; the device never trained; the other devices' round goes on."""
    import fedmoe.federated.local as local
    from fedmoe.federated.parameters import to_numpy
    from fedmoe.federated.world import world_for
    from fedmoe.flower import to_record
    from fedmoe.strategies import ExpertWise
    from tests.federated.conftest import LocalGrid, tiny_config

    trained = []
    real = local.local_update

    def recording(world, pid, *args, **kwargs):
        trained.append(pid)
        return real(world, pid, *args, **kwargs)

    monkeypatch.setattr(local, "local_update", recording)
    world = world_for(tiny_config(federated={"rounds": 1, "stage1_rounds": 1}))
    grid = LocalGrid(4)
    grid.contexts[2].node_config["state-dir"] = str(workdir / "file.txt")  # node 2 is device 1
    strategy = ExpertWise(world)
    strategy.start(grid, to_record(to_numpy(world.template.state_dict())), num_rounds=1)
    record = strategy.history[0]
    assert record.failed == 1 and sorted(trained) == [0, 2, 3]
    assert record.failures == [f"device 1 (node 2): node config state-dir {workdir / 'file.txt'}: "
                               "exists and is not a folder"]


def test_a_bad_partition_id_fails_the_device_query_in_one_line():
    from fedmoe.federated.world import config_json
    from fedmoe.strategies.expert_wise import discover_devices
    from tests.federated.conftest import LocalGrid, tiny_config

    grid = LocalGrid(4)
    grid.contexts[3].node_config["partition-id"] = "two"
    with pytest.raises(RuntimeError) as err:
        discover_devices(grid, 4, config_json(tiny_config()))
    assert str(err.value) == "node 3 failed the device query: node config partition-id='two': expected an integer"


@pytest.mark.parametrize("error", [ValueError("node config partition-id 9 is outside [0, 4)"),
                                   ConfigError("scenario from the server: data.seed: got 'x'")])
def test_error_replies_shorten_to_the_message(error):
    """Both forms in which Flower reports a ClientApp's exception to the ServerApp."""
    from fedmoe.strategies.expert_wise import short_reason

    supernode = str(type(error)) + ":<'" + str(error) + "'>"  # flwr.supernode.runtime.run_clientapp
    ray = (f"<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<ray::ClientAppActor.run()\n"
           f"  File \"fedmoe/clients/app.py\", line 9, in train\nflwr.clientapp.client_app.ClientAppException: \n"
           f"Exception ClientAppException occurred. Message: {error}'>")
    assert short_reason(supernode) == short_reason(ray) == str(error)
