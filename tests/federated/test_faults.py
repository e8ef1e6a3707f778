"""Fault injection (federated.faults): reproducible fates, crashes that the round survives,
stragglers on the virtual clock, and sign-flipping devices."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import MessageType

from fedmoe.config import ConfigError, FaultConfig, parse_config
from fedmoe.federated.faults import fate, malicious_devices
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.protocol import ENERGY_KEY, LATENCY_KEY, PARTITION_KEY, USAGE_KEY
from fedmoe.federated.world import world_for
from fedmoe.flower import to_numpy, to_record
from fedmoe.strategies.expert_wise import ExpertWise
from tests.federated.conftest import LocalGrid, tiny_config


def test_fates_are_reproducible_and_follow_the_rates():
    cfg = FaultConfig(crash_rate=0.2, hang_rate=0.1, straggler_rate=0.3, seed=4)
    draws = [fate(cfg, r, d) for r in range(1, 201) for d in range(50)]
    assert draws == [fate(cfg, r, d) for r in range(1, 201) for d in range(50)]
    share = {f: draws.count(f) / len(draws) for f in ("crash", "hang", "straggler", "ok")}
    assert share["crash"] == pytest.approx(0.2, abs=0.02) and share["hang"] == pytest.approx(0.1, abs=0.02)
    assert share["straggler"] == pytest.approx(0.3, abs=0.02) and share["ok"] == pytest.approx(0.4, abs=0.02)
    assert all(fate(FaultConfig(), r, d) == "ok" for r in range(5) for d in range(5))


def test_malicious_devices_are_a_fixed_share():
    cfg = FaultConfig(sign_flip_fraction=0.1, seed=1)
    bad = malicious_devices(cfg, 50)
    assert len(bad) == 5 and len(set(bad.tolist())) == 5 and (bad < 50).all()
    np.testing.assert_array_equal(bad, malicious_devices(cfg, 50))
    assert len(malicious_devices(FaultConfig(), 50)) == 0


def test_rates_above_one_are_a_config_error():
    with pytest.raises(ConfigError, match="exceeds 1"):
        parse_config({"crash_rate": 0.6, "straggler_rate": 0.5}, FaultConfig, "federated.faults")


def _round(cfg, grid):
    world = world_for(cfg)
    strategy = ExpertWise(world)
    initial = state_to_numpy(world.template.state_dict())
    strategy.start(grid, to_record(initial), num_rounds=1)
    return strategy


def test_crashed_devices_are_logged_and_the_round_goes_on(caplog):
    cfg = tiny_config(federated={"rounds": 1, "faults": {"crash_rate": 0.5, "seed": 3}})
    crashed = [d for d in range(4) if fate(cfg.federated.faults, 1, d) == "crash"]
    assert 0 < len(crashed) < 4, "the seed must crash some devices and spare others"
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.expert_wise"):
        strategy = _round(cfg, LocalGrid(4))
    rec = strategy.history[0]
    assert rec.completed == 4 - len(crashed) and rec.failed == len(crashed)
    assert sum("injected crash" in f for f in rec.failures) == len(crashed)


class RecordingGrid(LocalGrid):
    """Keeps every training reply (to compare devices' updates between runs)."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        self.replies = getattr(self, "replies", []) + list(replies)
        return replies


def _training_replies(grid):
    return {int(r.content["metrics"][PARTITION_KEY]): r for r in grid.replies
            if not r.has_error() and "arrays" in r.content.array_records and USAGE_KEY in r.content["metrics"]}


def test_stragglers_and_sign_flippers_change_what_devices_report():
    base = tiny_config(federated={"rounds": 1})
    honest_grid = RecordingGrid(4)
    _round(base, honest_grid)
    faults = {"straggler_rate": 1.0, "straggler_factor": 3.0, "sign_flip_fraction": 0.25, "sign_flip_scale": 2.0}
    cfg = tiny_config(federated={"rounds": 1, "faults": faults})
    grid = RecordingGrid(4)
    strategy = _round(cfg, grid)
    honest, faulty = _training_replies(honest_grid), _training_replies(grid)
    assert set(honest) == set(faulty) == {0, 1, 2, 3}
    bad = int(malicious_devices(cfg.federated.faults, 4)[0])
    sent = to_numpy(next(m for m in grid.sent if m.metadata.dst_node_id == bad + 1
                         and m.metadata.message_type == MessageType.TRAIN).content["arrays"])
    for dev in range(4):
        h, f = honest[dev].content["metrics"], faulty[dev].content["metrics"]
        assert (f[LATENCY_KEY] == pytest.approx(3.0 * h[LATENCY_KEY])
                and f[ENERGY_KEY] == pytest.approx(3.0 * h[ENERGY_KEY]))
        ha, fa = to_numpy(honest[dev].content["arrays"]), to_numpy(faulty[dev].content["arrays"])
        for k in ha:
            flips = dev == bad and np.issubdtype(ha[k].dtype, np.floating)
            expected = sent[k] - 2.0 * (ha[k] - sent[k]) if flips else ha[k]
            np.testing.assert_allclose(fa[k], expected, rtol=1e-5, atol=1e-5)
    assert strategy.history[0].latency_s == pytest.approx(
        3.0 * max(h.content["metrics"][LATENCY_KEY] for h in honest.values()))


def test_failure_reasons_drop_the_ray_traceback():
    from fedmoe.strategies.expert_wise import short_reason

    ray_reason = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<ray::ClientAppActor.run()\n"
                  "  File \"fedmoe/clients/app.py\", line 105, in train\n"
                  "flwr.clientapp.client_app.ClientAppException: \n"
                  "Exception ClientAppException occurred. Message: injected crash of device 3 in round 1'>")
    assert short_reason(ray_reason) == "injected crash of device 3 in round 1"
    assert short_reason("injected failure") == "injected failure"


