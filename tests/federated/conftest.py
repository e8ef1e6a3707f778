"""Shared fixtures of the federated tests: a tiny scenario, and an in-process Grid that runs the
real ClientApp handlers (no Ray) for tests of the Strategy API."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedmoe.config import FedMoEConfig
from fedmoe.scenarios import load_scenario

TINY = {
    "partition": {"num_devices": 4, "samples_per_device": 48},
    # One expert per modality and the score-function gate: the federated mechanics (aggregation per
    # expert, validation, faults, resume) are tested on five experts with distinct modalities.
    "model": {"modalities": ["camera", "lidar", "radar", "gps", "rf"], "subsets": [], "experts_per_modality": 1,
              "expert_widths": {"gps": [16, 32, 64]},
              "head_hidden": 32},
    "train": {"batch_size": 32, "cost_weight": 1.0, "gate_estimator": "score_function", "stage1_epochs": 6,
              "stage2_epochs": 6,
              "tasks": {"beam_objective": "cross_entropy"}},
    "federated": {"rounds": 2, "stage1_rounds": 1, "clients_per_round": 4, "test_samples": 64,
                  "checkpoint_every": 1, "deadline_s": 1000.0, "local_epochs": 1, "stage2_local_epochs": 1,
                  "selection": "deadline-max-devices"},
}


WATCHED = {"federated": {"rounds": 2, "centralised_reference": False}, "report": {"tensorboard": True}}
"""The tiny scenario, two rounds, with TensorBoard: the run an operator watches (:func:`watched_run`)."""


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as text."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def watched_run(tmp_path_factory):
    """A two-round run (:data:`WATCHED`) of the real ServerApp loop over the real ClientApp (:class:`LocalGrid`):
    ``(folder, run, seen)``; ``seen[r]`` is what an operator saw while round ``r`` trained, after its aggregation
    (before its rows were written): the rows of rounds.csv and devices.csv, and ``fedmoe report``'s page."""
    from fedmoe.federated.html_report import load_run, render
    from fedmoe.strategies.server_app import serve

    out = tmp_path_factory.mktemp("watched")
    seen: dict[int, tuple[list, list, str]] = {}

    def on_round(record) -> None:
        seen[record.round] = (read_csv(out / "rounds.csv"), read_csv(out / "devices.csv"), render(load_run(out)))

    run = serve(LocalGrid(4), tiny_config(**WATCHED), out, on_round=on_round, client_state_dir=out / "client_state")
    return out, run, seen


def tiny_config(**sections) -> FedMoEConfig:
    """The default scenario shrunk to seconds; ``sections`` override (nested dicts)."""
    from fedmoe.config import deep_merge

    return load_scenario("default", deep_merge(TINY, sections))


def play_round(strategy, grid: "LocalGrid", server_round: int):
    """One training round of an ExpertWise ``strategy`` on ``grid`` from its world's initial arrays; its record."""
    from flwr.app import ArrayRecord, ConfigRecord

    arrays = ArrayRecord(strategy.world.template.state_dict())
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    strategy.aggregate_train(server_round, grid.send_and_receive(messages))
    return strategy.history[-1]


def saved_and_resumed(strategy, folder):
    """A new ExpertWise of ``strategy``'s world restored from the resume state ``strategy`` saves in ``folder``
    (after round 1; :mod:`fedmoe.federated.resume`, no pickle)."""
    from fedmoe.federated.resume import ServerState, load_state, save_state
    from fedmoe.strategies.expert_wise import ExpertWise

    world = strategy.world
    arrays = {k: v.numpy() for k, v in world.template.state_dict().items()}
    save_state(folder, ServerState(round=1, config=world.cfg.model_dump(mode="json"), arrays=arrays,
                                   strategy=strategy.checkpoint_state()))
    resumed = ExpertWise(world)
    resumed.restore_checkpoint_state(load_state(folder, world.cfg).strategy)
    return resumed


