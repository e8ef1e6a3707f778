"""Fixtures of the tests on emulated hosts (:mod:`fedmoe.deploy.hosts`): root and iproute2 needed,
else the test is skipped with the reason. Every namespace the test made is removed afterwards, and
the fixture fails if any is left."""

from __future__ import annotations

import subprocess
import sys
from typing import Sequence

import pytest

from fedmoe.deploy.hosts import EmulatedHosts, HostsError, leftovers, why_unavailable


def make_hosts(names: Sequence[str]):
    """A generator for a fixture: :class:`EmulatedHosts` ``names``, removed (and checked gone) afterwards."""
    reason = why_unavailable()
    if reason:
        pytest.skip(f"no emulated hosts here: {reason}")
    hosts = EmulatedHosts(names)
    try:
        try:
            hosts.create()
        except HostsError as err:
            pytest.skip(f"no emulated hosts here: {err}")
        yield hosts
    finally:
        left = hosts.remove()
        assert not left and not leftovers(hosts.prefix), f"namespaces left behind: {left}"


def run_on(hosts: EmulatedHosts, host: str, code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Python ``code`` run on emulated ``host`` (output captured, bounded by ``timeout`` s)."""
    return subprocess.run(hosts.argv(host, [sys.executable, "-c", code]), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
