"""Hostile split-learning replies (issue: hostile devices): each one is refused with a reason, the
device is dropped for the round, the round and the run go on, and the server's model stays finite."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message

from fedmoe.federated.protocol import BACKWARD_FLOPS_KEY, FORWARD_FLOPS_KEY
from fedmoe.flower import array_of, to_numpy
from fedmoe.split.replies import SplitReplyError, SplitReplySchema, read_split_reply
from fedmoe.strategies.split_learning import SplitLearning
from tests.federated.conftest import LocalGrid, edit_metrics
from tests.split.conftest import split_config

ATTACKER = 2  # node 2 is device 1


def edit_split(phase: str, edit) -> callable:
    """A tamper that applies ``edit(arrays) -> arrays or ArrayRecord`` to the ``split`` arrays of the
    device's replies to ``phase`` messages (the other replies pass untouched)."""
    def tamper(reply: Message) -> None:
        record = reply.content.array_records.get("split")
        if record is None or set(record.keys()) != PHASE_NAMES[phase]:
            return
        out = edit({k: v.copy() for k, v in to_numpy(record).items()})
        if not isinstance(out, ArrayRecord):
            out = ArrayRecord({k: array_of(v) for k, v in out.items()})
        reply.content["split"] = out
    return tamper


def with_bad_blob(name: str, **fields):
    """An edit that swaps array ``name`` for a hand-made ``Array`` (metadata or bytes that lie)."""
    def edit(arrays):
        record = ArrayRecord({k: array_of(v) for k, v in arrays.items()})
        good = record[name]
        record[name] = Array(dtype=fields.get("dtype", good.dtype), shape=fields.get("shape", good.shape),
                             stype=fields.get("stype", good.stype), data=fields.get("data", good.data))
        return record
    return edit


def _set(name, fn):
    def edit(arrays):
        arrays[name] = fn(arrays[name])
        return arrays
    return edit


def _drop(name):
    def edit(arrays):
        arrays.pop(name)
        return arrays
    return edit


def _big_endian(arrays):
    """``z`` as big-endian bytes under a header that says so, while the metadata still say float32."""
    record = ArrayRecord({k: array_of(v) for k, v in arrays.items()})
    z = arrays["z"]
    buf = io.BytesIO()
    np.save(buf, z.astype(">f4"))
    good = record["z"]
    record["z"] = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=buf.getvalue())
    return record


PHASE_NAMES: dict[str, set[str]] = {}

ATTACKS = {
    # name: (phase of the reply, tamper, what the reason says)
    "nan_features": ("encode", edit_split("encode", _set("z", lambda z: z * np.nan)), "'z' holds NaN"),
    "expert_out_of_range": ("encode", edit_split("encode", _set("expert", lambda e: e + 99)), "'expert' has a value"),
    "row_out_of_range": ("encode", edit_split("encode", _set("row", lambda r: r + 10_000)), "'row' has a value"),
    "beam_label_out_of_range": ("encode", edit_split("encode", _set("label.beam", lambda b: b + 64)),
                                "'label.beam' has a value"),
    "negative_batch": ("encode", edit_split("encode", _set("batch", lambda b: b - 5)), "negative batch"),
    "extra_array": ("encode", edit_split("encode", lambda a: {**a, "payload": np.zeros(3, np.float32)}),
                    "unexpected arrays ['payload']"),
    "missing_present": ("encode", edit_split("encode", _drop("present")), "missing arrays ['present']"),
    "wrong_feature_width": ("encode", edit_split("encode", _set("z", lambda z: z[:, :5].copy())), "axis 1"),
    "wrong_dtype": ("encode", edit_split("encode", _set("z", lambda z: z.astype(np.float64))), "dtype"),
    "huge_declared_rows": ("encode", edit_split("encode", with_bad_blob("batch", shape=(10**11,))), "rows"),
    "garbage_bytes": ("encode", edit_split("encode", with_bad_blob("z", data=b"\x00" * 15)), "not a .npy blob"),
    "big_endian_header": ("encode", edit_split("encode", _big_endian), "header says dtype >f4"),
    "gate_inputs_nan": ("features", edit_split("features", _set("features", lambda f: f * np.inf)), "NaN or Inf"),
    "gate_inputs_too_many_rows": ("features", edit_split("features", lambda a: {
        k: np.concatenate([v] * 40) for k, v in a.items()}), "rows"),
    "inflated_sample_count": ("encode", edit_metrics(**{"num-examples": 10**12}), "num-examples"),
    "negative_flops": ("encode", edit_metrics(**{FORWARD_FLOPS_KEY: -1.0}), FORWARD_FLOPS_KEY),
    "nan_flops": ("finish", edit_metrics(**{BACKWARD_FLOPS_KEY: float("nan")}), BACKWARD_FLOPS_KEY),
    "no_metrics": ("encode", edit_metrics(metrics=None), "no metrics"),
}


