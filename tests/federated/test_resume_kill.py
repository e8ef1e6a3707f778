"""The real thing: ``fedmoe run`` on Flower's Ray backend killed with SIGKILL mid-way, then
``fedmoe run --resume``, ends with the same final model as an uninterrupted run.

Every process is started through :class:`fedmoe.deploy.processes.ProcessSet` and stopped by
PID afterwards, the Ray processes the killed run left behind included.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmoe.deploy.processes import ProcessSet
from fedmoe.federated.resume import resume_path

pytestmark = pytest.mark.slow

SETS = ["partition.num_devices=4", "partition.samples_per_device=48", "model.experts_per_modality=1",
        "model.head_hidden=32", "train.batch_size=32", "federated.rounds=6", "federated.stage1_rounds=2",
        "federated.selection='random'", "federated.clients_per_round=3", "federated.test_samples=64",
        "federated.deadline_s=1000.0", "federated.aggregator='fedavgm'",
        "federated.aggregator_options.server_momentum=0.9", "federated.local_keys=['heads.trunk.*']"]
RUN_TIMEOUT_S = 240.0


def fedmoe_run(out: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "fedmoe.cli", "run", "--out", str(out), "--quiet"] + list(extra)
    return argv + [a for s in SETS for a in ("--set", s)]


def saved_round(run_dir: Path) -> int:
    """The round of the state saved in ``run_dir`` (its JSON document alone), 0 before the first."""
    try:
        with np.load(resume_path(run_dir), allow_pickle=False) as z:
            return int(json.loads(z["state"].tobytes())["round"])
    except (OSError, KeyError, ValueError):
        return 0


def final_state(run_dir: Path) -> dict[str, np.ndarray]:
    saved = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    return {k: v.numpy() for k, v in saved["state_dict"].items()}


def rounds_without_wall(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["rounds"]


def test_sigkilled_run_resumes_to_the_same_final_model(tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    with ProcessSet(tmp_path / "logs") as procs:
        ref = procs.start("reference", fedmoe_run(reference))
        assert ref.wait(RUN_TIMEOUT_S) == 0, ref.log_tail()

        victim = procs.start("crashed", fedmoe_run(crashed))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while saved_round(crashed) < 2:
            assert victim.returncode() is None, f"the run ended before it could be killed:\n{victim.log_tail()}"
            assert time.monotonic() < deadline, "no round saved in time"
            time.sleep(0.05)
        victim.popen.kill()  # SIGKILL: no clean-up of any kind
        assert victim.wait(30) == -9
        stopped_at = saved_round(crashed)
        assert 2 <= stopped_at < 6
        assert not (crashed / "checkpoints" / "final.pt").exists()
        # rounds.csv held the complete rounds (the last one's rows may not have been appended yet when killed)
        killed_rows = [line.split(",", 1)[0] for line in (crashed / "rounds.csv").read_text().splitlines()[1:]]
        assert killed_rows in ([str(r) for r in range(stopped_at)], [str(r) for r in range(stopped_at + 1)])
        leftovers = procs.stop()  # the Ray processes the killed driver left behind, by PID

        resumed = procs.start("resumed", fedmoe_run(crashed, "--resume"))
        assert resumed.wait(RUN_TIMEOUT_S) == 0, resumed.log_tail()

    a, b = final_state(reference), final_state(crashed)
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert different == [], f"{len(different)} arrays differ, e.g. {different[:3]}"
    doc = json.loads((crashed / "metrics.json").read_text())
    assert doc["resumed_after_round"] == stopped_at
    ref_rows, rows = rounds_without_wall(reference), rounds_without_wall(crashed)
    assert [r["accuracy"] for r in rows if "accuracy" in r] == [r["accuracy"] for r in ref_rows if "accuracy" in r]
    assert rows[-1]["clock_s"] == ref_rows[-1]["clock_s"]
    for name in ("rounds.csv", "devices.csv"):  # no row lost or written twice by the kill and the resume
        assert (crashed / name).read_text() == (reference / name).read_text(), name
    print(f"killed after round {stopped_at}; Ray leftovers stopped: {leftovers}")
