"""Several hosts emulated on one Linux machine: one network namespace per host, joined by veth
pairs to a bridge on a private subnet (root and iproute2's ``ip`` required).

Layout for hosts ``h_0 … h_{n-1}`` and a unique ``prefix``::

    namespace <prefix>-sw           the switch: bridge <prefix>br, one veth end per host, no address
    namespace <prefix>-<host>       a host: lo, and eth0 (the other veth end) with 10.231.0.(k+1)/24

Nothing is created in the machine's own network namespace (each veth pair is made directly inside
the two namespaces it joins), so the machine's interfaces, routes and addresses are untouched and
the subnet exists only between these namespaces. :meth:`EmulatedHosts.remove` deletes every
namespace of the prefix (which deletes their links); :func:`leftovers` lists what is still there.

A command runs on a host as ``ip netns exec <prefix>-<host> <argv>`` (:meth:`EmulatedHosts.argv`):
``ip`` enters the namespace and execs the command, so its PID is the command's and a
:class:`fedmoe.deploy.processes.ProcessSet` stops it by PID as any other.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Sequence

SUBNET = ipaddress.ip_network("10.231.0.0/24")
"""The private test subnet: it exists only inside the namespaces of one :class:`EmulatedHosts`."""

IFACE = "eth0"
"""Name of each host's interface inside its namespace."""

_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class HostsError(RuntimeError):
    """Namespaces cannot be made here, or an ``ip`` command failed (one-line message)."""


def ip_command() -> str:
    """Absolute path of iproute2's ``ip``; :class:`HostsError` if it is missing."""
    found = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if found is None:
        raise HostsError("iproute2's `ip` is not installed")
    return found


def _ip(*args: str, timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run([ip_command(), *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostsError(f"ip {' '.join(args)}: no answer within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise HostsError(f"ip {' '.join(args)}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done


def namespaces() -> list[str]:
    """Names of the machine's named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def leftovers(prefix: str) -> list[str]:
    """Named namespaces whose name starts with ``prefix-`` (what :meth:`EmulatedHosts.remove` deletes)."""
    return [n for n in namespaces() if n.startswith(f"{prefix}-")]


def why_unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``, not Linux), or ``None``."""
    if not os.uname().sysname == "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces, veth pairs and a bridge need root (this test runs as uid {})".format(os.geteuid())
    try:
        ip_command()
    except HostsError as err:
        return str(err)
    return None


def unique_prefix() -> str:
    """A short prefix no other test uses: ``fm`` and 6 random hex digits (interface names fit 15 characters)."""
    return f"fm{uuid.uuid4().hex[:6]}"


@dataclass
class EmulatedHosts:
    """Hosts ``names`` (lower-case, at most 8 characters each) in their own namespaces on :data:`SUBNET`.

    >>> with EmulatedHosts(["link", "node0", "node1", "op"]) as hosts:   # doctest: +SKIP
    ...     hosts.address("link")                                        # '10.231.0.1'
    ...     subprocess.run(hosts.argv("op", ["ping", "-c1", hosts.address("link")]))
    """

    names: Sequence[str]
    prefix: str = field(default_factory=unique_prefix)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = [n for n in self.names if not _NAME.match(n)]
        if bad or len(set(self.names)) != len(self.names) or not self.names:
            raise HostsError("host names: expected distinct lower-case names of 1-8 characters, "
                             f"got {list(self.names)}")
        if len(self.names) > SUBNET.num_addresses - 2:
            raise HostsError(f"{len(self.names)} hosts do not fit {SUBNET}")

    # ------------------------------------------------------------------ names

    def netns(self, host: str) -> str:
        if host not in self.names:
            raise HostsError(f"no host {host!r} (hosts: {', '.join(self.names)})")
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def address(self, host: str) -> str:
        """The host's address on :data:`SUBNET`: the (k+1)-th, for the k-th host."""
        self.netns(host)
        return str(SUBNET.network_address + 1 + list(self.names).index(host))

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host``."""
        return [ip_command(), "netns", "exec", self.netns(host), *argv]

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> "EmulatedHosts":
        try:
            self.create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _add_netns(self, name: str) -> None:
        self.created.append(name)  # noted first: remove() deletes it even if creation half-failed
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def create(self) -> None:
        """The switch namespace with its bridge, then each host's namespace and its veth pair to the bridge."""
        reason = why_unavailable()
        if reason:
            raise HostsError(reason)
        bridge = f"{self.prefix}br"
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
        _ip("-n", self.switch, "link", "set", bridge, "up")
        for k, host in enumerate(self.names):
            ns = self.netns(host)
            self._add_netns(ns)
            port = f"{self.prefix}p{k}"
            _ip("link", "add", IFACE, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", bridge)
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/{SUBNET.prefixlen}", "dev", IFACE)
            _ip("-n", ns, "link", "set", IFACE, "up")

    def set_link(self, host: str, up: bool) -> None:
        """Take the host's interface down (its cable pulled) or up again."""
        _ip("-n", self.netns(host), "link", "set", IFACE, "up" if up else "down")

    def remove(self) -> list[str]:
        """Delete every namespace of this prefix (and with them their veth pairs and the bridge);
        the names that could not be deleted (none, normally)."""
        for name in [*self.created, *leftovers(self.prefix)]:
            _ip("netns", "delete", name, check=False)
        self.created.clear()
        return leftovers(self.prefix)
