"""Command lines and CLI calls of Flower 1.41's deployment runtime (``flower-superlink``,
``flower-supernode``, ``flwr``), with TLS and SuperNode authentication.

Facts this module relies on (verified with flwr 1.41.0):

* the SuperLink serves the Fleet, Control and Runtime APIs on one HTTPS port (``--host``,
  ``--port``) and logs ``Uvicorn running on https://HOST:PORT`` when it listens;
* it starts ``flower-superexec`` *by name*, so the folder of the Flower executables must be on
  ``PATH`` (:func:`runtime_env`);
* the ``flwr`` CLI reads its connections from ``$FLWR_HOME/config.toml``
  (:func:`write_connection`); ``root-certificates`` there must be an absolute path;
* with ``--enable-supernode-auth`` only SuperNodes whose public key was registered
  (``flwr supernode register``) may activate; a SuperNode logs ``SuperNode ID: N`` once in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from fedmoe.deploy.pki import CA_CERT, SERVER_CERT, SERVER_KEY

SUPERLINK_READY = r"Uvicorn running on https://"
SUPERNODE_READY = r"SuperNode ID: (\d+)"
RUN_STARTED = r"Successfully started run (\d+)"
CONNECTION = "fedmoe-deploy"
"""Name of the connection :func:`write_connection` writes (the second argument of ``flwr run``)."""

SUPEREXEC_POLL_S = 0.25
"""How often a SuperNode's ``flower-superexec`` asks it for a message to run, s (Flower's default: 1 s, set with
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``): every message waits for this poll before its ``flwr-clientapp`` starts."""

QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1",
             "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": f"{SUPEREXEC_POLL_S:g}"}


class FlowerError(RuntimeError):
    """A Flower executable is missing or a ``flwr`` CLI call failed (one-line message)."""


def bin_dir() -> Path:
    """The folder of this interpreter's executables (the virtualenv's ``bin``), where flwr installs its commands."""
    return Path(sys.executable).parent


def executable(name: str) -> str:
    """Absolute path of a Flower command: next to this interpreter, else on ``PATH``."""
    candidate = bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FlowerError(f"{name}: not found next to {sys.executable} nor on PATH (is flwr installed?)")
    return found


def runtime_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the Flower executables first on ``PATH``,
    telemetry and update checks off, unbuffered Python output, the SuperExec's task poll at
    :data:`SUPEREXEC_POLL_S`."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(bin_dir()), env.get("PATH", "")]).rstrip(os.pathsep)
    env.update(QUIET_ENV)
    return env


@dataclass(frozen=True)
class TLSFiles:
    """The files of :mod:`fedmoe.deploy.pki` a deployment needs."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> "TLSFiles":
        folder = Path(folder).resolve()
        return cls(folder / CA_CERT, folder / SERVER_CERT, folder / SERVER_KEY)


def superlink_argv(tls: TLSFiles, database: Path | str, host: str, port: int) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication, no dependency installation at run time."""
    return [executable("flower-superlink"),
            "--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert),
            "--ssl-keyfile", str(tls.server_key),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--database", str(database), "--host", host, "--port", str(port)]


def node_config(partition_id: int, num_partitions: int, state_dir: Path | None = None) -> str:
    """The ``--node-config`` value that tells :mod:`fedmoe.clients.app` which device this SuperNode is, and
    where it keeps its local state between rounds (:mod:`fedmoe.federated.device_state`)."""
    text = f"partition-id={partition_id} num-partitions={num_partitions}"
    return text if state_dir is None else f"{text} state-dir={_toml_str(str(state_dir))}"


def supernode_argv(superlink: str, partition_id: int, num_partitions: int, port: int, *,
                   ca_cert: Path | None = None, private_key: Path | None = None, insecure: bool = False,
                   max_wait_s: float | None = None, host: str = "127.0.0.1",
                   state_dir: Path | None = None) -> list[str]:
    """``flower-supernode`` dialling ``superlink`` (``host:port``) with the CA and its authentication key.

    ``insecure=True`` (plaintext) and ``max_wait_s`` exist to show refusals: a plaintext SuperNode
    retries a TLS SuperLink forever unless it has a ``--max-wait-time``. ``state_dir``: the
    device's state folder (``state-dir`` in its node config).
    """
    argv = [executable("flower-supernode"), "--superlink", superlink]
    if insecure:
        argv.append("--insecure")
    if ca_cert is not None:
        argv += ["--root-certificates", str(ca_cert)]
    if private_key is not None:
        argv += ["--auth-supernode-private-key", str(private_key)]
    if max_wait_s is not None:
        argv += ["--max-wait-time", f"{max_wait_s:g}"]
    return argv + ["--node-config", node_config(partition_id, num_partitions, state_dir), "--host", host,
                   "--port", str(port)]


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a valid TOML basic string


def write_connection(flwr_home: Path, address: str, ca_cert: Path, name: str = CONNECTION) -> Path:
    """``$FLWR_HOME/config.toml`` with one default connection ``name`` to ``address`` over TLS."""
    flwr_home = Path(flwr_home)
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f"[superlink]\ndefault = {_toml_str(name)}\n\n"
                    f"[superlink.{name}]\naddress = {_toml_str(address)}\n"
                    f"root-certificates = {_toml_str(str(Path(ca_cert).resolve()))}\n")
    return path


def flwr(args: Sequence[str], flwr_home: Path, timeout: float, env: Mapping[str, str] | None = None,
         cwd: Path | None = None, wrap: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """One ``flwr`` CLI call with its own ``FLWR_HOME``, bounded by ``timeout`` s; output captured.
    ``wrap``: a command prefix it runs under (e.g. ``ip netns exec HOST``, :mod:`fedmoe.deploy.hosts`)."""
    full_env = {**runtime_env(env), "FLWR_HOME": str(flwr_home)}
    try:
        return subprocess.run([*wrap, executable("flwr"), *args], env=full_env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FlowerError(f"flwr {' '.join(args[:2])}: no answer within {timeout:.0f} s") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def register_supernode(public_key: Path, flwr_home: Path, timeout: float = 60.0,
                       env: Mapping[str, str] | None = None, connection: str = CONNECTION,
                       wrap: Sequence[str] = ()) -> int:
    """``flwr supernode register PUBLIC_KEY CONNECTION``; the node id the SuperLink gave the key."""
    res = flwr(["supernode", "register", str(public_key), connection], flwr_home, timeout, env, wrap=wrap)
    match = re.search(r"SuperNode (\d+) registered", res.stdout)
    if res.returncode != 0 or match is None:
        raise FlowerError(f"flwr supernode register {public_key}: {_last_line(res.stdout + res.stderr)}")
    return int(match.group(1))


def run_status(run_id: int, flwr_home: Path, timeout: float = 60.0, env: Mapping[str, str] | None = None,
               connection: str = CONNECTION, wrap: Sequence[str] = ()) -> str:
    """The status of a run as ``flwr ls`` reports it, e.g. ``finished:completed``."""
    res = flwr(["ls", connection, "--run-id", str(run_id), "--format", "json"], flwr_home, timeout, env, wrap=wrap)
    try:
        doc = json.loads(res.stdout)
        runs = doc.get("runs", [])
        return str(runs[0]["status"]) if runs else "unknown"
    except (ValueError, KeyError, IndexError, TypeError):
        raise FlowerError(f"flwr ls --run-id {run_id}: {_last_line(res.stdout + res.stderr)}") from None
