"""Multimodal split learning and SplitFed as a ServerApp loop over Flower messages.

Split learning (Vepakomma et al., 2018; Gupta & Raskar, 2018) cuts the mixture after its
modality experts: devices keep the experts (encoders) and their data, the server keeps the
gate, the fusion and the task heads (``docs/architecture.md``, "Split learning and the other modes";
[P001] and [P003]).
SplitFed (Thapa et al., 2022) adds one federated step per round: the devices' experts are
averaged per expert with :class:`fedmoe.strategies.expert_wise.ExpertWise`'s aggregation.

Flower has no split-learning API; this loop drives the ClientApp's ``train.split`` and
``evaluate.split`` handlers (:mod:`fedmoe.clients.split`) through ``Grid.send_and_receive``, the
same way in simulation and deployment.

Round ``t`` (stage I for the first ``federated.stage1_rounds`` rounds, then stage II):

1. ``federated.clients_per_round`` devices are drawn at random; they share the uplink
   evenly (:mod:`fedmoe.split.clock`);
2. for chunk ``c = 0, 1, …`` (``split.batches_per_message`` batches each) every device
   still busy receives one message carrying the gradient of its previous chunk and

   * stage I: a request for the features of every available expert on chunk ``c``;
   * stage II: a request for the gate inputs of chunk ``c``; the server's gate draws the
     selection (:meth:`fedmoe.split.server.SplitServer.select`), and a second message
     asks for the features of the selected pairs only;

   the server passes the features through the devices' links, takes one step on the mean
   of the devices' chunk losses, and keeps each device's ``∂L_k/∂z_k`` for its next message;
3. a ``finish`` message delivers the last gradients (SplitFed: and collects the experts,
   whose average every device loads with its first message of the next round);
4. every ``federated.eval_every`` rounds (and the last) the devices
   (``split.eval_devices``) run the same exchanges on their held-out data without training.

A device whose reply is an error, does not arrive within ``split.message_timeout_s``, or
fails the checks of :mod:`fedmoe.split.replies` (malformed or out-of-range arrays or
metrics: the server reads nothing of it) is logged and dropped for the rest of the round;
the round goes on with the others.
Every exchange goes on the virtual clock (:mod:`fedmoe.split.clock`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmoe.config import FedMoEConfig
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import BACKWARD_FLOPS_KEY, FORWARD_FLOPS_KEY, NUM_EXAMPLES_KEY, SPLIT_LABEL_PREFIX
from fedmoe.federated.world import ScenarioWorld, config_json, world_for
from fedmoe.flower import record_bits, to_numpy, to_record
from fedmoe.models.gates import TemperatureSchedule
from fedmoe.split.clock import LinkBudget, exchange_cost, link_budget, uplink_seconds
from fedmoe.split.device import Encoded, num_chunks
from fedmoe.split.replies import SplitReplyError, SplitReplySchema, read_split_metrics, read_split_reply
from fedmoe.split.server import ChunkInput, SplitServer
from fedmoe.strategies.validation import short_reason

log = logging.getLogger(__name__)

TRAIN = f"{MessageType.TRAIN}.split"
EVALUATE = f"{MessageType.EVALUATE}.split"


@dataclass
class SplitRoundRecord:
    """One split-learning round on the virtual clock (field names shared with the federated rounds)."""

    round: int
    stage: int
    selected: int
    completed: int
    failed: int
    exchanges: int
    latency_s: float
    energy_j: float
    clock_s: float
    upload_bits: float
    downlink_bits: float
    device_flops: float
    train_loss: float
    train_accuracy: float
    devices: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class _Exchange:
    """Accounting of one synchronous exchange."""

    latency_s: float = 0.0
    energy_j: float = 0.0
    upload_bits: float = 0.0
    downlink_bits: float = 0.0
    flops: float = 0.0


def _encoded(arrays: dict[str, np.ndarray]) -> Encoded:
    labels = {k[len(SPLIT_LABEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(SPLIT_LABEL_PREFIX)}
    return Encoded(arrays["z"], arrays["expert"].astype(np.int64), arrays["row"].astype(np.int64),
                   arrays["batch"].astype(np.int64), arrays["present"].astype(bool), labels, 0.0)


@dataclass
class Accepted:
    """A device's reply that passed :mod:`fedmoe.split.replies`: the message, its decoded arrays and checked metrics."""

    message: Message
    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]


