"""Emulated hosts (fedmoe.deploy.hosts): namespaces on a private subnet that reach each other through
the bridge, nothing of theirs in the machine's own network, a pulled cable that cuts a host off and
back, and nothing left after removal. Root only (skipped with the reason elsewhere); a few seconds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedmoe.deploy.hosts import SUBNET, EmulatedHosts, HostsError, ip_command, leftovers
from tests.deploy.conftest import make_hosts, run_on

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

SERVE = """
import socket
s = socket.create_server(("{addr}", 7001))
s.settimeout(60)
print("listening", flush=True)
c, peer = s.accept()
c.sendall(b"hello " + peer[0].encode())
c.close()
"""

DIAL = """
import socket, sys
try:
    with socket.create_connection(("{addr}", 7001), timeout=3) as s:
        s.settimeout(3)
        print(s.recv(64).decode())
except OSError as err:
    print("failed", type(err).__name__)
"""


@pytest.fixture(scope="module")
def hosts():
    yield from make_hosts(["a", "b"])


def _serve(hosts, host):
    proc = subprocess.Popen(hosts.argv(host, [sys.executable, "-c", SERVE.format(addr=hosts.address(host))]),
                            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def _stop(proc):
    proc.kill()
    proc.wait(10)
    proc.stdout.close()


def test_hosts_reach_each_other_over_the_bridge_and_not_when_a_cable_is_pulled(hosts):
    assert [hosts.address("a"), hosts.address("b")] == ["10.231.0.1", "10.231.0.2"]
    server = _serve(hosts, "b")
    try:
        out = run_on(hosts, "a", DIAL.format(addr=hosts.address("b"))).stdout.strip()
        assert out == f"hello {hosts.address('a')}"  # the peer is host a's own address: it came over eth0
    finally:
        _stop(server)
    server = _serve(hosts, "b")
    try:
        hosts.set_link("b", up=False)
        assert run_on(hosts, "a", DIAL.format(addr=hosts.address("b"))).stdout.startswith("failed")
        hosts.set_link("b", up=True)
        assert run_on(hosts, "a", DIAL.format(addr=hosts.address("b"))).stdout.strip().startswith("hello")
    finally:
        hosts.set_link("b", up=True)
        _stop(server)


def test_nothing_of_the_hosts_is_in_the_machines_own_network(hosts):
    own = subprocess.run([ip_command(), "-o", "addr"], capture_output=True, text=True, timeout=20).stdout
    links = subprocess.run([ip_command(), "-o", "link"], capture_output=True, text=True, timeout=20).stdout
    assert str(SUBNET.network_address)[:-1] not in own  # no 10.231.0.x address out here
    assert hosts.prefix not in links  # no veth end or bridge of ours out here


def test_removal_leaves_nothing_and_a_failed_creation_is_undone():
    hosts = EmulatedHosts(["x"])
    try:
        hosts.create()
        assert sorted(leftovers(hosts.prefix)) == sorted([hosts.switch, hosts.netns("x")])
    except HostsError as err:
        pytest.skip(f"no emulated hosts here: {err}")
    finally:
        assert hosts.remove() == [] and leftovers(hosts.prefix) == []
    with pytest.raises(HostsError, match="expected distinct lower-case names"):
        EmulatedHosts(["x", "x"])
    broken = EmulatedHosts(["y"])
    broken.address = lambda host: "10.231.0.300"  # an address ip refuses: creation fails half-way
    with pytest.raises(HostsError, match="ip -n .* addr add 10.231.0.300"):
        with broken:
            pass
    assert leftovers(broken.prefix) == []