def _seed_with_one_hang(faults: dict, devices: int) -> int:
    """A fault seed under which no device hangs in round 1 (the Ray workers start then, slowly on a
    busy machine) and exactly one does in round 2."""
    for seed in range(1000):
        cfg = FaultConfig(**faults, seed=seed)
        r1, r2 = [fate(cfg, 1, d) for d in range(devices)], [fate(cfg, 2, d) for d in range(devices)]
        if "hang" not in r1 and r2.count("hang") == 1:
            return seed
    raise AssertionError("no such seed")


def test_a_hanging_device_times_out_on_ray_and_the_run_goes_on(tmp_path, caplog):
    """Flower's own wait: the server's ``send_and_receive`` gives up after ``round_timeout_s``,
    aggregates the replies that arrived and logs the device that did not answer."""
    from fedmoe.simulation import run_federated

    faults = {"hang_rate": 0.3, "hang_s": 25.0}
    seed = _seed_with_one_hang(faults, 3)
    hung = [d for d in range(3) if fate(FaultConfig(**faults, seed=seed), 2, d) == "hang"]
    cfg = tiny_config(partition={"num_devices": 3},
                      federated={"rounds": 3, "clients_per_round": 3, "round_timeout_s": 15.0,
                                 "faults": {**faults, "seed": seed}})
    with caplog.at_level(logging.WARNING, logger="fedmoe.strategies.expert_wise"):
        run = run_federated(cfg, tmp_path, progress=False)
    first, second, third = run.strategy.history
    assert first.completed == 3 and first.failed == 0
    assert second.selected == 3 and second.completed == 2 and second.failed == 1
    assert second.failures == ["1 device(s) did not reply in time"]
    assert hung[0] not in second.devices
    assert f"round 2: device(s) [{hung[0]}] did not reply within the round's timeout" in caplog.text
    assert third.completed == 3 and third.failed == 0  # while the hung worker may still be asleep
    assert run.metrics["summary"]["rounds"] == 3 and run.metrics["summary"]["accuracy"] is not None
