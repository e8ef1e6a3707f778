"""Device discovery: which node is which device, how many samples it holds and which sensors it has.

Before its first round a strategy asks every node once (a QUERY message, the ``query``
handler of :mod:`fedmoe.clients.app`). The node answers with its ``partition-id`` (the device it
is), its ``num-examples`` and its ``modalities``
(:class:`~fedmoe.federated.protocol.QueryReply`); from then on the strategy addresses devices
through :class:`DeviceInfo`. Every mode that runs on devices (federated, split, SplitFed,
distributed experts, V2I base stations) discovers them this way.

A node's answer is refused, with a logged reason, and the node is left out of the run when
it is an error reply, lacks its metrics, does not read as a ``QueryReply`` (a partition id
outside ``[0, expected)``, more sample than the scenario gives that device, a sensor list of
another length or with values other than 0 and 1, ...), or claims a partition id another node
claims too (both are refused: the server cannot tell which one is the device). A malformed
answer never raises; only too few devices left (``min_devices``) ends the run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmoe.config import parse_config
from fedmoe.data.partition import local_size
from fedmoe.federated.protocol import QueryReply, ReplyError
from fedmoe.strategies.validation import short_reason

QUERY_TIMEOUT_S = 600.0
"""How long the server waits for the nodes' answers to the device query, s."""

log = logging.getLogger(__name__)


@dataclass
class DeviceInfo:
    """What a node told the server about itself (its answer to the QUERY message)."""

    node_id: int
    device_id: int
    num_examples: int
    modalities: np.ndarray  # (M,) bool


def read_answer(msg: Message, expected: int, max_examples) -> QueryReply | str:
    """The :class:`QueryReply` of one answer to the device query, or the reason it is refused."""
    if msg.has_error():
        return f"failed the device query: {short_reason(msg.error.reason)}"
    metrics = msg.content.metric_records.get("metrics")
    if metrics is None:
        return "answered the device query without 'metrics'"
    try:
        return QueryReply.from_metrics(metrics, num_devices=expected, max_examples=max_examples)
    except ReplyError as err:
        return f"answered the device query with {err}"


def discover_devices(grid: Grid, expected: int, scenario_json: str, wait_s: float = 120.0,
                     min_devices: int | None = None) -> dict[int, DeviceInfo]:
    """Ask every node (QUERY message) for its partition id, sample count and sensors.

    Waits up to ``wait_s`` for ``expected`` nodes to register (in simulation the nodes
    appear a moment after the ServerApp starts). Answers are checked as the module docstring
    says; a refused answer is logged and its node left out.

    Parameters
    ----------
    grid : Grid
        The grid of the run.
    expected : int
        The number of devices of the scenario (``partition.num_devices``).
    scenario_json : str
        The scenario as JSON (:func:`fedmoe.federated.world.config_json`): the nodes derive
        their data and sensors from it, and the server the most samples each may claim.
    wait_s : float, optional
        How long to wait for ``expected`` nodes to connect, s.
    min_devices : int, optional
        The fewest devices the run can go on with (default: all ``expected``); fewer is a
        ``RuntimeError`` giving the refusals (one line: ``"node N failed the device query: …"``).

    Returns
    -------
    dict[int, DeviceInfo]
        ``{node id: DeviceInfo}`` of every node whose answer was accepted.
    """
    t0 = time.monotonic()
    while len(node_ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() - t0 > wait_s:
            raise RuntimeError(f"only {len(node_ids)} of {expected} nodes connected within {wait_s:.0f} s")
        time.sleep(0.2)
    cfg = parse_config(json.loads(scenario_json), source="scenario")
    max_examples = lambda pid: local_size(cfg.partition, cfg.data.seed, pid)  # noqa: E731
    msgs = [Message(content=RecordDict({"config": ConfigRecord({"scenario": scenario_json})}),
                    message_type=MessageType.QUERY, dst_node_id=n) for n in node_ids]
    answers: dict[int, QueryReply] = {}
    refused: list[str] = []
    claims: dict[int, list[int]] = {}
    for msg in grid.send_and_receive(msgs, timeout=QUERY_TIMEOUT_S):
        node = msg.metadata.src_node_id
        answer = read_answer(msg, expected, max_examples)
        if isinstance(answer, str):
            refused.append(f"node {node} {answer}")
            continue
        answers[node] = answer
        claims.setdefault(answer.partition_id, []).append(node)
    devices: dict[int, DeviceInfo] = {}
    for node, answer in answers.items():
        nodes = claims[answer.partition_id]
        if len(nodes) > 1:
            refused.append(f"node {node}: partition-id {answer.partition_id} is claimed by nodes {sorted(nodes)}")
            continue
        devices[node] = DeviceInfo(node, answer.partition_id, answer.num_examples,
                                   np.asarray(answer.modalities, dtype=bool))
    for reason in refused:
        log.warning("device query: left out %s", reason)
    needed = expected if min_devices is None else min_devices
    if len(devices) < needed:
        raise RuntimeError("; ".join(refused) if refused else
                           f"only {len(devices)} of {expected} nodes answered the device query")
    return devices