@pytest.fixture(scope="session")
def tiny_cfg() -> FedMoEConfig:
    return tiny_config()


class LocalGrid(Grid):
    """A Grid whose nodes are the real ``fedmoe.clients.app`` handlers (or another ClientApp) called in
    this process.

    Node ``i + first_node`` is partition ``i``; every node keeps its own ``Context`` (and so its own
    ``context.state``) across messages, as a SuperNode does.
    """

    def __init__(self, num_nodes: int, fail: Iterable[int] = (), silent_after: dict[int, int] | None = None,
                 tamper: dict[int, Callable[[Message], None]] | None = None,
                 tamper_on: str = MessageType.TRAIN, client_app: Callable[[Message, Context], Message] | None = None,
                 first_node: int = 1) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        # what the ServerApp runtime sets before any Message is built
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.contexts = {i + first_node: Context(run_id=1, node_id=i + first_node,
                                                 node_config={"partition-id": i, "num-partitions": num_nodes},
                                                 state=RecordDict(), run_config={}) for i in range(num_nodes)}
        self.client_app = client_app  # None: fedmoe's own ClientApp
        self.fail = set(fail)
        self.silent_after = dict(silent_after or {})  # node -> training messages it answers before going silent
        self.answered: dict[int, int] = {}
        self.tamper = dict(tamper or {})  # node -> edits its replies in place (a faulty or malicious device) ...
        self.tamper_on = tamper_on  # ... to messages of this type (training by default)
        self.timeouts: list[float | None] = []
        self.sent: list[Message] = []
        self.exchanges: list[tuple[Message, Message]] = []  # (message, its reply as handed back), in order
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id="", ttl=None) -> Message:
        return Message(content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        """Every message through the real ClientApp (``fedmoe.clients.app:app``, which routes
        ``<type>.<action>``); an exception becomes an error reply, as Flower's runtime makes it.
        A node in ``fail`` errs on every training message; a node in ``silent_after`` stops
        answering training messages after that many (as if it disconnected: no reply at all);
        a node in ``tamper`` has its replies to ``tamper_on`` messages (training by default) edited by
        that function."""
        from flwr.app import Error

        self.timeouts.append(timeout)
        replies = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            training = msg.metadata.message_type.startswith(MessageType.TRAIN)
            if node in self.fail and training:
                replies.append(Message(Error(code=0, reason="injected failure"), reply_to=msg))
                continue
            if training and node in self.silent_after:
                if self.answered.get(node, 0) >= self.silent_after[node]:
                    continue
                self.answered[node] = self.answered.get(node, 0) + 1
            try:
                reply = self.answer(msg)
            except Exception as err:  # noqa: BLE001 - becomes the reply's error, as a SuperNode makes it
                reply = Message(Error(code=0, reason=str(type(err)) + ":<'" + str(err) + "'>"), reply_to=msg)
            if node in self.tamper and msg.metadata.message_type.startswith(self.tamper_on) and not reply.has_error():
                self.tamper[node](reply)
            replies.append(reply)
            self.exchanges.append((msg, reply))
        return replies

    def answer(self, msg: Message) -> Message:
        """The reply of the real ClientApp (``fedmoe.clients.app:app``, or the ``client_app`` given) on the
        message's node."""
        if self.client_app is not None:
            return self.client_app(msg, self.contexts[msg.metadata.dst_node_id])
        from fedmoe.clients.app import app as client_app

        return client_app(msg, self.contexts[msg.metadata.dst_node_id])


@pytest.fixture
def local_grid_factory():
    return LocalGrid


def _message_key(msg: Message) -> tuple:
    """What makes a message to a node the same message: its node, type, config and arrays (digest of the bytes)."""
    import hashlib

    content = msg.content
    digest = hashlib.sha256()
    for name, record in sorted(content.array_records.items()):
        for key, arr in record.items():
            digest.update(f"{name}/{key}/{arr.dtype}/{tuple(arr.shape)}/{arr.stype}".encode())
            digest.update(arr.data)
    config = tuple(sorted((f"{name}/{k}", repr(v)) for name, rec in content.config_records.items()
                          for k, v in rec.items()))
    return msg.metadata.dst_node_id, msg.metadata.message_type, config, digest.hexdigest()


def copy_content(content: RecordDict) -> RecordDict:
    """A copy of a message's records that can be edited without touching ``content`` (new ``Array`` objects
    over the same immutable bytes, new metric and config records)."""
    import copy

    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

    out = RecordDict()
    for name, rec in content.array_records.items():
        out[name] = ArrayRecord({k: Array(dtype=a.dtype, shape=tuple(a.shape), stype=a.stype, data=a.data)
                                 for k, a in rec.items()})
    for name, rec in content.metric_records.items():
        out[name] = MetricRecord(copy.deepcopy(dict(rec)))
    for name, rec in content.config_records.items():
        out[name] = ConfigRecord(copy.deepcopy(dict(rec)))
    return out


class ReplayGrid(LocalGrid):
    """A :class:`LocalGrid` that runs the real ClientApp once per distinct message and answers the same
    message again with a fresh copy of the same reply (``cache`` is shared between grids).

    A round is deterministic (seeded selection, seeded local training), so a fresh strategy sends the same
    messages again and a test can replay the round in a fraction of the time, with its own faults and
    tampering; a message that differs in any byte runs the ClientApp. Only for rounds whose devices keep no
    state between messages (the first round of a run).
    """

    def __init__(self, num_nodes: int, cache: dict, **kwargs) -> None:
        super().__init__(num_nodes, **kwargs)
        self.cache = cache

    def answer(self, msg: Message) -> Message:
        key = _message_key(msg)
        if key not in self.cache:
            self.cache[key] = super().answer(msg)
        return Message(content=copy_content(self.cache[key].content), reply_to=msg)


@pytest.fixture(scope="module")
def replay_cache() -> dict:
    """The replies a module's :class:`ReplayGrid` instances share."""
    return {}


def npy_blob(values: np.ndarray, descr: str | None = None, shape: tuple[int, ...] | None = None,
             fortran: bool = False) -> bytes:
    """``.npy`` bytes whose header may lie: it says ``descr``, ``shape`` and ``fortran`` (default:
    those of ``values``) over the raw bytes of ``values`` (in Fortran order if ``fortran``)."""
    import io

    values = np.asarray(values)
    header = {"descr": descr or np.lib.format.dtype_to_descr(values.dtype), "fortran_order": bool(fortran),
              "shape": tuple(values.shape) if shape is None else tuple(shape)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + values.tobytes(order="F" if fortran else "C")


def assert_close(a, b, **kw) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), **kw)


