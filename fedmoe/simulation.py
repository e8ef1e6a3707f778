"""``fedmoe run``: a federated or split-learning simulation on Flower's Ray backend
(``flwr.simulation.run_simulation``).

One virtual SuperNode per device (``partition.num_devices``), each running
``fedmoe.clients.app:app`` with ``partition-id`` set by Flower; the ServerApp is
:func:`fedmoe.strategies.server_app.make_server_app` bound to the config. Each virtual client
gets ``federated.client_cpus`` CPUs, so ``cpus // client_cpus`` run at once.

Flower's own telemetry is switched off (no network at run time), as is the per-run
dependency installation.

By default every run starts its own local Ray (``address="local"``, so that neither
``RAY_ADDRESS`` nor a cluster started on this machine with ``ray start`` is joined by
accident). ``ray_address="HOST:PORT"`` (``fedmoe run --ray-address``), or the
``RAY_ADDRESS`` environment variable when no address is given, attaches the simulation to
a running Ray cluster instead (:func:`resolve_ray_address`); ``"local"`` forces the local
Ray even when ``RAY_ADDRESS`` is set.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Callable

from fedmoe.config import ConfigError, FedMoEConfig
from fedmoe.errors import UsageError
from fedmoe.federated.run_folder import CLIENT_STATE, check_run_folder, clear_run_folder, discard_failed_run
from fedmoe.files import check_folder_target, first_missing

log = logging.getLogger(__name__)

QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
             "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_DEDUP_LOGS": "0",
             "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


CLIENT_STATE_FOLDER = CLIENT_STATE
"""Where, inside the run folder, the virtual devices keep their local state (:mod:`fedmoe.federated.device_state`)."""


def _rounds_done(cfg: FedMoEConfig, out: Path | None, resume: bool) -> int:
    """Rounds the run to resume has completed (0 for a fresh run); a run that cannot be resumed
    fails here, before Ray starts (:class:`fedmoe.federated.resume.ResumeError`)."""
    if not resume:
        return 0
    from fedmoe.strategies.server_app import saved_run

    return saved_run(cfg, out).round


class RayClusterUnreachable(ConnectionError):
    """No Ray cluster (GCS) answers at the address given to attach to."""


RAY_ADDRESS_ENV = "RAY_ADDRESS"
LOCAL_RAY = "local"
RAY_CONNECT_TIMEOUT_S = 10.0
"""How long :func:`check_ray_cluster` waits for the cluster's head to answer."""

_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")