class SplitLearning:
    """The split-learning (or SplitFed) server loop (module docstring).

    Parameters
    ----------
    cfg
        The configuration; ``cfg.mode`` is ``"split"`` or ``"splitfed"``.
    on_round
        Called with every :class:`SplitRoundRecord` (progress bars).
    """

    def __init__(self, cfg: FedMoEConfig, on_round: Callable[[SplitRoundRecord], None] | None = None) -> None:
        if cfg.mode not in ("split", "splitfed"):
            raise ValueError(f"SplitLearning runs mode 'split' or 'splitfed', not {cfg.mode!r}")
        self.world: ScenarioWorld = world_for(cfg)
        self.cfg = self.world.cfg
        self.scenario_json = config_json(self.cfg)
        self.on_round = on_round
        self.server = SplitServer(self.world, seed=self.cfg.train.seed)
        self.rng = np.random.default_rng(np.random.SeedSequence([self.cfg.data.seed, 0x5B117]))
        self.history: list[SplitRoundRecord] = []
        self.evaluations: dict[int, dict[str, Any]] = {}
        self.clock_s = 0.0
        self.devices: dict[int, Any] = {}
        self.reply_schema = SplitReplySchema.for_world(self.world)
        self.experts: dict[str, np.ndarray] | None = None
        self._experts_wire: dict[str, np.ndarray] = {}
        if cfg.mode == "splitfed":
            sd = state_to_numpy(self.world.template.state_dict())
            self._set_experts({k: sd[k] for k in self.world.layout.expert_keys})
            from fedmoe.strategies.expert_wise import ExpertWise

            self.aggregation = ExpertWise(self.world)

    # ------------------------------------------------------------------ messages

    def _message(self, node: int, kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
                 experts: bool = False) -> Message:
        content = RecordDict({"config": ConfigRecord({"scenario": self.scenario_json, **config})})
        if arrays:
            content["split"] = to_record(arrays)
        if experts and self.experts is not None:
            content["experts"] = to_record(self._experts_wire)
        return Message(content=content, message_type=kind, dst_node_id=node)

    def _exchange(self, grid: Grid, msgs: dict[int, Message], failures: list[str], what: str, phase: str,
                  max_rows: Callable[[int], int], max_examples: Callable[[int], int]) -> dict[int, Accepted]:
        """Send one message per device and wait; returns ``{device: accepted reply}`` of the devices
        that answered with a reply :mod:`fedmoe.split.replies` accepts for ``phase`` (``finish``:
        its metrics only), at most ``max_rows(device)`` rows and ``max_examples(device)`` samples."""
        if not msgs:
            return {}
        node_to_dev = {m.metadata.dst_node_id: d for d, m in msgs.items()}
        replies = grid.send_and_receive(list(msgs.values()), timeout=self.cfg.split.message_timeout_s)
        out: dict[int, Accepted] = {}
        errored: set[int] = set()
        for reply in replies:
            dev = node_to_dev.get(reply.metadata.src_node_id)
            if dev is None or dev in out or dev in errored:  # not asked, or a second answer: the first counts
                continue
            if reply.has_error():
                errored.add(dev)
                failures.append(f"device {dev} ({what}): {short_reason(reply.error.reason)}")
                log.warning("split %s: device %d failed: %s", what, dev, short_reason(reply.error.reason))
                continue
            try:
                if phase == "finish":
                    out[dev] = Accepted(reply, {}, read_split_metrics(reply.content.metric_records.get("metrics"),
                                                                      max_examples(dev)))
                else:
                    arrays, metrics = read_split_reply(reply, phase, self.reply_schema, max_rows(dev),
                                                       max_examples(dev))
                    out[dev] = Accepted(reply, arrays, metrics)
            except SplitReplyError as err:
                errored.add(dev)
                failures.append(f"device {dev} ({what}): rejected: {err}")
                log.warning("split %s: device %d's reply rejected: %s", what, dev, err)
        for dev in sorted(set(msgs) - set(out) - errored):
            failures.append(f"device {dev} ({what}): no reply within {self.cfg.split.message_timeout_s:g} s")
            log.warning("split %s: device %d did not reply within %.0f s; dropped for this round", what, dev,
                        self.cfg.split.message_timeout_s)
        return out

    def _account(self, acct: _Exchange, budget: LinkBudget, replies: dict[int, Accepted], sent: dict[int, Message],
                 features_key: str | None = None) -> None:
        """Uplink, compute, latency and energy of one exchange; ``features_key`` names the reply array
        that crosses the feature link (the rest is side information at the device's rate)."""
        times = []
        dim = self.world.template.heads.in_features
        for dev, reply in replies.items():
            m = reply.metrics
            flops = m.get(FORWARD_FLOPS_KEY, 0.0) + m.get(BACKWARD_FLOPS_KEY, 0.0)
            records = reply.message.content.array_records
            vectors = int(reply.arrays[features_key].shape[0]) if features_key else 0
            side_bits = float(sum(record_bits(rec, exclude=(features_key,) if k == "split" and features_key else ())
                                  for k, rec in records.items()))
            t_up = uplink_seconds(self.world, self.server.link, budget, dev, vectors, dim, side_bits)
            t, e = exchange_cost(self.world, dev, flops, t_up)
            times.append(t)
            acct.energy_j += e
            acct.flops += flops
            acct.upload_bits += vectors * self._feature_bits(dim) + side_bits
        for msg in sent.values():
            acct.downlink_bits += sum(record_bits(rec, bool_bits=1) for rec in msg.content.array_records.values())
        acct.latency_s += max(times, default=0.0)

    def _feature_bits(self, dim: int) -> float:
        """Uplink bits of one feature vector: ``D · value_bits`` (ideal), ``D · b + 32`` (digital,
        with the scale), 0 for the analog link (it sends symbols, counted in airtime only)."""
        link = self.server.link
        if link is None:
            return float(dim * self.cfg.split.value_bits)
        return float(dim * link.bits + 32) if hasattr(link, "bits") else 0.0

    # ------------------------------------------------------------------ rounds

    def _tau(self, server_round: int) -> float:
        s1 = self.cfg.federated.stage1_rounds
        steps = max(1, self.cfg.federated.rounds - s1)
        return float(TemperatureSchedule(self.cfg.train.tau_start, self.cfg.train.tau_end, steps)(
            server_round - s1 - 1))

    def _seed(self, server_round: int, chunk: int, device: int, evaluation: bool = False) -> int:
        return int(np.random.SeedSequence([self.cfg.train.seed, server_round, chunk, device, int(evaluation)])
                   .generate_state(1)[0])

    def _costs(self, budget: LinkBudget) -> dict[int, np.ndarray]:
        """Each device's (E,) cost vector at its rate this round ([P001] eq. 9), once per round."""
        return {int(d): self.world.cost_row(int(d), float(r)) for d, r in zip(budget.device_ids, budget.rate_bps)}

    def train_round(self, grid: Grid, server_round: int) -> SplitRoundRecord:
        """One round (module docstring, steps 1–3)."""
        fed = self.cfg.federated
        stage = 1 if server_round <= fed.stage1_rounds else 2
        tau = self._tau(server_round) if stage == 2 else 1.0
        node_of = {info.device_id: node for node, info in self.devices.items()}
        chosen = sorted(int(d) for d in self.rng.choice(sorted(node_of), size=min(fed.clients_per_round, len(node_of)),
                                                         replace=False))
        budget = link_budget(self.world, chosen)
        costs = self._costs(budget)
        chunks = {d: num_chunks(self.world, self.devices[node_of[d]].num_examples) for d in chosen}
        active = set(chosen)
        pending: dict[int, dict[str, np.ndarray]] = {}
        first = set(chosen)
        failures: list[str] = []
        acct = _Exchange()
        exchanges, losses, correct, rows = 0, [], 0, 0

        def config_for(d: int, phase: str, chunk: int) -> tuple[dict, dict]:
            cfg = {"phase": phase, "server-round": server_round, "stage": stage, "chunk": chunk}
            arrays = {}
            if d in pending:
                p = pending.pop(d)
                cfg["grad-chunk"] = int(p.pop("chunk")[0])
                arrays.update(p)
            return cfg, arrays

        chunk_rows_max = self.cfg.split.batches_per_message * self.cfg.train.batch_size

        def send(kind: str, phase: str, per_device: dict[int, tuple[dict, dict]], what: str):
            nonlocal exchanges
            msgs = {d: self._message(node_of[d], kind, c, a, experts=d in first) for d, (c, a) in per_device.items()}
            first.difference_update(per_device)
            replies = self._exchange(grid, msgs, failures, what, phase, lambda _d: chunk_rows_max,
                                     lambda d: self.devices[node_of[d]].num_examples)
            active.difference_update(set(msgs) - set(replies))
            exchanges += 1
            return msgs, replies

        chunk = 0
        while True:
            busy = [d for d in sorted(active) if chunk < chunks[d]]
            if not busy:
                break
            selected: dict[int, np.ndarray] = {}
            gate_in: dict[int, np.ndarray] = {}
            if stage == 2:
                msgs, replies = send(TRAIN, "features", {d: config_for(d, "features", chunk) for d in busy},
                                     f"round {server_round} gate inputs")
                self._account(acct, budget, replies, msgs)
                for d, reply in replies.items():
                    arr = reply.arrays
                    gate_in[d] = arr["features"]
                    selected[d] = self.server.select(arr["features"], arr["present"], costs[d], tau, True,
                                                     self._seed(server_round, chunk, d))
                busy = sorted(replies)
                per = {d: ({"phase": "encode", "server-round": server_round, "stage": stage, "chunk": chunk},
                           {"selected": selected[d]}) for d in busy}
            else:
                per = {d: config_for(d, "encode", chunk) for d in busy}
            msgs, replies = send(TRAIN, "encode", per, f"round {server_round} features")
            self._account(acct, budget, replies, msgs, "z")
            items, order = [], []
            for d, reply in sorted(replies.items()):
                enc = _encoded(reply.arrays)
                chunks[d] = num_chunks(self.world, int(reply.metrics[NUM_EXAMPLES_KEY]))
                items.append(ChunkInput(enc, float(budget.snr_linear[budget.index(d)]), costs[d],
                                        gate_in.get(d), selected.get(d), tau, self._seed(server_round, chunk, d)))
                order.append(d)
            for d, res, item in zip(order, self.server.train_exchange(items, stage), items):
                pending[d] = {"grad": res.grads, "chunk": np.array([chunk])}
                if stage == 2:
                    pending[d]["grad-selected"] = item.selected
                losses.append((res.loss, res.rows))
                correct += res.correct
                rows += res.rows
            chunk += 1
        finish = {}
        for d in sorted(active):
            cfg, arrays = config_for(d, "finish", chunk)
            cfg["upload-experts"] = self.experts is not None
            finish[d] = (cfg, arrays)
        msgs, replies = send(TRAIN, "finish", finish, f"round {server_round} finish")
        self._account(acct, budget, replies, msgs)
        if self.experts is not None and replies:
            self._average_experts(server_round, [r.message for r in replies.values()])
        self.clock_s += acct.latency_s
        n = sum(r for _, r in losses)
        record = SplitRoundRecord(
            server_round, stage, len(chosen), len(replies), len(chosen) - len(replies), exchanges, acct.latency_s,
            acct.energy_j, self.clock_s, acct.upload_bits, acct.downlink_bits, acct.flops,
            float(sum(loss * r for loss, r in losses) / max(n, 1)), float(correct / max(rows, 1)), chosen, failures)
        self.history.append(record)
        return record

    def _average_experts(self, server_round: int, replies: list[Message]) -> None:
        """SplitFed: the experts averaged per expert over the devices that computed them."""
        merged = self.aggregation.merge(server_round, to_record(self.experts), replies)
        if merged is not None:
            self._set_experts({k: v for k, v in to_numpy(merged).items() if k in self.experts})

    def _set_experts(self, experts: dict[str, np.ndarray]) -> None:
        """The SplitFed experts, and their packed form that every message carries (packed once)."""
        self.experts = experts
        self._experts_wire = self.world.layout.pack(experts)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, grid: Grid, server_round: int) -> dict[str, Any]:
        """Accuracy on the devices' held-out data through the split model (no training)."""
        stage = 1 if server_round <= self.cfg.federated.stage1_rounds else 2
        node_of = {info.device_id: node for node, info in self.devices.items()}
        devices = sorted(node_of)
        k = self.cfg.split.eval_devices
        if 0 < k < len(devices):
            devices = sorted(int(d) for d in np.random.default_rng(server_round).choice(devices, size=k, replace=False))
        budget = link_budget(self.world, devices)
        costs = self._costs(budget)
        failures: list[str] = []
        cfg = {"server-round": server_round, "stage": stage}
        selected: dict[int, np.ndarray] = {}
        gate_in: dict[int, np.ndarray] = {}
        busy = devices
        if stage == 2:
            msgs = {d: self._message(node_of[d], EVALUATE, {**cfg, "phase": "features"}, experts=True) for d in busy}
            for d, reply in self._exchange(grid, msgs, failures, f"evaluation {server_round}", "features",
                                           self.world.evaluation_size, self.world.evaluation_size).items():
                arr = reply.arrays
                gate_in[d] = arr["features"]
                selected[d] = self.server.select(arr["features"], arr["present"], costs[d],
                                                 self.cfg.train.tau_end, False, 0)
            busy = sorted(selected)
        msgs = {d: self._message(node_of[d], EVALUATE, {**cfg, "phase": "encode"},
                                 {"selected": selected[d]} if d in selected else None, experts=True) for d in busy}
        correct, rows, loss = 0, 0, 0.0
        for d, reply in sorted(self._exchange(grid, msgs, failures, f"evaluation {server_round}", "encode",
                                              self.world.evaluation_size, self.world.evaluation_size).items()):
            enc = _encoded(reply.arrays)
            res = self.server.predict(ChunkInput(enc, float(budget.snr_linear[budget.index(d)]), costs[d],
                                                 gate_in.get(d), selected.get(d)), stage)
            correct += res.correct
            rows += res.rows
            loss += res.loss * res.rows
        out = {"accuracy": correct / rows if rows else None, "test_loss": loss / rows if rows else None,
               "eval_rows": rows, "eval_failures": failures}
        self.evaluations[server_round] = out
        return out

    # ------------------------------------------------------------------ run

    def run(self, grid: Grid) -> list[dict[str, Any]]:
        """Discover the devices, run every round, evaluate; returns the round rows."""
        from fedmoe.strategies.discovery import discover_devices

        fed = self.cfg.federated
        self.devices = discover_devices(grid, self.world.num_devices, self.scenario_json)
        for r in range(1, fed.rounds + 1):
            record = self.train_round(grid, r)
            if r % fed.eval_every == 0 or r == fed.rounds:
                self.evaluate(grid, r)
            if self.on_round is not None:
                self.on_round(record)
        return self.rows()

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for rec in self.history:
            row = asdict(rec)
            row.update(self.evaluations.get(rec.round, {}))
            rows.append(row)
        return rows


@dataclass
class SplitRun:
    """What :func:`serve_split` produced."""

    metrics: dict[str, Any]
    wall_s: float
    loop: SplitLearning = field(repr=False, default=None)


def serve_split(grid: Grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
                scenario_file: Path | None = None) -> SplitRun:
    """Run the split-learning loop on ``grid``; write ``run_dir`` (as the federated run does)."""
    from fedmoe.federated.report import metrics_document, write_run

    t0 = time.perf_counter()
    loop = SplitLearning(cfg, on_round)
    rows = loop.run(grid)
    extra = {"mode": cfg.mode, "link": cfg.split.link, "experts": [e.name for e in loop.world.template.experts],
             "wall_s": time.perf_counter() - t0}
    metrics = metrics_document(rows, extra)
    if run_dir is not None:
        write_run(Path(run_dir), loop.cfg.model_dump(mode="json"), metrics, scenario_file, extra["experts"])
    return SplitRun(metrics, time.perf_counter() - t0, loop)
