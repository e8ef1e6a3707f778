"""Device discovery: which node is which device, how many samples it holds and which sensors it has.

Before its first round a strategy asks every node once (a QUERY message, the ``query``
handler of :mod:`clients.app`). The node answers with its ``partition-id`` (the device it
is), its ``num-examples`` and its ``modalities``; from then on the strategy addresses devices
through :class:`DeviceInfo`. Every mode that runs on devices (federated, split, SplitFed,
distributed experts, V2I base stations) discovers them this way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmoe.federated.protocol import MODALITIES_KEY, NUM_EXAMPLES_KEY, PARTITION_KEY
from strategies.validation import short_reason

QUERY_TIMEOUT_S = 600.0
"""How long the server waits for the nodes' answers to the device query, s."""


@dataclass
class DeviceInfo:
    """What a node told the server about itself (its answer to the QUERY message)."""

    node_id: int
    device_id: int
    num_examples: int
    modalities: np.ndarray  # (M,) bool


def discover_devices(grid: Grid, expected: int, scenario_json: str, wait_s: float = 120.0) -> dict[int, DeviceInfo]:
    """Ask every node (QUERY message) for its partition id, sample count and sensors.

    Waits up to ``wait_s`` for ``expected`` nodes to register (in simulation the nodes
    appear a moment after the ServerApp starts). A partition id answered twice, or
    outside ``[0, expected)``, is an error.

    Parameters
    ----------
    grid : Grid
        The grid of the run.
    expected : int
        The number of devices of the scenario (``partition.num_devices``).
    scenario_json : str
        The scenario as JSON (:func:`fedmoe.federated.world.config_json`): the nodes derive
        their data and sensors from it.
    wait_s : float, optional
        How long to wait for ``expected`` nodes to connect, s.

    Returns
    -------
    dict[int, DeviceInfo]
        ``{node id: DeviceInfo}`` of every node.
    """
    t0 = time.monotonic()
    while len(node_ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() - t0 > wait_s:
            raise RuntimeError(f"only {len(node_ids)} of {expected} nodes connected within {wait_s:.0f} s")
        time.sleep(0.2)
    cfg = ConfigRecord({"scenario": scenario_json})
    msgs = [Message(content=RecordDict({"config": cfg}), message_type=MessageType.QUERY, dst_node_id=n)
            for n in node_ids]
    replies = grid.send_and_receive(msgs, timeout=QUERY_TIMEOUT_S)
    devices: dict[int, DeviceInfo] = {}
    seen: dict[int, int] = {}
    for msg in replies:
        if msg.has_error():
            raise RuntimeError(f"node {msg.metadata.src_node_id} failed the device query: {short_reason(msg.error.reason)}")
        m = msg.content["metrics"]
        dev = int(m[PARTITION_KEY])
        if not 0 <= dev < expected:
            raise RuntimeError(f"node {msg.metadata.src_node_id} has partition-id {dev}, outside [0, {expected})")
        if dev in seen:
            raise RuntimeError(f"partition-id {dev} is claimed by nodes {seen[dev]} and {msg.metadata.src_node_id}")
        seen[dev] = msg.metadata.src_node_id
        devices[msg.metadata.src_node_id] = DeviceInfo(msg.metadata.src_node_id, dev, int(m[NUM_EXAMPLES_KEY]),
                                                       np.asarray(list(m[MODALITIES_KEY]), dtype=bool))
    if len(devices) < expected:
        raise RuntimeError(f"only {len(devices)} of {expected} nodes answered the device query")
    return devices