def resolve_ray_address(ray_address: str | None) -> str | None:
    """The Ray cluster to attach to: ``ray_address`` if given, else ``$RAY_ADDRESS`` if set and not
    empty, else ``None`` (start a local Ray). ``"local"`` (either way) means ``None``; anything else
    must be ``HOST:PORT``, the head's GCS address (``ray start --head --port PORT``)."""
    source = "--ray-address"
    if ray_address is None:
        ray_address, source = os.environ.get(RAY_ADDRESS_ENV) or None, RAY_ADDRESS_ENV
    if ray_address is None or ray_address.strip() == LOCAL_RAY:
        return None
    address = ray_address.strip()
    m = _HOST_PORT.match(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise UsageError(f"{source} {ray_address!r}: expected HOST:PORT of the Ray head (the --port of "
                         f"`ray start --head`), or {LOCAL_RAY!r}")
    return address


def check_ray_cluster(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> list[float] | None:
    """The CPUs of every alive node of the Ray cluster whose head (GCS) is at ``address``, asked
    within ``timeout_s`` (``None`` if the head wants an authentication token: ``ray.init`` sends it);
    :class:`RayClusterUnreachable` if no Ray head answers there in time. ``ray.init`` itself
    retries an unreachable address for minutes (measured: still retrying after 200 s with Ray 2.55)."""
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
            gcs_service_pb2.GetAllNodeInfoRequest(), timeout=timeout_s)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNAUTHENTICATED:
            return None
        what = {grpc.StatusCode.UNAVAILABLE: "nothing answers there",
                grpc.StatusCode.DEADLINE_EXCEEDED: f"no answer within {timeout_s:g} s",
                grpc.StatusCode.UNIMPLEMENTED: "what answers there is not a Ray head (GCS)",
                }.get(err.code(), err.code().name)
        raise RayClusterUnreachable(f"Ray cluster at {address}: {what} (start it with `ray start --head "
                                    f"--port PORT` and pass HOST:PORT of the head)") from None
    finally:
        channel.close()
    return [node.resources_total.get("CPU", 0.0) for node in reply.node_info_list
            if node.state == gcs_pb2.GcsNodeInfo.ALIVE]


def check_cluster_fits(cfg: FedMoEConfig, address: str, node_cpus: list[float]) -> None:
    """A virtual client (``federated.client_cpus``) must fit on one node of the cluster: Flower's
    backend fails on an empty actor pool in a thread, and the ServerApp then waits forever."""
    need = cfg.federated.client_cpus
    if not any(cpus >= need for cpus in node_cpus):
        have = ", ".join(f"{c:g}" for c in node_cpus) or "no alive node"
        raise ConfigError(f"federated.client_cpus={need} exceeds the CPUs of every node of the Ray cluster at "
                          f"{address} ({have})")


def backend_config(cfg: FedMoEConfig, num_cpus: int | None = None, ray_address: str | None = None) -> dict:
    """Ray backend settings: CPUs per virtual client, and either the CPUs of the local Ray started for
    the run (``num_cpus``, default all) or the address of the Ray cluster to attach to (whose CPUs
    are what its nodes were started with: Ray refuses ``num_cpus`` when it connects)."""
    client_resources = {"num_cpus": cfg.federated.client_cpus, "num_gpus": 0.0}
    if ray_address is not None:
        if num_cpus is not None:
            raise ValueError("num_cpus sets the CPUs of a local Ray; a Ray cluster's CPUs are those its nodes "
                             "were started with (`ray start --num-cpus`)")
        return {"client_resources": client_resources,
                "init_args": {"address": ray_address, "include_dashboard": False, "log_to_driver": True}}
    cpus = num_cpus or os.cpu_count() or 1
    if cfg.federated.client_cpus > cpus:
        raise ConfigError(f"federated.client_cpus={cfg.federated.client_cpus} exceeds the {cpus} CPUs available")
    return {"client_resources": client_resources,
            "init_args": {"address": LOCAL_RAY, "num_cpus": cpus, "include_dashboard": False, "log_to_driver": True}}


def start_ray(backend: dict) -> None:
    """Start (or attach to) Ray in the calling thread, exactly as Flower's Ray backend would.

    ``run_simulation`` starts the ServerApp's thread and the backend together, and the backend
    would then start Ray's processes (``fork``) while the ServerApp computes with numpy. A
    ``fork`` while another thread uses OpenBLAS can hang for ever in OpenBLAS's pre-fork
    handler (seen once on the 2-core CI machine: ``blas_thread_shutdown_`` joining a
    worker). Started here, before any other thread of the run exists, Ray is already up when
    the backend looks (it skips ``ray.init`` then) and nothing forks later.
    """
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    RayBackend(backend)  # its constructor only runs ray.init with the backend's arguments (no actors yet)


def stop_ray() -> None:
    """Shut Ray down if it is still up (Flower's backend does so when it ends normally)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_federated(cfg: FedMoEConfig, out: Path | None, progress: bool = True, scenario_file: Path | None = None,
                  on_round: Callable | None = None, num_cpus: int | None = None, verbose: bool = False,
                  ray_address: str | None = None, resume: bool = False, force: bool = False):
    """Simulate ``cfg.federated.rounds`` rounds on ``partition.num_devices`` virtual devices; write ``out``.

    ``ray_address`` (``HOST:PORT``; default ``$RAY_ADDRESS``, else a local Ray): the Ray cluster to
    run the virtual clients on, checked to answer before anything starts.

    ``out`` must be a folder or a path where one can be made (:func:`fedmoe.files.check_folder_target`),
    checked with the config before anything starts.

    ``resume``: continue the run saved in ``out`` after its last complete round
    (:mod:`fedmoe.federated.resume`; federated mode), checked before anything starts. The
    virtual devices keep their local state in ``out/client_state``. Without ``resume``, an
    ``out`` that holds anything is refused unless ``force``, which replaces an earlier run's
    outputs there (:mod:`fedmoe.federated.run_folder`). If the run fails, nothing that looks
    finished stays in ``out`` (no ``checkpoints/final.pt``, no report): the state of the last
    complete round stays when ``--resume`` can continue from it, else the folder this run made
    is removed (:func:`fedmoe.federated.run_folder.discard_failed_run`).

    Returns :class:`fedmoe.strategies.federated_learning.FederatedRun` (``mode = "federated"``) or
    :class:`fedmoe.strategies.split_learning.SplitRun` or :class:`fedmoe.strategies.distributed_experts.DistributedRun`
    or :class:`fedmoe.strategies.v2i_federated.V2IRun`.
    """
    from fedmoe.strategies.modes import check_config, mode_of

    mode = mode_of(cfg)
    check_config(cfg)  # what the mode needs beyond a valid config (fedmoe.strategies.modes.check_config)
    if out is not None:
        check_folder_target(out)
        check_run_folder(out, resume, force)
    done = _rounds_done(cfg, out, resume)
    address = resolve_ray_address(ray_address)
    backend = backend_config(cfg, num_cpus, address)
    if address is not None:
        import ray

        if ray.is_initialized():
            raise ValueError(f"cannot attach to the Ray cluster at {address}: Ray is already initialised in this "
                             "process (call ray.shutdown() first)")
        node_cpus = check_ray_cluster(address)
        if node_cpus is not None:
            check_cluster_fits(cfg, address, node_cpus)
            log.info("attaching the simulation to the Ray cluster at %s: %d nodes, %g CPUs", address,
                     len(node_cpus), sum(node_cpus))
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    if out is not None and force and not resume:
        clear_run_folder(out)
    made = None if out is None else first_missing(Path(out))
    try:
        run = _simulate(cfg, out, backend, mode, done, progress, on_round, scenario_file, resume, verbose)
    except BaseException:
        if out is not None:
            discard_failed_run(Path(out), cfg, made)
        raise
    return run


def _simulate(cfg: FedMoEConfig, out: Path | None, backend: dict, mode, done: int, progress: bool,
              on_round: Callable | None, scenario_file: Path | None, resume: bool, verbose: bool):
    """The simulation of :func:`run_federated`, once everything is checked: Ray, the ServerApp and
    the virtual clients; the ServerApp's result, or its exception raised here."""
    from flwr.simulation import run_simulation
    from tqdm.auto import tqdm

    from fedmoe.clients.app import app as client_app
    from fedmoe.strategies.server_app import make_server_app

    bar = tqdm(total=mode.rounds(cfg), initial=done, desc="rounds", unit="round", disable=not progress)

    def _on_round(record) -> None:
        bar.update(1)
        bar.set_postfix(**mode.progress(record))
        if on_round is not None:
            on_round(record)

    outcome: list = []
    server = make_server_app(cfg, out, outcome, _on_round, scenario_file, resume,
                             None if out is None else Path(out) / CLIENT_STATE_FOLDER)
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    t0 = time.perf_counter()
    try:
        start_ray(backend)
        run_simulation(server_app=server, client_app=client_app, num_supernodes=cfg.partition.num_devices,
                       backend_config=backend, verbose_logging=verbose)
    finally:
        stop_ray()
        flwr_logger.setLevel(level)
        bar.close()
    if not outcome:
        raise RuntimeError("the simulation ended without a result from the ServerApp (see the log above)")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    run = outcome[0]
    log.info("simulation finished in %.1f s", time.perf_counter() - t0)
    return run
