"""A private network for the deployment on one machine: a loopback no other user can reach.

Flower 1.41 (open source) authenticates nobody on the SuperLink's Control API: whoever
reaches its port can register SuperNode keys and ``flwr run`` a ServerApp of their own,
which then runs as the user who started the SuperLink (and ClientApps on every SuperNode).
Account authentication (OIDC, ``FLWR_OIDC_ENABLED=1``) exists only in Flower Enterprise
(``flwr.ee``); without it the SuperLink exits with "OIDC account authentication is
unavailable in this Flower distribution". ``--superexec-auth-secret-file`` authenticates
the SuperExec on the runtime API in ``--isolation process`` only, not the Control API. And
127.0.0.1 is shared by every user of a machine. So ``fedmoe deploy local`` runs its
SuperLink, SuperNodes and ``flwr`` CLI in a network namespace of their own
(``unshare --user --map-root-user --net``): a fresh loopback that only processes started
inside it can reach, and that disappears with them. Other users of the machine cannot
connect to any of its ports, whatever they know (``ca.crt``, the port).

What stays open: processes of the *same* user can enter the namespace (``nsenter``) or
read the deployment's files anyway; the kernel's user-namespace feature must be allowed
for unprivileged users (it is on most distributions; some restrict it, and then the
launcher refuses unless told ``--network shared``, which keeps the old, reachable set-up).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
from typing import Sequence

ENV = "FEDMOE_PRIVATE_NETWORK"
"""Set to ``1`` in the environment of a process started by :func:`private_network_argv`."""

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sH14s"  # struct ifreq: the interface name, then the flags (short) in the union


class PrivateNetworkError(RuntimeError):
    """No private network can be made on this machine (one-line message saying what to do)."""


def private_network_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run in a new user and network namespace (module docstring).

    The command starts with its loopback down: it must call :func:`bring_loopback_up` (which
    :func:`enter_private_network` does) before it listens or connects. A
    :class:`PrivateNetworkError` if ``unshare`` (util-linux) is not installed.
    """
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        raise PrivateNetworkError("no private network on this machine (it needs Linux and util-linux's `unshare`); "
                                  "run with --network shared to accept that every local user can reach the SuperLink")
    return [unshare, "--user", "--map-root-user", "--net", "--", *argv]


def bring_loopback_up() -> None:
    """Set the ``lo`` interface of this process's network namespace up (a new namespace has it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack(_IFREQ, b"lo", 0, b"")
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP, b""))


def in_private_network() -> bool:
    """Whether this process was started by :func:`private_network_argv` (its environment says so)."""
    return os.environ.get(ENV) == "1"


def enter_private_network() -> None:
    """In a process started in a private network: bring its loopback up, or fail in one line."""
    try:
        bring_loopback_up()
    except OSError as err:
        raise PrivateNetworkError(f"the private network's loopback cannot be set up ({err.strerror or err}); this "
                                  "machine restricts user namespaces: run with --network shared to accept that "
                                  "every local user can reach the SuperLink") from None


def check_private_network(timeout: float = 30.0) -> None:
    """A :class:`PrivateNetworkError` (one line, saying what to do) unless this machine lets this user
    make a private network whose loopback comes up; checked with a throw-away one."""
    probe = [sys.executable, "-c", "from fedmoe.deploy.netns import bring_loopback_up; bring_loopback_up()"]
    try:
        done = subprocess.run(private_network_argv(probe), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        done = subprocess.CompletedProcess(probe, 1, "", str(err))
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        raise PrivateNetworkError(f"no private network on this machine ({lines[-1] if lines else 'status '}"
                                  f"{'' if lines else done.returncode}); user namespaces are restricted here: run "
                                  "with --network shared to accept that every local user can reach the SuperLink")


def run_in_private_network(argv: Sequence[str]) -> int:
    """Run ``argv`` (a command that calls :func:`enter_private_network` first when
    :func:`in_private_network`) in a private network and return its exit status.

    Its output goes where this process's goes. SIGINT reaches it from the terminal as it
    reaches this process; SIGTERM to this process is passed on to it; if this process dies,
    the kernel sends it SIGTERM (:func:`fedmoe.deploy.processes.die_with_parent`), so it
    stops the processes it started.
    """
    import signal

    from fedmoe.deploy.processes import die_with_parent

    check_private_network()
    child = subprocess.Popen(private_network_argv(argv), env={**os.environ, ENV: "1"}, preexec_fn=die_with_parent)

    def forward(signum, frame):  # noqa: ARG001 - signal handler signature
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got the same SIGINT: wait for its clean-up
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
