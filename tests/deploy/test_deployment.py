"""A real deployment on 127.0.0.1: a SuperLink with TLS and SuperNode authentication, three
authenticated SuperNodes (one per device), and `flwr run` of this project for two rounds of the
default scenario shrunk to three devices, whose rounds equal those of the same apps called in
this process. A SuperNode with an unregistered key and a plaintext SuperNode are refused. Every
process the test started is stopped by PID, also when a test fails (the fixture's finaliser).

Marked ``deploy`` (``make test-deploy``): about 4 minutes on two cores shared with other jobs; the
timings land in ``<tmp>/deployment0/timings.json`` and on stdout (``pytest -s``).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time

import psutil
import pytest

from fedmoe.config import dotted_to_nested
from fedmoe.deploy.local import LocalCluster
from fedmoe.deploy.pki import write_supernode_key
from fedmoe.deploy.processes import free_port
from fedmoe.overrides import parse_assignment

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1200)]

NODES = 3
SCENARIO = "default"
SHRUNK = [  # the default scenario, 3 devices, 2 rounds (one per stage), small data and model, nobody left out
    f"partition.num_devices={NODES}", "federated.clients_per_round=3", "federated.rounds=2",
    "federated.stage1_rounds=1", "federated.deadline_s=1000.0", "partition.samples_per_device=48",
    "federated.test_samples=500", "model.experts_per_modality=1", "model.head_hidden=32", "train.batch_size=32",
    "federated.local_keys=['heads.trunk.*']",  # state every device keeps in its state-dir, whatever the gate's training
]
ACTIVATED = re.compile(r'"POST /v1/fleet/activate-node HTTP/1.1" 200')


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    t0 = time.perf_counter()
    c = LocalCluster(tmp_path_factory.mktemp("deployment"), NODES, echo=print, stream=False)
    try:
        c.start()
        c.startup_s = time.perf_counter() - t0
        yield c
    finally:
        c.stop()
        left = c.procs.members()
        assert not left, f"processes left running: {[p.pid for p in left]}"


def _wait_exit(proc, timeout: float) -> int:
    rc = proc.wait(timeout)
    assert rc is not None, f"{proc.name} still running after {timeout:.0f} s:\n{proc.log_tail()}"
    return rc


def test_supernode_with_an_unregistered_key_is_refused(cluster, tmp_path):
    key, _ = write_supernode_key(tmp_path / "rogue.key")  # valid key, never registered
    rogue = cluster.start_supernode(0, free_port(), name="rogue", private_key=key)
    rc = _wait_exit(rogue, 60)
    log = rogue.log_text()
    assert rc != 0 and "Failed to activate SuperNode" in log and "SuperNode ID" not in log, log
    assert "ApiError:2004" in cluster.superlink.log_text()


def test_plaintext_supernode_is_refused(cluster):
    plain = cluster.start_supernode(0, free_port(), name="plaintext", ca_cert=None, insecure=True, max_wait_s=8)
    rc = _wait_exit(plain, 90)
    log = plain.log_text()
    assert rc != 0 and "Giving up reconnection" in log and "SuperNode ID" not in log, log


def test_two_rounds_of_the_default_scenario_run_to_completion(cluster):
    seen, done = [], threading.Event()

    def watch() -> None:  # an operator reading rounds.csv while the deployed run goes
        while not done.wait(0.2):
            path = cluster.out / "run" / "rounds.csv"
            if path.is_file():
                rounds = [line.split(",", 1)[0] for line in path.read_text().splitlines()[1:]]
                if not seen or seen[-1] != rounds:
                    seen.append(rounds)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = cluster.run(SCENARIO, SHRUNK, timeout=900)
    finally:
        done.set()
        watcher.join()
    assert result.status == "finished:completed" and result.returncode == 0, result.log.read_text()[-3000:]
    # the ServerApp appended each round as it ended: the file held rounds 0 and 1 while round 2 ran
    assert ["0", "1"] in seen and seen[-1] == ["0", "1", "2"], seen
    devices = (result.run_dir / "devices.csv").read_text().splitlines()[1:]
    assert sorted(line.split(",")[:3] for line in devices) == [
        [str(r), str(r), str(k)] for r in (1, 2) for k in range(NODES)]
    from fedmoe.cli import main

    assert main(["report", str(result.run_dir), "--out", str(cluster.out / "report.html")]) == 0
    page = (cluster.out / "report.html").read_text()
    assert page.count("<tr>") >= 3 + NODES + 2  # rounds 0-2, the devices, and the summary
    doc = json.loads((result.run_dir / "metrics.json").read_text())
    rounds = [r for r in doc["rounds"] if r["round"] > 0]
    assert [r["round"] for r in rounds] == [1, 2] and [r["stage"] for r in rounds] == [1, 2]
    assert all(r["selected"] == r["completed"] == NODES and r["failed"] == 0 for r in rounds)
    assert all(sorted(r["devices"]) == list(range(NODES)) for r in rounds)
    for r in doc["rounds"]:
        assert math.isfinite(r["accuracy"]) and 0.0 <= r["accuracy"] <= 1.0
    assert all(math.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in rounds)
    assert doc["summary"]["rounds"] == 2 and doc["summary"]["failed_updates"] == 0
    # the ServerApp and the ClientApps ran from the bundle `flwr run` sent, unpacked in each FLWR_HOME
    for home in ["superlink", *(f"supernode-{k}" for k in range(NODES))]:
        assert list((cluster.out / "home" / home / "apps").glob("fedmoe.fedmoe.*/clients/app.py")), home
    # each SuperNode kept its device's local state (its local keys) in its node config's state-dir
    for k in range(NODES):
        assert (cluster.out / "home" / f"supernode-{k}" / "state" / f"device_{k}" / "round_000002.npz").is_file(), k
    # only the three registered SuperNodes ever got in
    assert len(ACTIVATED.findall(cluster.superlink.log_text())) == NODES
    # the same ServerApp loop over the same ClientApp handlers, called in this process, gives the same rounds
    from fedmoe.scenarios import load_scenario
    from fedmoe.strategies.server_app import serve
    from tests.federated.conftest import LocalGrid

    cfg = load_scenario(SCENARIO, dotted_to_nested(dict(parse_assignment(a) for a in SHRUNK)))
    here = serve(LocalGrid(NODES), cfg, None).metrics["rounds"]
    assert [r["round"] for r in here] == [r["round"] for r in doc["rounds"]]
    for a, b in zip(doc["rounds"], here):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=2 / cfg.federated.test_samples)
        assert a.get("devices") == b.get("devices")
        if a["round"] > 0:
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert len(result.round_durations_s) == 2
    timings = {"startup_s": round(cluster.startup_s, 1), "run_wall_s": round(result.wall_s, 1),
               "server_wall_s": round(doc["wall_s"], 1),
               "round_s": [round(t, 1) for t in result.round_durations_s]}
    (cluster.out / "timings.json").write_text(json.dumps(timings, indent=2))
    print("deployment timings:", timings)


def test_stopping_ends_every_process_it_started(cluster):
    started = [cluster.superlink.pid] + [p.pid for p in cluster.supernodes.values()]
    members = {p.pid for p in cluster.procs.members()}
    assert set(started) <= members and len(members) >= 2 * (1 + NODES)  # each daemon has its flower-superexec
    report = cluster.stop()
    assert members <= set(report["terminated"])
    assert cluster.procs.members() == []
    for pid in members:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
