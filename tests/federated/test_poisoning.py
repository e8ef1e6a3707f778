"""Poisoning within the limits of validation (issue 18, finding 4): a device that stays just under the
per-reply checks every round must not be able to grow the global model, and buffers are bounded too.

Each attack runs three times on the real ClientApp: every device honest; the attack with clipping switched
off (:meth:`ExpertWise.bound` a no-op: what the server did before, so the attack is shown to work); the attack
under the default clipping (:func:`fedmoe.strategies.validation.bound_updates`)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.federated.parameters import SHARED
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.world import world_for
from fedmoe.flower import to_numpy, to_record
from fedmoe.strategies.expert_wise import ExpertWise
from tests.federated.conftest import LocalGrid, tiny_config

ATTACKER = 2  # node 2, device 1
ROUNDS = 3


def _config():
    return tiny_config(partition={"num_devices": 3},
                       federated={"rounds": ROUNDS, "stage1_rounds": ROUNDS, "clients_per_round": 3})


@pytest.fixture
def without_clipping(monkeypatch):
    """Switch the clipping off for the rest of the test (the server before issue 18)."""
    def switch_off():
        monkeypatch.setattr(ExpertWise, "bound", lambda self, updates: (updates, []))
    return switch_off


def _run(cfg, attack=None):
    """``(global state-dict arrays after each round, strategy)``; ``attack(sent, mine, world)`` edits the
    attacker's reply (both by state-dict name) every round."""
    world = world_for(cfg)
    grid = LocalGrid(3)
    if attack is not None:
        def tamper(reply):
            sent = world.layout.unpack(to_numpy(grid.sent[-1].content["arrays"]))  # the message being answered
            mine = world.layout.unpack(to_numpy(reply.content["arrays"]))
            attack(sent, mine, world)
            reply.content["arrays"] = to_record(world.layout.pack(mine))
        grid.tamper = {ATTACKER: tamper}
    strategy = ExpertWise(world)
    after: list[dict[str, np.ndarray]] = []
    strategy.start(grid, to_record(state_to_numpy(world.template.state_dict())), num_rounds=ROUNDS,
                   on_round_end=lambda r, arrays: after.append({k: v.numpy() for k, v in arrays.items()}))
    return after, strategy


def _grow(sent, mine, world):
    """The issue's attack: every trainable parameter pushed along itself by 0.9 × the per-reply limit
    ``max_update_ratio × max(‖θ‖, 1)``, which the step check accepts."""
    r = world.cfg.federated.max_update_ratio
    for name, _ in world.template.named_parameters():
        if name not in mine:
            continue
        ref = sent[name].astype(np.float64)
        norm = float(np.linalg.norm(ref))
        direction = ref / norm if norm > 0 else np.full(ref.shape, 1 / np.sqrt(ref.size))
        mine[name] = (ref + 0.9 * r * max(norm, 1.0) * direction).astype(mine[name].dtype)


def _shared_norm(arrays, world) -> float:
    names = [k for k in world.layout.groups[SHARED] if k in dict(world.template.named_parameters())]
    return float(np.sqrt(sum(np.sum(arrays[k].astype(np.float64) ** 2) for k in names)))


@pytest.fixture(scope="module")
def honest():
    return _run(_config())


def test_slow_growth_under_the_step_limit_is_clipped(honest, without_clipping):
    world = world_for(_config())
    bounded, clipped = _run(_config(), _grow)
    without_clipping()
    grown, unclipped = _run(_config(), _grow)
    norms = {name: [_shared_norm(a, world) for a in run] for name, run in
             (("honest", honest[0]), ("unclipped", grown), ("clipped", bounded))}
    print("‖shared parameters‖ after each round:", norms)
    # without clipping every attacked reply is accepted and the model grows several-fold every round ...
    assert all(h.rejected == 0 and h.completed == 3 for h in unclipped.history)
    assert norms["unclipped"][-1] > 50 * norms["honest"][-1]
    # ... with it, the attacker is clipped every round and the model stays where the honest devices take it
    assert all(h.rejected == 0 and h.completed == 3 and h.clipped == 1 for h in clipped.history)
    for got, ref in zip(norms["clipped"], norms["honest"]):
        assert abs(got - ref) < 0.1 * ref, (norms["clipped"], norms["honest"])


def _huge_buffer(sent, mine, world):
    """A buffer (the GPS standardiser's std, not a trainable parameter: the step check skips it) set to 1e30."""
    mine["standardiser.std_gps"] = np.full_like(mine["standardiser.std_gps"], 1e30)


def test_a_poisoned_buffer_is_bounded_by_the_honest_replies(honest, without_clipping):
    world = world_for(_config())
    bounded, clipped = _run(_config(), _huge_buffer)
    without_clipping()
    poisoned, unclipped = _run(_config(), _huge_buffer)
    key = "standardiser.std_gps"
    assert all(h.rejected == 0 for h in unclipped.history) and poisoned[0][key].max() > 1e29
    # round 1: every device fits the standardiser, so the attacker may move it by c honest fits at most;
    # later rounds: the honest devices leave it alone, so the attacker's lone move is undone
    c = world.cfg.federated.clip_ratio
    sent = world.template.state_dict()[key].numpy().astype(np.float64)
    honest_step = np.linalg.norm(honest[0][0][key] - sent)
    assert np.linalg.norm(bounded[0][key] - honest[0][0][key]) <= c * honest_step
    for got, ref in zip(bounded[1:], bounded[:-1]):  # (FedAvg's weighted mean of equal float32 values: ±1 ulp)
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-6)
    assert all(np.isfinite(v).all() for run in bounded for v in run.values() if v.dtype.kind == "f")
    assert all(h.clipped == 1 for h in clipped.history)
