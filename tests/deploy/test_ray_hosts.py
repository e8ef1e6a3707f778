"""``fedmoe run --ray-address`` on a Ray head and a worker on two emulated hosts (fedmoe.deploy.hosts):
each node's ``ray start`` runs in its own network namespace with ``--node-ip-address`` its address on
the private subnet, the worker joins the head there, and the run is started on the head host, as the
docs' "On separate machines" says (docs/federated.md). Same checks as the cluster on 127.0.0.1
(tests/deploy/test_ray_cluster.py). Root only (skipped with the reason otherwise); every process is
stopped by PID and the namespaces removed, also on failure. About 1.5 minutes: ``deploy`` and ``cluster``."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import make_hosts, run_on
from tests.deploy.test_ray_cluster import LocalRayCluster, run_attached, started

pytestmark = [pytest.mark.deploy, pytest.mark.cluster, pytest.mark.timeout(900)]

HEAD_PORT = 6379


class HostsRayCluster(LocalRayCluster):
    """:class:`LocalRayCluster` with its head on host ``head`` and its worker on host ``worker``."""

    def __init__(self, hosts) -> None:
        super().__init__()
        self.hosts = hosts
        self.port = HEAD_PORT  # each host has its own network: Ray's usual port is free there
        self.address = f"{hosts.address('head')}:{self.port}"

    def node_ip(self, name: str) -> str:
        return self.hosts.address(name)

    def on_node(self, name: str, argv: list[str]) -> list[str]:
        return self.hosts.argv(name, argv)

    def alive_nodes(self) -> int:
        code = ("from fedmoe.simulation import check_ray_cluster; "
                f"print(len(check_ray_cluster({self.address!r}, timeout_s=5.0) or []))")
        done = run_on(self.hosts, "head", code, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])


@pytest.fixture(scope="module")
def hosts():
    yield from make_hosts(["head", "worker"])


@pytest.fixture
def ray_hosts(hosts):
    yield from started(HostsRayCluster(hosts))


def test_tiny_run_on_a_ray_head_and_worker_on_two_hosts(ray_hosts, tmp_path):
    assert ray_hosts.address == "10.231.0.1:6379"
    run_attached(ray_hosts, tmp_path)
    # each node registered with its own host's address, not the machine's
    for node, ip in (("head", "10.231.0.1"), ("worker", "10.231.0.2")):
        raylet = list(ray_hosts.node_dir(node).glob("session_*/logs/raylet.out"))
        assert raylet and any(ip in f.read_text(errors="replace") for f in raylet), node
