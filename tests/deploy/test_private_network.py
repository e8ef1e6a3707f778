"""The private network of ``fedmoe deploy local`` (fedmoe.deploy.netns): a port opened inside it on
127.0.0.1 cannot be reached by anyone outside it, other users of the machine included, while the
same listener in the shared network can (so the test can fail). 127.0.0.1 only; every process started
here is stopped by PID."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from fedmoe.deploy.netns import PrivateNetworkError, private_network_argv

TOKEN = b"fedmoe-private-listener"

LISTENER = f"""
import socket, sys
from fedmoe.deploy.netns import enter_private_network, in_private_network
if in_private_network():
    enter_private_network()
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
port = server.getsockname()[1]
with socket.create_connection(("127.0.0.1", port), timeout=5):  # reachable from inside
    pass
server.accept()[0].close()
print(port, flush=True)
server.settimeout(10)
try:
    conn, _ = server.accept()
    conn.sendall({TOKEN!r})
    conn.close()
except socket.timeout:
    pass
"""


def start_listener(private: bool) -> tuple[subprocess.Popen, int]:
    argv = [sys.executable, "-c", LISTENER]
    env = None
    if private:
        import os

        from fedmoe.deploy.netns import ENV

        argv, env = private_network_argv(argv), {**os.environ, ENV: "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise PrivateNetworkError(proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:])
    return proc, int(line)


def reached(port: int) -> bool:
    """Whether a connection to 127.0.0.1:``port`` from this (outside) network gets the listener's token."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.settimeout(3)
            return s.recv(64) == TOKEN
    except OSError:
        return False


@pytest.mark.parametrize("private", [False, True], ids=["shared network", "private network"])
def test_a_port_in_the_private_network_is_out_of_reach(private):
    """Issue 18, finding 6: any local user could reach the SuperLink of ``fedmoe deploy local`` on
    127.0.0.1 and use its unauthenticated Control API. In the private network nobody outside can."""
    try:
        proc, port = start_listener(private)
    except PrivateNetworkError as err:
        pytest.skip(f"no private network on this machine: {err}")
    try:
        assert reached(port) is not private
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    time.sleep(0)  # nothing left running: the listener (and its namespace) are gone


def test_deploy_local_help_says_what_the_control_api_leaves_open(capsys):
    from fedmoe.cli import main

    with pytest.raises(SystemExit):
        main(["deploy", "local", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Control API" in text and "authenticates nobody" in text and "--network" in text
