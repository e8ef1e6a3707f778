"""fedmoe deploy local without starting anything: argument errors are one line with status 2 and leave
no folder and no process behind; the command lines, the CLI connection and the run config; what
`flwr run` packages from this project."""

from __future__ import annotations

import io
import tomllib
import zipfile
from pathlib import Path

import psutil
import pytest

from fedmoe.cli import main as cli
from fedmoe.deploy import flower
from fedmoe.deploy.local import project_root, run_config_toml


@pytest.mark.parametrize("args, message", [
    (["--nodes", "3"], "--nodes 3 but the scenario has partition.num_devices=10"),
    (["--nodes", "0", "--set", "partition.num_devices=0"], "partition.num_devices"),
    (["--set", "partition.num_devices=3;federated.rounds=2"], "must not contain ';'"),
    (["--set", "federated.rounds=-1"], "federated.rounds"),
    (["--set", "nope"], "expected key.path=value"),
    (["--scenario", "nope"], "unknown scenario 'nope'"),
    (["--scenario", "missing.toml"], "no such config file"),
    (["--timeout", "0"], "--timeout"),
    (["--app", "{tmp}/no-such-folder"], "no pyproject.toml"),
    (["--app", "{tmp}/not-an-app"], "no [tool.flwr.app]"),
    (["--out", "{tmp}/a-file"], "not a folder"),
    (["--out", "{tmp}/earlier"], "already holds a deployment (pki, run); use --force"),
])
def test_argument_errors_are_one_line_before_anything_starts(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-an-app").mkdir()
    (tmp_path / "not-an-app" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "a-file").write_text("")
    (tmp_path / "earlier" / "pki").mkdir(parents=True)
    (tmp_path / "earlier" / "run").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "deploy")]
    code = cli(["deploy", "local", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("fedmoe: error:") and message in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children


def test_supernode_command_line_carries_the_device_ca_and_key(tmp_path):
    argv = flower.supernode_argv("127.0.0.1:9092", 2, 3, 9100, ca_cert=tmp_path / "ca.crt",
                                 private_key=tmp_path / "k.key")
    assert argv[0].endswith("flower-supernode")
    text = " ".join(argv[1:])
    assert "--insecure" not in argv and f"--root-certificates {tmp_path / 'ca.crt'}" in text
    assert f"--auth-supernode-private-key {tmp_path / 'k.key'}" in text
    assert argv[argv.index("--node-config") + 1] == "partition-id=2 num-partitions=3"
    with_state = flower.supernode_argv("127.0.0.1:9092", 2, 3, 9100, state_dir=Path("/srv/fed moe/state"))
    assert (with_state[with_state.index("--node-config") + 1]
            == 'partition-id=2 num-partitions=3 state-dir="/srv/fed moe/state"')
    plain = flower.supernode_argv("127.0.0.1:9092", 0, 3, 9101, insecure=True, max_wait_s=8)
    assert "--insecure" in plain and plain[plain.index("--max-wait-time") + 1] == "8"
    assert "--root-certificates" not in plain and "--auth-supernode-private-key" not in plain


def test_superlink_command_line_enables_tls_and_node_authentication(tmp_path):
    argv = flower.superlink_argv(flower.TLSFiles.in_folder(tmp_path), tmp_path / "db", "127.0.0.1", 9092)
    assert argv[0].endswith("flower-superlink") and "--insecure" not in argv
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth",
                 "--disable-runtime-dependency-installation"):
        assert flag in argv


def test_connection_config_and_run_config_are_valid_toml(tmp_path):
    path = flower.write_connection(tmp_path / "home", "127.0.0.1:9092", tmp_path / 'odd "name".crt')
    doc = tomllib.loads(path.read_text())
    assert doc["superlink"]["default"] == flower.CONNECTION
    conn = doc["superlink"][flower.CONNECTION]
    assert conn == {"address": "127.0.0.1:9092", "root-certificates": str(tmp_path / 'odd "name".crt')}
    rc = tomllib.loads(run_config_toml("/some where/my.toml", ["partition.num_devices=3", 'a.b="x y"'],
                                       tmp_path / "run"))
    assert rc == {"scenario": "/some where/my.toml", "overrides": 'partition.num_devices=3;a.b="x y"',
                  "run-dir": str(tmp_path / "run")}


def test_runtime_env_puts_the_flower_executables_first():
    env = flower.runtime_env({"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0] == str(flower.bin_dir()) and env["PATH"].endswith("/usr/bin")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    for name in ("flower-superlink", "flower-supernode", "flower-superexec", "flwr"):
        assert flower.executable(name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # flwr's dependencies (click, pathspec)
def test_flwr_run_accepts_the_app_configuration():
    """What `flwr run` checks of pyproject.toml before it starts a run: among others that the
    ServerApp and ClientApp modules assign `app` (read from their source, not imported)."""
    from flwr.cli.config_utils import load_and_validate

    config, _ = load_and_validate(project_root() / "pyproject.toml")
    assert config["tool"]["flwr"]["app"]["components"] == {"serverapp": "strategies.server_app:app",
                                                           "clientapp": "clients.app:app"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # flwr's dependencies (click, pathspec)
def test_flwr_run_packages_the_code_and_scenarios_only():
    """The FAB `flwr run .` sends to the SuperLink (built by flwr itself, as `flwr run` does)."""
    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(project_root())
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    for needed in ("pyproject.toml", "clients/app.py", "strategies/server_app.py", "fedmoe/clients/app.py",
                   "fedmoe/strategies/server_app.py", "fedmoe/federated/world.py", "fedmoe/scenarios/default.toml"):
        assert needed in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "docs", "runs") or "/bench/" in n]
    assert len(fab) < 2_000_000  # flwr refuses more than 10 MB


def test_the_deployment_folder_and_its_pki_are_private(tmp_path):
    """Issue 18, finding 6: any local user could read ``ca.crt`` (and the rest) of ``fedmoe deploy local``.
    The deployment folder is 0700, its PKI folder 0700 and every file in it 0600, whatever the umask."""
    import os
    import stat

    from fedmoe.deploy.local import LocalCluster

    old = os.umask(0o022)
    try:
        cluster = LocalCluster(tmp_path / "deploy", nodes=2)
        cluster.make_pki()
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "deploy") == 0o700 and mode(cluster.pki) == 0o700
    files = sorted(cluster.pki.iterdir())
    assert {p.name for p in files} >= {"ca.crt", "ca.key", "server.pem", "server.key", "supernode-0.key",
                                       "supernode-1.pub"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_a_channel_trace_is_read_before_any_process_starts_and_sent_with_its_absolute_path(trace_file, tmp_path,
                                                                                          monkeypatch):
    """`fedmoe deploy local` with `wireless.trace`: a bad trace file is refused in one line before anything
    starts; a good one reaches the SuperNodes as an absolute path (they run in other folders)."""
    from fedmoe.deploy.local import validate_run
    from fedmoe.wireless.trace_file import TraceFormatError

    rows = [(k, t, -100.0 - k, 0) for k in range(3) for t in (0.0, 1.0)]
    good = trace_file(rows)
    monkeypatch.chdir(good.parent)
    base = ["partition.num_devices=3", "federated.clients_per_round=3"]
    _, sets, _ = validate_run("default", [*base, f"wireless.trace.path={good.name}"], None)
    assert sets[-1] == f"wireless.trace.path={good.resolve()}"
    available = good.parent / "on.csv"
    available.write_text("device,time_s,available\n0,0,1\n")
    _, sets, _ = validate_run("default", [*base, "federated.dynamics.availability={model='trace', path='on.csv'}"],
                              None)
    assert sets[-1] == f"federated.dynamics.availability.path={available.resolve()}"  # every file setting
    bad = trace_file([(7, 0.0, -100.0, 0)], name="bad.csv")
    with pytest.raises(TraceFormatError, match=r"bad.csv.*unknown device id 7"):
        validate_run("default", [*base, f"wireless.trace.path={bad}"], None)
    _, plain, _ = validate_run("default", base, None)
    assert plain == base


@pytest.mark.parametrize("cpus, nodes, threads", [(2, 3, "1"), (8, 3, "2"), (16, 4, "4"), (None, 2, "1")])
def test_each_supernode_gets_its_share_of_the_cpus_as_torch_threads(tmp_path, monkeypatch, cpus, nodes, threads):
    """Three ClientApps training at once with a thread per core each oversubscribe the machine (Ray's virtual
    clients run OMP_NUM_THREADS = their num_cpus): each SuperNode's processes get CPUs / SuperNodes threads."""
    import os

    from fedmoe.deploy.local import LocalCluster

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    cluster = LocalCluster(tmp_path / "deploy", nodes=nodes)
    started = {}
    monkeypatch.setattr(cluster.procs, "start", lambda name, argv, env=None, cwd=None: started.update(env=env))
    cluster.start_supernode(0, 9999)
    assert started["env"]["OMP_NUM_THREADS"] == threads and started["env"]["FLWR_HOME"].endswith("supernode-0")


def test_the_error_of_a_failed_run_is_found_in_its_log(tmp_path):
    from fedmoe.deploy.local import DeployError, RunResult, check_result

    log = tmp_path / "flwr-run.log"
    log.write_text("[    30.1 s] INFO :      [ROUND 1/3]\n"
                   "[    31.0 s] ERROR :     ServerApp raised an exception\n"
                   "[    31.0 s] Traceback (most recent call last):\n"
                   "[    31.0 s]   File \"x.py\", line 1, in <module>\n"
                   "[    31.0 s] RuntimeError: node 42 failed the device query: ValueError: node config partition-id 5 "
                   "is outside [0, 2)\n")
    result = RunResult(7, "finished:failed", 1, 40.0, log, tmp_path / "run")
    with pytest.raises(DeployError) as err:
        check_result(result)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "run 7 ended with status 'finished:failed': RuntimeError: node 42 failed the device query" in message
    assert "partition-id 5 is outside [0, 2)" in message and str(log) in message
    log.write_text("[    31.0 s] nothing useful\n")
    with pytest.raises(DeployError, match=r"^run 7 ended with status 'finished:failed'; see "):
        check_result(result)
