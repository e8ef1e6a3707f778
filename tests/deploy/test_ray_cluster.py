"""Attaching the simulation to a Ray cluster (``fedmoe run --ray-address``).

The unmarked tests check the plumbing in about a second each. The test marked
``cluster`` starts a real two-node Ray cluster on this machine (``ray start --head`` and
``ray start --address``, each node with its own temp dir and CPU), runs the tiny default
scenario attached to it through the CLI (in a process of its own), and stops every
process it started, by PID, even when it fails. It takes about 1.5 minutes on 2 cores, so it is not in the default
suite: ``make test-cluster`` or ``pytest -m cluster tests/deploy``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import fedmoe.simulation
from fedmoe.cli import main as cli
from fedmoe.simulation import (
    RayClusterUnreachable,
    backend_config,
    check_cluster_fits,
    check_ray_cluster,
    resolve_ray_address,
    run_federated,
)
from tests.federated.conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def tiny_cfg():
    return tiny_config()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- plumbing (default suite)


def test_attached_init_args_carry_the_address_and_no_cpus(tiny_cfg):
    attached = backend_config(tiny_cfg, ray_address="10.0.0.1:6379")
    assert attached["init_args"]["address"] == "10.0.0.1:6379" and "num_cpus" not in attached["init_args"]
    assert attached["client_resources"] == {"num_cpus": tiny_cfg.federated.client_cpus, "num_gpus": 0.0}
    local = backend_config(tiny_cfg, num_cpus=2)
    assert local["init_args"]["address"] == "local" and local["init_args"]["num_cpus"] == 2
    with pytest.raises(ValueError, match="ray start --num-cpus"):
        backend_config(tiny_cfg, num_cpus=2, ray_address="10.0.0.1:6379")


def test_the_address_comes_from_the_option_then_ray_address_and_local_forces_a_local_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_ray_address(None) is None
    assert resolve_ray_address(" head.lan:6379 ") == "head.lan:6379"
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert resolve_ray_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_ray_address(None) == "10.0.0.1:6379"
    assert resolve_ray_address("[::1]:6379") == "[::1]:6379"
    assert resolve_ray_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(ValueError, match="RAY_ADDRESS 'auto': expected HOST:PORT"):
        resolve_ray_address(None)
    for bad in ("head", "head:", ":6379", "head:0", "head:70000", "ray://head:10001", "a b:1"):
        with pytest.raises(ValueError, match="--ray-address .*expected HOST:PORT"):
            resolve_ray_address(bad)


def test_nobody_listening_is_refused_at_once():
    port = _free_port()
    t0 = time.perf_counter()
    with pytest.raises(RayClusterUnreachable, match=f"127.0.0.1:{port}: nothing answers there"):
        check_ray_cluster(f"127.0.0.1:{port}", timeout_s=5.0)
    assert time.perf_counter() - t0 < 5.0


def test_a_silent_listener_is_given_up_on_after_the_timeout():
    with socket.socket() as s:  # accepts TCP connections (kernel backlog), never speaks gRPC
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        address = f"127.0.0.1:{s.getsockname()[1]}"
        t0 = time.perf_counter()
        with pytest.raises(RayClusterUnreachable, match="no answer within 0.5 s"):
            check_ray_cluster(address, timeout_s=0.5)
        assert time.perf_counter() - t0 < 3.0


def test_a_client_no_node_can_hold_is_refused(tiny_cfg):
    check_cluster_fits(tiny_cfg, "h:1", [1.0, 4.0])
    cfg = tiny_config(federated={"client_cpus": 2})
    with pytest.raises(ValueError, match=r"client_cpus=2 exceeds the CPUs of every node .* at h:1 \(1, 1\)"):
        check_cluster_fits(cfg, "h:1", [1.0, 1.0])
    with pytest.raises(ValueError, match="no alive node"):
        check_cluster_fits(cfg, "h:1", [])


def test_an_initialised_ray_is_not_silently_reused(tiny_cfg, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match="already initialised"):
        run_federated(tiny_cfg, None, progress=False, ray_address="127.0.0.1:1")


def test_cli_unreachable_cluster_is_one_line_exit_1_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "run"
    code = cli(["run", "--quiet", "--out", str(out), "--ray-address", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "nothing answers there" in err and len(err.splitlines()) == 1
    assert not out.exists()
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")
    code = cli(["run", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("fedmoe: error: RAY_ADDRESS 'nonsense': expected HOST:PORT of the Ray head "
                                 "(the --port of `ray start --head`), or 'local'")
    assert not out.exists()


# --------------------------------------------------------------------------- a real two-node cluster


RAY_CLI = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 5.0


class LocalRayCluster:
    """A head and one worker node started with ``ray start`` on this machine, each with its own
    temp dir (short: Ray's socket paths must fit in 107 characters), 1 CPU, free ports, and worker
    ports chosen by the OS. ``stop()`` ends every process they started, by PID."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fmray-"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []  # PIDs of the `ray start` commands: each leads its own session
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(fedmoe.simulation.QUIET_ENV, RAY_USAGE_STATS_ENABLED="0")

    def node_dir(self, name: str) -> Path:
        return self.root / name

    def node_ip(self, name: str) -> str:  # noqa: ARG002 - every node on 127.0.0.1 here (emulated hosts: their own)
        return "127.0.0.1"

    def on_node(self, name: str, argv: list[str]) -> list[str]:  # noqa: ARG002 - this machine (emulated hosts: theirs)
        return argv

    def alive_nodes(self) -> int:
        """How many alive nodes the head reports."""
        return len(check_ray_cluster(self.address) or [])

    def _ray_start(self, name: str, args: list[str]) -> None:
        self.node_dir(name).mkdir()
        log = self.node_dir(name) / "ray-start.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(self.on_node(name, [
                RAY_CLI, "start", "--node-ip-address", self.node_ip(name), "--num-cpus", "1", "--disable-usage-stats",
                "--temp-dir", str(self.node_dir(name)), "--dashboard-agent-listen-port", str(_free_port()),
                "--min-worker-port", "0", "--max-worker-port", "0", "--object-store-memory", str(100 * 2**20),
                *args]), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                start_new_session=True)
        self.sessions.append(proc.pid)
        try:
            code = proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`ray start` of the {name} node did not return in {START_TIMEOUT_S:g} s") from None
        if code != 0:
            raise AssertionError(f"`ray start` of the {name} node failed ({code}):\n{log.read_text()[-3000:]}")

    def start(self) -> None:
        self._ray_start("head", ["--head", "--port", str(self.port), "--include-dashboard", "false",
                                 "--ray-client-server-port", str(_free_port())])
        self._ray_start("worker", ["--address", self.address])
        deadline = time.monotonic() + 60.0
        while self.alive_nodes() < 2:
            if time.monotonic() > deadline:
                raise AssertionError("the worker node did not register with the head within 60 s")
            time.sleep(1.0)

    def processes(self):
        """Every live process of this cluster: those in the sessions of our `ray start` commands,
        those whose command line names our temp dir, and all their descendants."""
        import psutil

        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                mine = os.getsid(p.pid) in self.sessions or str(self.root) in " ".join(p.info["cmdline"] or ())
                if mine and p.pid != os.getpid():
                    found[p.pid] = p
                    for child in p.children(recursive=True):
                        found[child.pid] = child
            except (psutil.Error, OSError):
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self) -> list[str]:
        """SIGTERM every process of the cluster, SIGKILL what is left after a short grace time (the
        GCS server ignored SIGTERM for over 15 s in a trial), also when interrupted while waiting
        (pytest-timeout counts the teardown too). Returns what could not be stopped."""
        import psutil

        procs = self.processes()
        try:
            for p in procs:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
            psutil.wait_procs(procs, timeout=STOP_GRACE_S)
        finally:
            procs += self.processes()
            for p in procs:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            shutil.rmtree(self.root, ignore_errors=True)
        _, alive = psutil.wait_procs(procs, timeout=10.0)
        return [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in alive + self.processes() if p.is_running()]


