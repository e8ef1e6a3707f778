"""Run files an operator watches (fedmoe.federated.live_log): rounds.csv and devices.csv grow by one round at a
time while the real ServerApp loop runs; TensorBoard gets one scalar per round and metric; a resumed run neither
duplicates nor loses a row or a scalar."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedmoe.federated.live_log import TensorBoardMissing, check_tensorboard, scalars
from fedmoe.federated.report import CSV_COLUMNS
from fedmoe.strategies.server_app import serve
from tests.federated.conftest import WATCHED, LocalGrid, read_csv, tiny_config


class Stop(Exception):
    """Stands for the server process dying in the middle of a round."""


def run(run_dir: Path, **kw):
    return serve(LocalGrid(4), tiny_config(**WATCHED), run_dir, client_state_dir=run_dir / "client_state", **kw)


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value), …]`` as TensorBoard itself reads the event files of ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_rows_are_written_round_by_round(watched_run):
    out, result, seen = watched_run
    rows = result.metrics["rounds"]
    # while round 1 ran nothing was complete; while round 2 ran, round 0 (initial model) and round 1 were there
    assert [r["round"] for r in seen[1][0]] == []
    assert [r["round"] for r in seen[2][0]] == ["0", "1"]
    assert [int(r["device"]) for r in seen[2][1]] == rows[1]["devices"]
    final = read_csv(out / "rounds.csv")
    assert [int(r["round"]) for r in final] == [0, 1, 2]
    assert final[:2] == seen[2][0]  # rows once written are never rewritten
    for got, row in zip(final, rows):
        for key in ("stage", "selected", "completed", "energy_j", "clock_s", "accuracy"):
            if key in row:
                assert float(got[key]) == pytest.approx(row[key], rel=1e-12), key
    assert list(final[0]) == list(CSV_COLUMNS)


def test_device_rows_add_up_to_the_round(watched_run):
    out, result, _ = watched_run
    devices = read_csv(out / "devices.csv")
    for row in result.metrics["rounds"][1:]:
        mine = [d for d in devices if int(d["round"]) == row["round"]]
        assert sorted(int(d["device"]) for d in mine) == row["devices"]
        # a synchronous round costs the sum of the devices' energies and lasts as long as the slowest one
        assert sum(float(d["energy_j"]) for d in mine) == pytest.approx(row["energy_j"], rel=1e-9)
        assert max(float(d["latency_s"]) for d in mine) == pytest.approx(row["latency_s"], rel=1e-9)
        assert sum(float(d["upload_bits"]) for d in mine) == pytest.approx(row["upload_bits"], rel=1e-9)
        assert {d["link_class"] for d in mine} <= {"weak", "medium", "strong"}


def test_tensorboard_has_one_scalar_per_round_and_metric(watched_run):
    out, result, _ = watched_run
    got = tensorboard_scalars(out / "tensorboard")
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in result.metrics["rounds"]:
        for key, value in scalars(row).items():
            expected.setdefault(f"round/{key}", []).append((row["round"], value))
    assert set(got) == set(expected)
    assert {"round/accuracy", "round/energy_j", "round/clock_s", "round/selected"} <= set(got)
    for tag, points in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in points], rtol=1e-6, err_msg=tag)


def test_a_resumed_run_neither_duplicates_nor_loses_rows(watched_run, tmp_path):
    out = watched_run[0]

    def stop(record) -> None:
        if record.round == 2:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, on_round=stop)
    assert [r["round"] for r in read_csv(tmp_path / "rounds.csv")] == ["0", "1"]
    # what a stopped run may have written after the state it saved: a row of round 2 (here a copy of round 1's),
    # its devices, and a TensorBoard scalar of round 2
    for name in ("rounds.csv", "devices.csv"):
        lines = (tmp_path / name).read_text().splitlines(keepends=True)
        (tmp_path / name).write_text("".join(lines) + lines[-1].replace("1,", "2,", 1))
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tensorboard")) as writer:
        writer.add_scalar("round/energy_j", -1.0, global_step=2)
    during = []
    resumed = serve(LocalGrid(4), tiny_config(**WATCHED), tmp_path, resume=True,
                    client_state_dir=tmp_path / "client_state",
                    on_round=lambda record: during.append((tmp_path / "rounds.csv").read_text()))
    assert resumed.metrics["resumed_after_round"] == 1
    reference = (out / "rounds.csv").read_text().splitlines(keepends=True)
    assert during == ["".join(reference[:3])]  # while round 2 ran again: header, rounds 0 and 1, nothing else
    # the same files, byte for byte, as the run that was never stopped
    assert (tmp_path / "rounds.csv").read_text() == (out / "rounds.csv").read_text()
    assert (tmp_path / "devices.csv").read_text() == (out / "devices.csv").read_text()
    got, ref = tensorboard_scalars(tmp_path / "tensorboard"), tensorboard_scalars(out / "tensorboard")
    assert set(got) == set(ref)
    for tag in ref:
        assert [s for s, _ in got[tag]] == [s for s, _ in ref[tag]], tag
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in ref[tag]], rtol=1e-6, err_msg=tag)


def test_missing_tensorboard_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(TensorBoardMissing, match=r"pip install .*fedmoe\[tensorboard\]"):
        check_tensorboard(True)
    check_tensorboard(False)  # not asked for: nothing needed
    from fedmoe.cli import main

    code = main(["run", "--out", str(tmp_path / "run"), "--quiet", "--set", "report.tensorboard=true"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "report.tensorboard=true needs the tensorboard package" in err
    assert not (tmp_path / "run").exists()  # refused before anything started
