"""Real deployment on Flower's runtime: ``flower-superlink`` and ``flower-supernode`` processes
running the same ServerApp (:data:`fedmoe.strategies.server_app.app`) and ClientApp
(:data:`fedmoe.clients.app.app`) as the simulation, with TLS and SuperNode authentication.

Modules, one job each:

:mod:`fedmoe.deploy.pki`
    CA, SuperLink certificate and SuperNode keys (``fedmoe deploy certs``, ``fedmoe deploy node-key``).
:mod:`fedmoe.deploy.processes`
    start background processes; stop every one of them by PID, with bounded waits.
:mod:`fedmoe.deploy.flower`
    the command lines of the Flower executables, the ``flwr`` CLI connection, key registration.
:mod:`fedmoe.deploy.local`
    a SuperLink and N SuperNodes on 127.0.0.1 and ``flwr run`` of this project (``fedmoe deploy local``).
:mod:`fedmoe.deploy.netns`
    the private network (a network namespace) ``fedmoe deploy local`` runs in, out of other users' reach.
:mod:`fedmoe.deploy.reach`
    whether the SuperLink answers on the address it is dialled on, with a certificate naming it
    (``fedmoe deploy check``).
:mod:`fedmoe.deploy.hosts`
    several hosts emulated on one Linux machine: network namespaces, veth pairs and a bridge on a private subnet.
:mod:`fedmoe.deploy.multihost`
    the deployment spread over emulated hosts, and faults on its real processes (the multi-host tests).

The commands for separate machines are in the README, "Deployment on separate machines".
"""
