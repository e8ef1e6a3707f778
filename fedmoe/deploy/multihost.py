"""The deployment of :class:`fedmoe.deploy.local.LocalCluster` spread over emulated hosts
(:class:`fedmoe.deploy.hosts.EmulatedHosts`): the SuperLink on host ``link``, SuperNode ``k`` on
host ``node<k>``, and the operator's ``flwr`` calls (key registration, ``flwr run``, ``flwr ls``) on
host ``op``, each in its own network namespace on a private subnet. These are the steps of the
README's "Deployment on separate machines", with the namespaces standing for the machines:

1. certificates whose subject alternative name is the SuperLink host's address (checked offline,
   :func:`fedmoe.deploy.reach.check_certificate_names`, before anything starts);
2. the SuperLink on ``ADDRESS:9092`` with TLS and SuperNode authentication;
3. from the operator: a TLS handshake verified against that address
   (:func:`fedmoe.deploy.reach.check_superlink`), then one ``flwr supernode register`` per key;
4. each SuperNode dialling ``ADDRESS:9092`` with the CA, its private key and a ``state-dir`` that
   belongs to its device (kept across restarts of the SuperNode);
5. ``flwr run`` from the operator.

Faults are made on the real processes: :meth:`HostsCluster.kill_supernode` (SIGKILL by PID, with
its ClientApp processes), :meth:`HostsCluster.restart_supernode` (same key and state folder, once
the SuperLink lets the key in again),
:meth:`HostsCluster.kill_superlink` / :meth:`HostsCluster.restart_superlink` (same database), and
:meth:`fedmoe.deploy.hosts.EmulatedHosts.set_link` (a host's cable pulled and put back).
The caller owns the :class:`~fedmoe.deploy.hosts.EmulatedHosts` and removes them after the cluster stops
(:meth:`fedmoe.deploy.local.LocalCluster.stop`).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

from fedmoe.deploy import flower
from fedmoe.deploy.hosts import EmulatedHosts
from fedmoe.deploy.local import DeployError, LocalCluster
from fedmoe.deploy.pki import supernode_key_names, write_deployment_pki
from fedmoe.deploy.processes import ProcessError, ProcessSet, Started
from fedmoe.deploy.reach import ReachError, check_certificate_names

SUPERLINK_PORT = 9092
SUPERNODE_PORT = 9094
"""Ports on each emulated host (every host has its own network, so every SuperNode can use the same one)."""


def host_names(nodes: int) -> list[str]:
    """The emulated hosts of a deployment with ``nodes`` SuperNodes."""
    return ["link", *(f"node{k}" for k in range(nodes)), "op"]


class HostProcessSet(ProcessSet):
    """A :class:`ProcessSet` that starts each process on the emulated host ``place(name)`` gives."""

    def __init__(self, hosts: EmulatedHosts, place: Callable[[str], str], log_dir: Path,
                 env: Mapping[str, str] | None = None, term_timeout: float = 15.0) -> None:
        super().__init__(log_dir, env, term_timeout)
        self.hosts, self.place = hosts, place

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Started:
        host = self.place(name)
        wrap = self.hosts.argv(host, [])
        argv = list(argv)[len(wrap):] if list(argv)[:len(wrap)] == wrap else list(argv)  # flwr-run is pre-wrapped
        return super().start(name, self.hosts.argv(host, argv), env, cwd)


def place(name: str) -> str:
    """The host of a process of :class:`HostsCluster`: by its name."""
    if name.startswith("superlink"):
        return "link"
    if name.startswith("supernode-"):
        return "node" + name.split("-")[1]
    return "op"


class HostsCluster(LocalCluster):
    """:class:`LocalCluster` on emulated hosts (module docstring). ``cert_hosts``: the names the server
    certificate is made for (default: the SuperLink host's address); another address shows the refusal."""

    def __init__(self, out: Path, hosts: EmulatedHosts, nodes: int, cert_hosts: Sequence[str] | None = None,
                 **kwargs) -> None:
        super().__init__(out, nodes, **kwargs)
        self.hosts = hosts
        self.link_host = hosts.address("link")
        self.cert_hosts = list(cert_hosts) if cert_hosts is not None else [self.link_host]
        self.procs = HostProcessSet(hosts, place, self.out / "logs", self.env, self.procs.term_timeout)
        self.cli_wrap = hosts.argv("op", [])
        self.superlink_port = SUPERLINK_PORT

    @property
    def address(self) -> str:
        return f"{self.link_host}:{self.superlink_port}"

    def make_pki(self) -> None:
        write_deployment_pki(self.pki, self.cert_hosts, self.nodes, private=True)

    def start(self) -> None:
        """Steps 1-4 of the module docstring; a one-line :class:`DeployError` if the certificate does not
        name the SuperLink's address or the operator cannot verify it over TLS."""
        t0 = time.perf_counter()
        self.make_pki()
        try:
            check_certificate_names(self.tls.server_cert, self.address)
        except ReachError as err:
            raise DeployError(str(err)) from None
        self.start_superlink()
        flower.write_connection(self.cli_home, self.address, self.tls.ca_cert)
        self.check_reach()
        for k in range(self.nodes):
            pub = self.pki / supernode_key_names(k)[1]
            self.node_ids[k] = flower.register_supernode(pub, self.cli_home, env=self.env, wrap=self.cli_wrap)
        for k in range(self.nodes):
            self.supernodes[k] = self.start_supernode(k, SUPERNODE_PORT, private_key=self.node_key(k))
        for proc in self.supernodes.values():
            proc.wait_for_log(flower.SUPERNODE_READY, self.ready_timeout)
        self.echo(f"SuperLink on {self.address}, {self.nodes} SuperNodes on "
                  f"{', '.join(self.hosts.address(f'node{k}') for k in range(self.nodes))}; "
                  f"start-up {time.perf_counter() - t0:.1f} s")

    def start_superlink(self, name: str = "superlink") -> Started:
        home = self.out / "home" / "superlink"
        home.mkdir(parents=True, exist_ok=True)
        self.superlink = self.procs.start(
            name, flower.superlink_argv(self.tls, self.out / "superlink.db", self.link_host, self.superlink_port),
            env={"FLWR_HOME": str(home)}, cwd=home)
        self.superlink.wait_for_log(flower.SUPERLINK_READY, self.ready_timeout)
        return self.superlink

    def check_reach(self, timeout: float = 60.0) -> str:
        """``fedmoe deploy check`` on the operator's host: the one line it prints; a
        :class:`DeployError` with its one-line reason if the SuperLink cannot be verified there."""
        import subprocess

        argv = self.hosts.argv("op", [sys.executable, "-m", "fedmoe.cli", "deploy", "check", "--superlink",
                                      self.address, "--ca", str(self.tls.ca_cert)])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeployError(f"SuperLink {self.address}: the reach check gave no answer within {timeout:g} s"
                              ) from None
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        if done.returncode != 0:
            raise DeployError(lines[-1].removeprefix("fedmoe: error: ") if lines else f"status {done.returncode}")
        return lines[-1]

    def start_supernode(self, partition_id: int, port: int = SUPERNODE_PORT, *, name: str | None = None,
                        private_key: Path | None = None, ca_cert: Path | None | str = "default",
                        insecure: bool = False, max_wait_s: float | None = None,
                        num_partitions: int | None = None) -> Started:
        """SuperNode ``partition_id`` on host ``node<partition_id>``, with the FLWR_HOME and state folder of
        that device whatever ``name`` (a restarted SuperNode finds its state)."""
        name = name or f"supernode-{partition_id}"
        home = self.out / "home" / f"supernode-{partition_id}"
        home.mkdir(parents=True, exist_ok=True)
        ca = self.tls.ca_cert if ca_cert == "default" else ca_cert
        argv = flower.supernode_argv(self.address, partition_id,
                                     self.nodes if num_partitions is None else num_partitions, port, ca_cert=ca,
                                     private_key=private_key, insecure=insecure, max_wait_s=max_wait_s,
                                     host="127.0.0.1", state_dir=(home / "state").resolve())
        return self.procs.start(name, argv, env={"FLWR_HOME": str(home)}, cwd=home)

    # ------------------------------------------------------------------ faults

    def kill_supernode(self, k: int) -> list[int]:
        """SIGKILL SuperNode ``k`` and every process under it (its SuperExec, ClientApps); their PIDs."""
        return kill_tree(self.supernodes[k].pid)

    def restart_supernode(self, k: int, partition_id: int | None = None, timeout: float = 240.0,
                          pause: float = 5.0) -> Started:
        """SuperNode ``k`` started again on its host with its key and state folder (as device ``partition_id``,
        default ``k``); returns once it is in.

        The SuperLink refuses to activate a key whose node it still counts online (``[code: 2004] Failed to
        activate SuperNode``: up to 60 s after the last heartbeat of a killed one), so a refused start is
        tried again every ``pause`` s for up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            proc = self.start_supernode(k if partition_id is None else partition_id,
                                        name=f"supernode-{k}-restart{attempt}", private_key=self.node_key(k))
            try:
                proc.wait_for_log(flower.SUPERNODE_READY, max(deadline - time.monotonic(), 1.0))
            except ProcessError:
                if "Failed to activate SuperNode" not in proc.log_text() or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                continue
            self.supernodes[k] = proc
            return proc

    def kill_superlink(self) -> list[int]:
        """SIGKILL the SuperLink and every process under it (SuperExec, the running ServerApp); their PIDs."""
        if self.superlink is None:
            raise DeployError("no SuperLink to kill")
        return kill_tree(self.superlink.pid)

    def restart_superlink(self, attempt: int = 1) -> Started:
        """The SuperLink started again on the same address with the same database (registered keys kept)."""
        return self.start_superlink(name=f"superlink-restart{attempt}")


def kill_tree(pid: int, timeout: float = 15.0) -> list[int]:
    """SIGKILL process ``pid`` and its descendants; wait up to ``timeout`` s for them to be gone; their PIDs."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in procs]