def edit_metrics(**changes) -> Callable[[Message], None]:
    """A tamper that edits a reply's metrics: a value replaces the key's, ``None`` removes the key,
    and ``metrics=None`` removes the whole record."""
    def tamper(reply: Message) -> None:
        if "metrics" in changes and changes["metrics"] is None:
            reply.content.pop("metrics")
            return
        m = dict(reply.content["metrics"])
        for k, v in changes.items():
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        reply.content["metrics"] = MetricRecord(m)
    return tamper


CROWDED_DEVICES = 10
CROWDED_RB = 12


@pytest.fixture
def crowded():
    """A round with a choice to make (``tests/federated/test_selection.py``): 10 devices on 12 resource blocks,
    deadline 2 s, at most 4 per round. Nine devices can meet the deadline alone, needing 1–12 blocks (31 in
    all); six fit together, so both the blocks and the cap bind; one needs all 12 (the far device) and one
    cannot meet the deadline at all. The test module checks these facts against its own block counts.

    Returns ``(demand, ctx)``: losses, samples and utilities ``n_k × loss_k`` are seeded draws; no history.
    """
    from fedmoe.config import MODALITIES
    from fedmoe.federated.selection import RoundDemand, SelectionContext
    from fedmoe.wireless.devices import DeviceProfiles

    cfg = FedMoEConfig()
    wireless = cfg.wireless.model_copy(update={
        "uplink": cfg.wireless.uplink.model_copy(update={"total_bandwidth_hz": CROWDED_RB * 200e3,
                                                         "resource_block_hz": 200e3}),
        "channel": cfg.wireless.channel.model_copy(update={"noise_psd_dbm_hz": -174.0, "noise_figure_db": 7.0})})
    k = CROWDED_DEVICES
    rng = np.random.default_rng(18)
    zeros = np.zeros(k)
    profiles = DeviceProfiles(
        tx_power_w=np.full(k, 0.1), compute_flops=np.full(k, 1e10), energy_per_flop_j=np.full(k, 1e-10),
        sensing_time_s=np.zeros((k, len(MODALITIES))), sensing_energy_j=np.zeros((k, len(MODALITIES))),
        gain=10 ** rng.uniform(-12.5, -10.5, k), distance_m=np.full(k, 100.0), los=np.ones(k, dtype=bool),
        pathloss_db=zeros, shadowing_db=zeros, fading=np.ones(k))
    flops, bits = rng.uniform(1e9, 5e9, k), rng.uniform(1e6, 8e6, k)
    samples = rng.integers(20, 200, k).astype(np.float64)
    loss = rng.uniform(0.1, 3.0, k)
    demand = RoundDemand(profiles, flops, bits, samples * loss, np.ones(k, dtype=bool), samples=samples, loss=loss)
    ctx = SelectionContext(wireless, per_round=4, deadline_s=2.0, rng=np.random.default_rng(0))
    return demand, ctx


