"""Split learning over Flower messages: the gradients a device receives, the loop, SplitFed, failures."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from fedmoe.federated.world import world_for
from fedmoe.models.heads import task_loss
from fedmoe.models.moe import batch_tensors
from fedmoe.split.device import apply_gradients, device_keys, encode, gate_inputs, load_device, training_samples
from fedmoe.split.server import ChunkInput, SplitServer
from fedmoe.strategies.split_learning import SplitLearning
from fedmoe.training import score_function_loss
from tests.conftest import run_cli_on_ray
from tests.federated.conftest import LocalGrid
from tests.split.conftest import split_config


@pytest.fixture(scope="module")
def setup():
    """A device part, a server, one batch of the device's data and the unsplit mixture they make."""
    world = world_for(split_config())
    part = load_device(world, 0, {})
    server = SplitServer(world, seed=0)
    samples = training_samples(world, 0, part.model)
    rows = np.arange(16)
    return world, part, server, samples, rows


def _unsplit(world, part, server):
    ref = world.new_model()
    sd = ref.state_dict()
    sd.update(server.model.state_dict())
    sd.update({k: v for k, v in part.model.state_dict().items() if k in device_keys(part.model)})
    ref.load_state_dict(sd)
    ref.train()
    return ref


def _expert_grads(model):
    return {n: p.grad.clone() for n, p in model.experts.named_parameters() if p.grad is not None}


def _check_same(a: dict, b: dict) -> None:
    assert a and set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_stage1_device_gradient_equals_the_unsplit_models(setup):
    world, part0, server0, samples, rows = setup
    part, server = copy.deepcopy(part0), copy.deepcopy(server0)
    ref = _unsplit(world, part, server)
    inputs, present, labels = batch_tensors(samples, rows)
    pairs = ref.forward_each(inputs, present)
    loss = sum(task_loss(o, {k: v[r] for k, v in labels.items()}, world.cfg.train.tasks)[0]
               for r, o in pairs) / len(pairs)
    loss.backward()

    enc = encode(world, part, samples, [rows], None)
    [res] = server.train_exchange([ChunkInput(enc, 1.0)], stage=1)
    assert res.rows == len(rows) and np.isfinite(res.grads).all() and np.abs(res.grads).sum() > 0
    apply_gradients(world, part, samples, [rows], None, res.grads)
    _check_same(_expert_grads(part.model), _expert_grads(ref))
    heads = {n: p.grad for n, p in server.model.heads.named_parameters()}
    _check_same(heads, {n: p.grad for n, p in ref.heads.named_parameters()})


def test_stage2_device_and_gate_gradients_equal_the_unsplit_models(setup):
    world, part0, server0, samples, rows = setup
    part, server = copy.deepcopy(part0), copy.deepcopy(server0)
    server.begin_stage(2)
    ref = _unsplit(world, part, server)
    tau, seed, cost_row = 0.7, 1234, world.cost_row(0, 1e6)
    feats, present_np = gate_inputs(part.model, samples, [rows])
    selected = server.select(feats, present_np, cost_row, tau, True, seed)
    assert selected.sum(1).min() >= 1

    inputs, present, labels = batch_tensors(samples, rows)
    costs = torch.as_tensor(np.broadcast_to(cost_row, selected.shape).copy())
    ref.gate.temperature = tau
    critic = copy.deepcopy(server.critic)
    torch.manual_seed(seed)
    out = ref(inputs, present, costs, detach_weights=True)
    assert np.array_equal(out.gate.selected.numpy(), selected)  # the same draw
    per_sample, _ = task_loss(out.tasks, labels, world.cfg.train.tasks, reduction="none")
    tc = server.tcfg
    loss = score_function_loss(per_sample, out.gate, costs, tc.cost_weight, tc.z_loss_weight, tc.balance_weight,
                               critic(out.gate_features, costs) if critic else None, tc.entropy_weight)
    loss.backward()

    enc = encode(world, part, samples, [rows], selected)
    assert enc.features.shape[0] == selected.sum()  # only the selected pairs are computed and sent
    [res] = server.train_exchange([ChunkInput(enc, 1.0, cost_row, feats, selected, tau, seed)], stage=2)
    apply_gradients(world, part, samples, [rows], selected, res.grads)
    _check_same(_expert_grads(part.model), _expert_grads(ref))
    _check_same({n: p.grad for n, p in server.model.gate.named_parameters()},
                {n: p.grad for n, p in ref.gate.named_parameters()})


def test_noisy_link_changes_the_features_the_server_sees(setup):
    world, part, _, samples, rows = setup
    cfg = split_config(split={"link": "analog"})
    server = SplitServer(world_for(cfg), seed=0)
    enc = encode(world, part, samples, [rows], None)
    leaf, received = server.receive(enc.features, snr_linear=10.0)
    noise = (received - leaf).detach().numpy()
    power = (enc.features ** 2).mean(1, keepdims=True)
    rel = (noise ** 2 / power).mean()
    assert rel == pytest.approx(0.1, rel=0.1)  # distortion σ²/(p|h|²) = 1/SNR = 0.1 of the feature power