@pytest.fixture(scope="module")
def schema_names():
    cfg = split_config(federated={"rounds": 2, "stage1_rounds": 1})
    from fedmoe.federated.world import world_for

    PHASE_NAMES.update({p: set(specs) for p, specs in SplitReplySchema.for_world(world_for(cfg)).phases.items()})
    return cfg


def _only_finish(tamper):
    """Apply ``tamper`` to ``finish`` replies only (they are the ones without ``split`` arrays)."""
    def edit(reply):
        if "split" not in reply.content.array_records:
            tamper(reply)
    return edit


def _only_split(tamper):
    def edit(reply):
        if "split" in reply.content.array_records:
            tamper(reply)
    return edit


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_reply_is_refused_and_the_run_goes_on(attack, schema_names, caplog):
    cfg = schema_names
    phase, tamper, reason = ATTACKS[attack]
    grid = LocalGrid(2, tamper={ATTACKER: _only_finish(tamper) if phase == "finish" else _only_split(tamper)})
    loop = SplitLearning(cfg)
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.split_learning"):
        rows = loop.run(grid)
    hit = [f for r in rows for f in r["failures"]]
    assert hit and all(f.startswith("device 1 (") and "rejected" in f for f in hit), hit
    assert any(reason in f for f in hit), (reason, hit)
    assert "rejected" in caplog.text
    assert all(r["completed"] >= 1 for r in rows)  # the honest device finished every round
    assert all(bool(torch.isfinite(v).all()) for v in loop.server.model.state_dict().values())
    assert rows[-1]["accuracy"] is not None


def test_the_honest_run_has_no_rejection(schema_names):
    rows = SplitLearning(schema_names).run(LocalGrid(2))
    assert not any(r["failures"] for r in rows) and all(r["completed"] == 2 for r in rows)


def test_sizes_come_from_the_metadata_before_any_value_is_decoded(schema_names):
    """A record declaring 10¹¹ rows in a few bytes is refused from its metadata (no allocation)."""
    from fedmoe.federated.world import world_for

    schema = SplitReplySchema.for_world(world_for(schema_names))
    ok = {"features": np.zeros((4, 13), np.float32), "present": np.ones((4, 5), bool)}
    reply = Message(content=_content(ok, **{"num-examples": 10}), reply_to=_request())
    arrays, metrics = read_split_reply(reply, "features", schema, max_rows=8, max_examples=10)
    assert set(arrays) == {"features", "present"} and metrics["num-examples"] == 10
    huge = ArrayRecord({k: array_of(v) for k, v in ok.items()})
    huge["present"] = Array(dtype="bool", shape=(10**11, 5), stype=huge["present"].stype, data=b"\x93NUMPY")
    with pytest.raises(SplitReplyError, match="rows"):
        read_split_reply(Message(content=_content(huge, **{"num-examples": 10}), reply_to=_request()), "features",
                         schema, max_rows=8, max_examples=10)
    with pytest.raises(SplitReplyError, match="num-examples"):
        read_split_reply(Message(content=_content(ok, **{"num-examples": 11}), reply_to=_request()), "features",
                         schema, max_rows=8, max_examples=10)


def _request() -> Message:
    from flwr.app import RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return Message(content=RecordDict(), message_type="train.split", dst_node_id=1)


def _content(arrays, **metrics):
    from flwr.app import MetricRecord, RecordDict

    record = arrays if isinstance(arrays, ArrayRecord) else ArrayRecord({k: array_of(v) for k, v in arrays.items()})
    return RecordDict({"split": record, "metrics": MetricRecord(metrics)})