def needs_by_hand(demand, ctx) -> np.ndarray:
    """``n_k(T)`` by trying every block count ``b = 1 … N_rb`` with the round's cost model
    (:func:`fedmoe.federated.selection.round_costs`), not the allocator's search; -1 if none meets ``T``."""
    from fedmoe.federated.selection import round_costs
    from fedmoe.wireless.ofdma import uplink_rate

    n_rb = ctx.wireless.uplink.num_resource_blocks
    out = np.full(len(demand.bits), -1, dtype=np.int64)
    for k in np.flatnonzero(demand.available):
        prof = demand.profiles.subset([k])
        for b in range(1, n_rb + 1):
            rate = uplink_rate(np.array([b]), ctx.wireless.uplink.resource_block_hz, prof.tx_power_w, prof.gain,
                               ctx.noise_psd_w_hz)
            if round_costs(prof, demand.flops[[k]], demand.bits[[k]], rate)[0][0] <= ctx.deadline_s:
                out[k] = b
                break
    return out


def best_by_brute_force(value, need, cap: int, capacity: int, among=None) -> float:
    """``max Σ_{k∈S} value_k`` over every set ``S`` of devices (of ``among``, default all) with ``need_k > 0``,
    ``|S| <= cap`` and ``Σ need_k <= capacity``."""
    from itertools import combinations

    value, need = np.asarray(value, dtype=np.float64), np.asarray(need)
    pool = [k for k in (range(len(need)) if among is None else among) if need[k] > 0]
    best = 0.0
    for r in range(1, min(cap, len(pool)) + 1):
        for s in combinations(pool, r):
            s = list(s)
            if need[s].sum() <= capacity:
                best = max(best, float(value[s].sum()))
    return best


def assert_fits(chosen, need, ctx) -> None:
    """``chosen`` are distinct devices that meet the deadline together within the blocks, at most the cap."""
    chosen = np.asarray(chosen, dtype=np.int64)
    assert len(set(chosen.tolist())) == chosen.size
    assert chosen.size <= ctx.per_round
    assert (need[chosen] > 0).all()
    assert need[chosen].sum() <= ctx.wireless.uplink.num_resource_blocks