def started(cluster: LocalRayCluster):
    """A generator for a fixture: ``cluster`` started, then stopped (and checked stopped) afterwards."""
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"processes of the test cluster still running: {left}"


@pytest.fixture
def ray_cluster():
    pytest.importorskip("psutil")
    yield from started(LocalRayCluster())


def _actor_logs(node_dir: Path) -> list[Path]:
    """The worker logs of this node that hosted a Flower ClientAppActor."""
    return [f for f in node_dir.glob("session_*/logs/worker-*.out") if ":actor_name:ClientAppActor" in f.read_text()]


RUN_TIMEOUT_S = 300.0


def _dotted(tree: dict, prefix: str = ""):
    """``--set`` assignments (``key.path=value``, the value as TOML) of a nested dict of overrides."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}={json.dumps(value)}"


@pytest.mark.cluster
@pytest.mark.timeout(900)
def test_tiny_run_on_a_two_node_ray_cluster(ray_cluster, tmp_path):
    """``fedmoe run --ray-address`` in its own process (a Ray driver interrupted in the test's
    process can abort it, finalisers and all): 2 rounds complete with metrics, the head reports
    2 alive 1-CPU nodes throughout the run, and each node hosted a ClientAppActor."""
    run_attached(ray_cluster, tmp_path)


def run_attached(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    """The tiny run attached to ``ray_cluster`` from its head node, and what must hold of it
    (:func:`test_tiny_run_on_a_two_node_ray_cluster`)."""
    import fedmoe

    sets = list(_dotted(TINY))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(fedmoe.__file__).parents[1]),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = tmp_path / "fedmoe-run.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(ray_cluster.on_node("head", [
                                    sys.executable, "-m", "fedmoe.cli", "run", "--quiet", "--out", str(out),
                                    "--ray-address", ray_cluster.address] + [a for s in sets for a in ("--set", s)]),
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    ray_cluster.sessions.append(proc.pid)  # stopped with the cluster if it outlives the test
    alive: list[float] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"fedmoe run did not finish in {RUN_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")
        alive.append(ray_cluster.alive_nodes())
        time.sleep(1.0)
    assert proc.returncode == 0, log.read_text()[-3000:]

    doc = json.loads((out / "metrics.json").read_text())
    rounds = [r for r in doc["rounds"] if r["round"] > 0]
    assert [r["round"] for r in rounds] == [1, 2] and doc["summary"]["rounds"] == 2
    assert all(r["completed"] == r["selected"] == 4 and r["failed"] == 0 for r in rounds)
    assert all(r["energy_j"] > 0 and 0.0 <= r["accuracy"] <= 1.0 for r in rounds)
    assert "final test accuracy" in log.read_text()
    assert alive and set(alive) == {2}, alive
    assert list(ray_cluster.node_dir("head").glob("session_*/logs/python-core-driver-*")), "no driver attached"
    for node in ("head", "worker"):  # one ClientAppActor (1 CPU each) ran on each node
        assert _actor_logs(ray_cluster.node_dir(node)), f"no ClientAppActor ran on the {node} node"
