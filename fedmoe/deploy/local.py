"""A whole Flower deployment on 127.0.0.1: one SuperLink with TLS and SuperNode authentication,
N authenticated SuperNodes (SuperNode ``k`` is device ``k``: ``--node-config
"partition-id=k num-partitions=N"``), and ``flwr run`` of this project's app.

Every process gets its own ``FLWR_HOME`` and port (chosen free at run time); every wait is
bounded; leaving :class:`LocalCluster` — normally, on an error or on Ctrl-C — stops every
process it started by PID (:class:`fedmoe.deploy.processes.ProcessSet`).

Folder ``out``::

    pki/                CA, server certificate, SuperNode keys (fedmoe.deploy.pki)
    home/<process>/     FLWR_HOME of the SuperLink, the flwr CLI and each SuperNode
    logs/<process>.log  output of every process; logs/flwr-run.log the run's streamed log (with elapsed seconds)
    superlink.db        the SuperLink's state
    run_config.toml     the run config given to ``flwr run`` (scenario, overrides, run-dir)
    run/                the run folder the ServerApp writes (metrics.json, rounds.csv, plots, checkpoints)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from fedmoe.deploy import flower
from fedmoe.deploy.flower import CONNECTION, TLSFiles
from fedmoe.deploy.pki import supernode_key_names, write_deployment_pki
from fedmoe.deploy.processes import ProcessSet, Started, free_ports
from fedmoe.errors import UsageError

HOST = "127.0.0.1"
PRIVATE_FOLDER = 0o700
"""Mode of the deployment folder: what is in it (keys, the SuperLink's database, logs, results) is this user's only."""
OWNED = ("pki", "home", "logs", "superlink.db", "superlink.db-shm", "superlink.db-wal", "run_config.toml", "run")
"""What :class:`LocalCluster` writes in its folder (and removes first with ``force``)."""


class DeployError(RuntimeError):
    """The local deployment could not be set up or the run failed (one-line message)."""


class DeployArgumentError(UsageError):
    """A bad argument, found before anything is started or written (one-line message)."""


def project_root() -> Path:
    """The folder of this project's ``pyproject.toml`` (the Flower app ``flwr run`` packages)."""
    return Path(__file__).resolve().parents[2]


def check_deploy_folder(out: Path, force: bool) -> list[str]:
    """What of an earlier deployment (:data:`OWNED`) is in ``out``: a :class:`DeployArgumentError` if
    there is any and not ``force``, or if ``out`` is not a folder. Nothing is changed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DeployArgumentError(f"{out}: exists and is not a folder")
    present = [n for n in OWNED if (out / n).exists()]
    if present and not force:
        raise DeployArgumentError(f"{out} already holds a deployment ({', '.join(present)}); "
                                  "use --force to replace it or choose another --out")
    return present


def check_app(app_dir: Path) -> Path:
    """``app_dir`` resolved, if it holds a ``pyproject.toml`` with ``[tool.flwr.app]``."""
    import tomllib

    app_dir = Path(app_dir).resolve()
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise DeployArgumentError(f"{app_dir}: no pyproject.toml (give the fedmoe source folder with --app)")
    try:
        doc = tomllib.loads(pyproject.read_text())
    except (tomllib.TOMLDecodeError, OSError) as err:
        raise DeployArgumentError(f"{pyproject}: {err}") from None
    if "app" not in doc.get("tool", {}).get("flwr", {}):
        raise DeployArgumentError(f"{pyproject}: no [tool.flwr.app] section (not a Flower app)")
    return app_dir


def run_config_toml(scenario: str, overrides: Sequence[str], run_dir: Path, resume: bool = False) -> str:
    """The run config of :data:`fedmoe.strategies.server_app.app`: ``scenario``, ``overrides`` (``;``-joined),
    ``run-dir`` (and ``resume = true`` with ``resume``)."""
    bad = [o for o in overrides if ";" in o]
    if bad:
        raise DeployArgumentError(f"--set {bad[0]!r}: values must not contain ';' "
                                  "(it separates overrides in the run config)")
    return (f"scenario = {json.dumps(str(scenario))}\n"
            f"overrides = {json.dumps(';'.join(overrides))}\n"
            f"run-dir = {json.dumps(str(run_dir))}\n" + ("resume = true\n" if resume else ""))


@dataclass
class RunResult:
    """What :meth:`LocalCluster.run` observed."""

    run_id: int | None
    status: str
    returncode: int | None
    wall_s: float
    log: Path
    run_dir: Path
    round_starts_s: list[float] = field(default_factory=list)
    finished_s: float | None = None

    @property
    def round_durations_s(self) -> list[float]:
        """Wall time of each round: from its ``[ROUND k/N]`` line of the streamed log to the next one (the
        last round: to ``Strategy execution finished``). The log arrives in batches, so each value is
        good to about a second."""
        t = self.round_starts_s + ([self.finished_s] if self.finished_s is not None and self.round_starts_s else [])
        return [b - a for a, b in zip(t, t[1:])]


class LocalCluster:
    """SuperLink + N SuperNodes on 127.0.0.1 with TLS and SuperNode authentication.

    >>> with LocalCluster(Path("runs/deploy"), nodes=3) as cluster:   # doctest: +SKIP
    ...     cluster.start()
    ...     result = cluster.run("default", ["partition.num_devices=3", "federated.clients_per_round=3",
    ...                                      "federated.rounds=2", "federated.stage1_rounds=1"])
    """

    def __init__(self, out: Path, nodes: int, app_dir: Path | None = None, force: bool = False,
                 ready_timeout: float = 120.0, term_timeout: float = 15.0,
                 echo: Callable[[str], None] | None = None, stream: bool = True,
                 partition_ids: Sequence[int] | None = None) -> None:
        if nodes < 1:
            raise DeployArgumentError(f"--nodes: expected at least 1, got {nodes}")
        self.out = Path(out).resolve()
        self.nodes = nodes
        self.partition_ids = list(range(nodes)) if partition_ids is None else [int(k) for k in partition_ids]
        """The device each SuperNode says it is (``partition-id`` of SuperNode ``k``): ``0 … N-1``; another
        list shows what a misconfigured SuperNode does."""
        if len(self.partition_ids) != nodes:
            raise DeployArgumentError(f"partition_ids: {len(self.partition_ids)} given for {nodes} nodes")
        self.app_dir = check_app(app_dir if app_dir is not None else project_root())
        self.ready_timeout = ready_timeout
        self.echo = echo or (lambda line: None)
        self.stream = stream
        self._prepare_folder(force)
        self.pki = self.out / "pki"
        self.tls = TLSFiles.in_folder(self.pki)
        self.env = flower.runtime_env()
        self.procs = ProcessSet(self.out / "logs", self.env, term_timeout)
        self.superlink_port = 0
        self.superlink: Started | None = None
        self.supernodes: dict[int, Started] = {}
        self.node_ids: dict[int, int] = {}
        self.cli_home = self.out / "home" / "cli"
        self.cli_wrap: list[str] = []  # prefix of the `flwr` calls (fedmoe.deploy.multihost: another host)

    def _prepare_folder(self, force: bool) -> None:
        present = check_deploy_folder(self.out, force)
        for name in present:
            path = self.out / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        os.chmod(self.out, PRIVATE_FOLDER)  # keys, databases, logs and run results: this user's only

    # ------------------------------------------------------------------ context

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> dict[str, list[int]]:
        """Stop every process this cluster started (SIGTERM, then SIGKILL after the timeout)."""
        return self.procs.stop()

    # ------------------------------------------------------------------ start-up

    def make_pki(self) -> None:
        """The CA, the SuperLink's certificate and a key pair per SuperNode in ``pki/``: a 0700 folder
        whose files are all 0600 (:func:`fedmoe.deploy.pki.write_deployment_pki` with ``private``),
        since on one machine every process reads them as this user and nobody else needs to."""
        write_deployment_pki(self.pki, ("localhost", HOST), self.nodes, private=True)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.superlink_port}"

    def node_key(self, k: int) -> Path:
        return self.pki / supernode_key_names(k)[0]

    def start(self) -> None:
        """Certificates and keys, the SuperLink, the CLI connection, key registration, N SuperNodes (all ready)."""
        t0 = time.perf_counter()
        self.make_pki()
        ports = free_ports(1 + self.nodes, HOST)
        self.superlink_port, self.node_ports = ports[0], ports[1:]
        home = self.out / "home" / "superlink"
        home.mkdir(parents=True, exist_ok=True)
        self.superlink = self.procs.start(
            "superlink", flower.superlink_argv(self.tls, self.out / "superlink.db", HOST, self.superlink_port),
            env={"FLWR_HOME": str(home)}, cwd=home)
        self.superlink.wait_for_log(flower.SUPERLINK_READY, self.ready_timeout)
        self.echo(f"SuperLink (TLS, SuperNode authentication) listening on {self.address}, pid {self.superlink.pid}")
        flower.write_connection(self.cli_home, self.address, self.tls.ca_cert)
        for k in range(self.nodes):
            pub = self.pki / supernode_key_names(k)[1]
            self.node_ids[k] = flower.register_supernode(pub, self.cli_home, env=self.env)
        self.echo(f"registered {self.nodes} SuperNode public keys")
        for k in range(self.nodes):
            self.supernodes[k] = self.start_supernode(self.partition_ids[k], self.node_ports[k],
                                                      name=f"supernode-{k}", private_key=self.node_key(k))
        for k, proc in self.supernodes.items():
            proc.wait_for_log(flower.SUPERNODE_READY, self.ready_timeout)
        self.echo(f"{self.nodes} SuperNodes connected "
                  f"(pids {', '.join(str(p.pid) for p in self.supernodes.values())}); "
                  f"start-up {time.perf_counter() - t0:.1f} s")

    def start_supernode(self, partition_id: int, port: int, *, name: str | None = None, private_key: Path | None = None,
                        ca_cert: Path | None | str = "default", insecure: bool = False,
                        max_wait_s: float | None = None) -> Started:
        """Start one SuperNode for device ``partition_id`` (its own FLWR_HOME); does not wait for it.

        ``ca_cert="default"`` is this cluster's CA; ``None`` omits ``--root-certificates``.
        """
        name = name or f"supernode-{partition_id}"
        home = self.out / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        ca = self.tls.ca_cert if ca_cert == "default" else ca_cert
        argv = flower.supernode_argv(self.address, partition_id, self.nodes, port, ca_cert=ca,
                                     private_key=private_key, insecure=insecure, max_wait_s=max_wait_s, host=HOST,
                                     state_dir=(home / "state").resolve())
        return self.procs.start(name, argv, env={"FLWR_HOME": str(home), **self.thread_env()}, cwd=home)

    def thread_env(self) -> dict[str, str]:
        """``OMP_NUM_THREADS`` (and torch's intra-op threads with it) for each SuperNode's ClientApps: this
        machine's CPUs shared out among the SuperNodes, at least 1. Without it every ``flwr-clientapp`` (one per
        SuperNode at a time) starts as many threads as the machine has CPUs, and N of them oversubscribe it, as
        Ray's virtual clients (``OMP_NUM_THREADS`` = their ``num_cpus``) never do."""
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.nodes))}

    # ------------------------------------------------------------------ the run

    def run(self, scenario: str, overrides: Sequence[str] = (), timeout: float = 3600.0,
            resume: bool = False) -> RunResult:
        """``flwr run APP fedmoe-deploy --run-config run_config.toml --stream``, bounded by ``timeout`` s.

        The streamed log goes to ``logs/flwr-run.log`` (each line prefixed with the elapsed
        seconds) and to ``echo``. Afterwards the run's status is asked with ``flwr ls``.
        """
        if self.superlink is None:
            raise DeployError("start() the cluster before run()")
        run_dir = self.out / "run"
        config = self.out / "run_config.toml"
        config.write_text(run_config_toml(scenario, overrides, run_dir, resume))
        log_path = self.out / "logs" / "flwr-run.log"
        argv = [*self.cli_wrap, flower.executable("flwr"), "run", str(self.app_dir), CONNECTION, "--run-config",
                str(config), "--stream"]
        env = {"FLWR_HOME": str(self.cli_home)}
        t0 = time.perf_counter()
        proc = self.procs.start("flwr-run-raw", argv, env=env, cwd=self.app_dir)
        round_starts: list[float] = []
        finished: list[float] = []
        run_id: int | None = None
        stop = threading.Event()

        def follow() -> None:  # copy the raw log with elapsed times, note run id and round starts
            nonlocal run_id
            with open(proc.log, "r", errors="replace") as src, open(log_path, "w") as dst:
                while True:
                    line = src.readline()
                    if not line:
                        if stop.is_set():
                            return
                        time.sleep(0.2)
                        continue
                    elapsed = time.perf_counter() - t0
                    text = _strip_ansi(line.rstrip("\n"))
                    dst.write(f"[{elapsed:8.1f} s] {text}\n")
                    dst.flush()
                    if run_id is None and (m := re.search(flower.RUN_STARTED, text)):
                        run_id = int(m.group(1))
                    if re.search(r"\[ROUND \d+/\d+\]", text):
                        round_starts.append(elapsed)
                    elif not finished and "Strategy execution finished" in text:
                        finished.append(elapsed)
                    if self.stream:
                        self.echo(text)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout)
            if rc is None:
                raise DeployError(f"the run did not finish within {timeout:.0f} s; see {log_path}")
        finally:
            if proc.returncode() is None:
                proc.popen.terminate()
                proc.wait(10.0)
            stop.set()
            reader.join(5.0)
        wall = time.perf_counter() - t0
        if run_id is None:
            raise DeployError(f"flwr run did not start a run (status {rc}): {_last_line(proc.log_text())}")
        status = flower.run_status(run_id, self.cli_home, env=self.env, wrap=self.cli_wrap)
        return RunResult(run_id, status, rc, wall, log_path, run_dir, round_starts, finished[0] if finished else None)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"^(?:\[\s*[\d.]+ s\] )?([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def _server_error(log: Path) -> str:
    """``": <the exception the ServerApp raised>"`` (the last exception line of the run's streamed log,
    e.g. a node's failed device query naming the node and its node-config key), or ``""``."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [m for ln in lines if (m := _EXCEPTION_LINE.match(_strip_ansi(ln).strip()))]
    return f": {found[-1][1].rsplit('.', 1)[-1]}: {found[-1][2]}" if found else ""


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _last_line(text: str) -> str:
    lines = [_strip_ansi(ln).strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------- the CLI's job


def validate_run(scenario: str, sets: Sequence[str], nodes: int | None) -> tuple[str, list[str], int]:
    """Check the scenario and overrides here, before any process starts; ``(scenario, sets, nodes)``.

    The config gets the checks ``fedmoe run`` makes (:func:`fedmoe.strategies.modes.check_config`, and a
    channel trace is read once: :func:`fedmoe.data.trace_formats.checked_trace`). A scenario given as a file
    becomes an absolute path (the ServerApp resolves it from its own folder), and so does every file setting
    (:data:`fedmoe.config.FILE_SETTINGS`: the dataset, the trace, the availability file);
    ``nodes`` defaults to ``partition.num_devices`` and must equal it.
    """
    from fedmoe.config import file_settings, with_absolute_files
    from fedmoe.data.trace_formats import checked_trace
    from fedmoe.overrides import parse_overrides
    from fedmoe.scenarios import SCENARIOS, load_scenario, resolve_scenario
    from fedmoe.strategies.modes import check_config

    sets = [s.strip() for s in sets if s.strip()]
    run_config_toml("x", sets, Path("x"))  # rejects ';'
    cfg = load_scenario(scenario, parse_overrides(sets))
    if scenario not in SCENARIOS:  # a path (fedmoe.scenarios.resolve_scenario's rule)
        scenario = str(resolve_scenario(scenario).resolve())
    devices = cfg.partition.num_devices
    if nodes is None:
        nodes = devices
    elif nodes < 1:
        raise DeployArgumentError(f"--nodes: expected at least 1, got {nodes}")
    elif nodes != devices:
        raise DeployArgumentError(f"--nodes {nodes} but the scenario has partition.num_devices={devices} "
                          f"(add --set partition.num_devices={nodes}, or drop --nodes)")
    check_config(cfg)
    cfg = checked_trace(with_absolute_files(cfg))  # a bad trace file is refused here
    sets = [*sets, *(f"{name}={path}" for name, path in file_settings(cfg).items())]  # the processes get absolute paths
    return scenario, sets, nodes


def check_deploy_local(out: Path, scenario: str = "default", sets: Sequence[str] = (), nodes: int | None = None,
                       app_dir: Path | None = None, timeout: float = 3600.0, force: bool = False
                       ) -> tuple[str, list[str], int]:
    """Every argument of :func:`deploy_local` checked, with nothing started or written:
    ``(scenario, sets, nodes)`` as :func:`validate_run` returns them, or a one-line
    :class:`DeployArgumentError` (or config error)."""
    if not timeout > 0:
        raise DeployArgumentError(f"--timeout: expected a positive number of seconds, got {timeout:g}")
    checked = validate_run(scenario, sets, nodes)
    check_app(app_dir if app_dir is not None else project_root())
    check_deploy_folder(Path(out), force)
    return checked


def deploy_local(out: Path, scenario: str = "default", sets: Sequence[str] = (), nodes: int | None = None,
                 app_dir: Path | None = None, timeout: float = 3600.0, force: bool = False,
                 echo: Callable[[str], None] = print, stream: bool = True) -> RunResult:
    """``fedmoe deploy local``: validate, start the cluster, run, check, stop everything."""
    scenario, sets, nodes = check_deploy_local(out, scenario, sets, nodes, app_dir, timeout, force)
    with LocalCluster(out, nodes, app_dir, force, echo=echo, stream=stream) as cluster:
        try:
            cluster.start()
            result = cluster.run(scenario, sets, timeout)
        finally:
            report = cluster.stop()
            echo(f"stopped {len(report['terminated'])} processes by PID"
                 + (f" ({len(report['killed'])} needed SIGKILL)" if report["killed"] else ""))
    return check_result(result)


def check_result(result: RunResult) -> RunResult:
    """``result`` if the run completed and wrote its metrics; else a one-line :class:`DeployError` with the
    exception the ServerApp raised (e.g. which node failed the device query and why) and the log's path."""
    if result.status != "finished:completed":
        raise DeployError(f"run {result.run_id} ended with status {result.status!r}"
                          f"{_server_error(result.log)}; see {result.log}")
    if not (result.run_dir / "metrics.json").is_file():
        raise DeployError(f"run {result.run_id} completed but wrote no {result.run_dir / 'metrics.json'}")
    return result


def summarise(result: RunResult) -> str:
    """One paragraph on a finished run: rounds, accuracy, wall time, per-round time."""
    doc = json.loads((result.run_dir / "metrics.json").read_text())
    s = doc.get("summary", {})
    acc = s.get("accuracy")
    per_round = result.round_durations_s
    rounds = f"; rounds took {', '.join(f'{d:.0f}' for d in per_round)} s" if per_round else ""
    return (f"run {result.run_id} {result.status}: {s.get('rounds')} rounds, final accuracy "
            f"{'n/a' if acc is None else f'{acc:.1%}'}; wall {result.wall_s:.0f} s{rounds}\n"
            f"wrote {result.run_dir}/metrics.json; logs in {result.log.parent}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: fedmoe deploy local --help")
