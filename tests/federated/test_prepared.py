"""A device's prepared data in its state folder (fedmoe.federated.prepared): a second "process" (a fresh
world) reads the partition, held-out data and expert costs from the disk without generating them; a
changed config or a damaged, tampered or foreign file is never used (rebuilt instead, never unpickled);
the ClientApp with a node-config ``state-dir`` gives the same rounds as without it; the query handler
imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fedmoe.federated.world as world_module
from fedmoe.federated.prepared import PreparedCache
from fedmoe.federated.world import ScenarioWorld
from tests.federated.conftest import tiny_config


def fresh_world(cfg, root) -> ScenarioWorld:
    """What a new ``flwr-clientapp`` process builds: a new world, with the node's cache."""
    world = ScenarioWorld(cfg)
    world.prepared = PreparedCache(root)
    return world


@pytest.fixture
def no_generation(monkeypatch):
    """Makes generating a partition, drawing held-out data or counting FLOPs fail: a cache hit must not need them."""
    def refuse(*args, **kwargs):
        raise AssertionError("generated although the state folder holds it")

    def install(world: ScenarioWorld) -> None:
        monkeypatch.setattr(world_module, "make_device_partition", refuse)
        monkeypatch.setattr(world_module, "expert_costs", refuse)
        monkeypatch.setattr(world, "source", refuse)
    return install


def same_samples(a, b) -> None:
    assert a.to_arrays().keys() == b.to_arrays().keys()
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, b.to_arrays()[key], err_msg=key)


def test_a_second_process_reads_what_the_first_prepared_without_generating_it(tiny_cfg, tmp_path, no_generation):
    first = fresh_world(tiny_cfg, tmp_path)
    part, held_out, costs = first.partition(1), first.evaluation_data(1), first.expert_costs
    assert [e for _, e in first.prepared.events] == ["miss", "miss", "miss"]
    names = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in (tmp_path / "prepared").iterdir())
    assert names == ["evaluation-1", "experts-" + names[1].split("-")[1], "partition-1"]

    second = fresh_world(tiny_cfg, tmp_path)
    no_generation(second)
    part2 = second.partition(1)
    same_samples(part.samples, part2.samples)
    np.testing.assert_array_equal(part.modalities, part2.modalities)
    np.testing.assert_array_equal(part.dropped, part2.dropped)
    np.testing.assert_array_equal(part.degradation.noise, part2.degradation.noise)
    np.testing.assert_array_equal(part.degradation.dropout, part2.degradation.dropout)
    same_samples(held_out, second.evaluation_data(1))
    assert second.expert_costs == costs
    assert second.prepared.events == [("partition-1", "hit"), ("evaluation-1", "hit"), ("experts", "hit")]


def test_a_changed_config_is_not_served_from_the_cache(tiny_cfg, tmp_path):
    """The data depend on data.*, partition.* and the channel: a new value finds no entry under its key, is
    generated, and replaces the old entry; the model section keys the expert costs."""
    fresh_world(tiny_cfg, tmp_path).partition(0)
    for change in ({"data": {"seed": tiny_cfg.data.seed + 1}},
                   {"partition": {"samples_per_device": 40}},
                   {"wireless": {"channel": {"codebook_size": 32}}}):
        cfg = tiny_config(**change)
        world = fresh_world(cfg, tmp_path)
        got = world.partition(0)
        assert world.prepared.events == [("partition-0", "miss")], change
        reference = ScenarioWorld(cfg).partition(0)  # no cache at all
        same_samples(got.samples, reference.samples)
        assert len(list((tmp_path / "prepared").glob("partition-0-*.npz"))) == 1  # the old entry is gone
    other_model = tiny_config(model={"head_hidden": 16})
    fresh_world(tiny_cfg, tmp_path).expert_costs
    world = fresh_world(other_model, tmp_path)
    world.partition(0), world.expert_costs
    assert [e for _, e in world.prepared.events] == ["miss", "miss"]  # data config changed back; model changed
    unchanged_data = fresh_world(other_model.model_copy(update={"train": tiny_cfg.train.model_copy(
        update={"lr": 0.5})}), tmp_path)
    unchanged_data.partition(0)
    assert unchanged_data.prepared.events == [("partition-0", "hit")]  # a training setting does not invalidate


def _entry(root, name):
    (path,) = (root / "prepared").glob(f"{name}-*.npz")
    return path