def _run(cfg, grid):
    loop = SplitLearning(cfg)
    return loop, loop.run(grid)


def test_split_loop_runs_two_devices_two_rounds():
    cfg = split_config()
    loop, rows = _run(cfg, LocalGrid(2))
    assert [r["stage"] for r in rows] == [1, 2]
    for r in rows:
        assert r["completed"] == 2 and r["failed"] == 0 and not r["failures"]
        assert r["latency_s"] > 0 and r["energy_j"] > 0 and r["upload_bits"] > 0 and r["device_flops"] > 0
        assert np.isfinite(r["train_loss"]) and r["accuracy"] is not None and r["eval_rows"] > 0
    assert rows[1]["clock_s"] == pytest.approx(rows[0]["latency_s"] + rows[1]["latency_s"])
    # stage II sends only the gate's selection: fewer feature bits than stage I, which sends every expert
    assert rows[1]["upload_bits"] < rows[0]["upload_bits"]


def test_splitfed_averages_the_devices_experts():
    cfg = split_config(mode="splitfed", federated={"rounds": 1, "stage1_rounds": 1})
    grid = LocalGrid(2)
    loop, _ = _run(cfg, grid)
    from fedmoe.clients.split import DEVICE_KEY
    from fedmoe.flower import to_numpy

    states = [to_numpy(grid.contexts[n].state.array_records[DEVICE_KEY]) for n in (1, 2)]
    sizes = [len(training_samples(loop.world, d, load_device(loop.world, d, states[d]).model)) for d in (0, 1)]
    key = next(k for k in loop.experts if k.endswith("weight"))
    expected = (sizes[0] * states[0][key] + sizes[1] * states[1][key]) / sum(sizes)
    np.testing.assert_allclose(loop.experts[key], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(states[0][key], states[1][key])  # the devices trained apart


def test_a_device_that_disconnects_mid_round_does_not_stall_the_server(caplog):
    cfg = split_config(split={"message_timeout_s": 5.0}, train={"batch_size": 8})
    grid = LocalGrid(2, silent_after={2: 2})  # device 1 answers two messages, then nothing
    with caplog.at_level(logging.WARNING):
        loop, rows = _run(cfg, grid)
    assert set(grid.timeouts[1:]) == {5.0}  # every exchange after the device query waits at most 5 s
    first = rows[0]
    assert first["completed"] == 1 and first["failed"] == 1
    assert any("device 1" in f and "no reply" in f for f in first["failures"])
    assert "did not reply" in caplog.text
    assert rows[-1]["round"] == cfg.federated.rounds and rows[-1]["accuracy"] is not None


def test_a_failing_device_is_logged_and_the_round_goes_on():
    loop, rows = _run(split_config(), LocalGrid(2, fail=[1]))
    assert all(r["completed"] == 1 and r["failed"] == 1 for r in rows)
    assert all("injected failure" in r["failures"][0] for r in rows)


def test_split_learning_on_ray_through_the_cli(tmp_path, capsys):
    """The real ServerApp and ClientApp on Flower's Ray backend: 2 devices, 2 rounds, digital link."""
    sets = ["partition.num_devices=2", "partition.samples_per_device=48", "model.experts_per_modality=1",
            "model.head_hidden=32", "train.batch_size=32", "federated.rounds=2", "federated.stage1_rounds=1",
            "federated.clients_per_round=2"]
    assert run_cli_on_ray("split", tmp_path, sets) == 0
    out = capsys.readouterr().out
    assert "split learning run" in out and "final accuracy" in out
    import json

    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["mode"] == "split" and doc["link"] == "digital"
    assert [r["completed"] for r in doc["rounds"]] == [2, 2]
    assert all(r["upload_bits"] > 0 and r["accuracy"] is not None for r in doc["rounds"])
    assert (tmp_path / "accuracy.png").is_file() and (tmp_path / "energy.png").is_file()


def test_a_scenario_can_extend_another(tmp_path):
    from fedmoe.config import ConfigError
    from fedmoe.scenarios import load_scenario

    cfg = load_scenario("splitfed")
    assert cfg.mode == "splitfed" and cfg.split.link == "digital" and cfg.partition.num_devices == 10  # from default
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(f'extends = "{b}"\n')
    b.write_text(f'extends = "{a}"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_scenario(a)


def test_bench_summary_counts_energy_until_the_target():
    from sims.bench.split_vs_federated import energy_to_accuracy, summarise

    rows = [{"round": 1, "energy_j": 2.0, "clock_s": 1.0, "upload_bits": 10.0, "accuracy": 0.1},
            {"round": 2, "energy_j": 3.0, "clock_s": 3.0, "upload_bits": 30.0},
            {"round": 3, "energy_j": 5.0, "clock_s": 6.0, "upload_bits": 20.0, "accuracy": 0.4}]
    assert energy_to_accuracy(rows, 0.3) == 10.0 and energy_to_accuracy(rows, 0.1) == 2.0
    assert energy_to_accuracy(rows, 0.5) is None
    s = summarise(rows)
    assert s["final_accuracy"] == 0.4 and s["virtual_time_s"] == 6.0 and s["per_round"]["upload_bits"] == 20.0