def _rewrite(path, edit) -> None:
    """Rewrite an .npz with ``edit(arrays)`` applied (as a tamperer with write access would)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    os.unlink(path)
    np.savez(path, **arrays)
    path.chmod(0o600)


def _flip_a_value_byte(path) -> None:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("inputs/radar.npy")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200  # inside the values
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (_flip_a_value_byte, "Bad CRC"),  # the zip's own checksum catches a flipped byte
    (lambda p: _rewrite(p, lambda a: a.__setitem__("labels/beam", (a["labels/beam"] + 1) % 8)),
     "do not match the digest"),
    (lambda p: _rewrite(p, lambda a: a.__setitem__("cache/key", np.array(["0" * 32]))), "made for key"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not"),
    (lambda p: p.chmod(0o666), "lets the group or others write it"),
    (lambda p: _rewrite(p, lambda a: a.__setitem__("present", a["present"][:5])), "rows"),
], ids=["flipped byte", "edited labels", "foreign key", "truncated", "world-writable", "wrong rows"])
def test_a_damaged_or_tampered_entry_is_rejected_and_rebuilt(tiny_cfg, tmp_path, damage, reason):
    reference = fresh_world(tiny_cfg, tmp_path).partition(2)
    damage(_entry(tmp_path, "partition-2"))
    world = fresh_world(tiny_cfg, tmp_path)
    got = world.partition(2)
    ((name, event),) = world.prepared.events
    assert name == "partition-2" and event.startswith("rejected: ") and reason in event, event
    assert len(event.splitlines()) == 1
    same_samples(got.samples, reference.samples)
    again = fresh_world(tiny_cfg, tmp_path)  # the rebuilt entry was written back and is good
    same_samples(again.partition(2).samples, reference.samples)
    assert again.prepared.events == [("partition-2", "hit")]


class _Planted:
    """Unpickling this writes a file: proof that a cache file was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_entry_holding_a_pickle_is_refused_without_unpickling(tiny_cfg, tmp_path):
    fresh_world(tiny_cfg, tmp_path).expert_costs
    path = _entry(tmp_path, "experts")
    marker = tmp_path / "unpickled"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["experts/names"] = np.array([_Planted(str(marker))] * len(arrays["experts/names"]), dtype=object)
    os.unlink(path)
    np.savez(path, **arrays)
    path.chmod(0o600)
    world = fresh_world(tiny_cfg, tmp_path)
    costs = world.expert_costs
    ((_, event),) = world.prepared.events
    assert event.startswith("rejected: ") and "object" in event, event
    assert not marker.exists()
    assert costs == ScenarioWorld(tiny_cfg).expert_costs


@pytest.mark.slow  # two 2-round runs with every message in a fresh world: ~2.5 min on two shared cores
def test_the_client_app_with_a_state_dir_gives_the_same_rounds_and_logs_its_hits(tiny_cfg, tmp_path, caplog,
                                                                                   local_grid_factory):
    """Every message in a fresh world (as a fresh ``flwr-clientapp`` process has): with a node-config
    ``state-dir`` round 2 reads every device's data from the disk, and the rounds equal those without."""
    import logging

    from fedmoe.strategies.server_app import serve

    class FreshProcessGrid(local_grid_factory):
        def answer(self, msg):
            world_module._WORLDS.clear()
            return super().answer(msg)

    plain = serve(FreshProcessGrid(4), tiny_cfg, None).metrics["rounds"]
    grid = FreshProcessGrid(4)
    for ctx in grid.contexts.values():
        ctx.node_config["state-dir"] = str(tmp_path / f"node-{ctx.node_config['partition-id']}")
    with caplog.at_level(logging.INFO, logger="flwr"):
        cached = serve(grid, tiny_cfg, None).metrics["rounds"]
    assert [r["accuracy"] for r in cached] == [r["accuracy"] for r in plain]
    assert [r.get("train_loss") for r in cached] == [r.get("train_loss") for r in plain]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fedmoe device")]
    for k in range(4):
        assert f"fedmoe device {k} train round 1" in " ".join(lines)
        (round2,) = [ln for ln in lines if ln.startswith(f"fedmoe device {k} train round 2")]
        assert f"partition-{k} hit" in round2 and "experts hit" in round2, round2
        assert list((tmp_path / f"node-{k}" / "prepared").glob(f"partition-{k}-*.npz"))


def test_the_query_handler_imports_no_torch(tiny_cfg, tmp_path):
    """A SuperNode answers the device query in a fresh process: it must not pay for importing torch."""
    from fedmoe.federated.world import config_json

    (tmp_path / "scenario.json").write_text(config_json(tiny_cfg))
    script = f"""
import sys
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
from fedmoe.clients.app import app
scenario = open({str(tmp_path / 'scenario.json')!r}).read()
msg = Message(content=RecordDict({{"config": ConfigRecord({{"scenario": scenario}})}}), message_type=MessageType.QUERY,
              dst_node_id=1)
ctx = Context(run_id=1, node_id=1, node_config={{"partition-id": 2, "num-partitions": 4}}, state=RecordDict(),
              run_config={{}})
reply = app(msg, ctx)
print(dict(reply.content["metrics"])["partition-id"], "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(world_module.__file__).rsplit("/fedmoe/", 1)[0])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["2", "False"], done.stdout


def test_cache_entries_are_plain_arrays(tiny_cfg, tmp_path):
    world = fresh_world(tiny_cfg, tmp_path)
    world.partition(0), world.expert_costs
    for path in (tmp_path / "prepared").iterdir():
        with np.load(path, allow_pickle=False) as z:  # would raise on an object array
            assert {z[k].dtype.kind for k in z.files} <= set("biufU"), path
            assert json.dumps(str(z["cache/key"][0]))
