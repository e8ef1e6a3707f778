"""One device's part of a federated round, without Flower: load the global model, train on the
local data with the device's own cost vector, and say what it cost.

``fedmoe/clients/app.py`` wraps these functions in Flower's ``ClientApp`` handlers; tests and the
overhead benchmark call them directly (the benchmark's plain loop does exactly the
client compute the Flower simulation does).

Per round the server sends :class:`~fedmoe.federated.protocol.RoundInstructions` (stage,
epochs, learning rate, temperature, λ, FedProx μ, the device's rate and resource blocks, the
deadline and the modality budget). The device

1. masks the modalities outside its budget (their experts get no rows, hence no update),
2. runs ``local_epochs`` passes of stage I (:func:`fedmoe.training.stage1_epoch`) or
   stage II (:func:`fedmoe.training.stage2_epoch`, the resource-aware loss of [P001]
   eq. 9 with its own cost vector ``C_k`` at its allocated rate,
   :meth:`ScenarioWorld.cost_row`), adding FedProx's ``(μ/2)||w − w_t||²`` when ``μ > 0``,
3. replies with the shared parameters and the experts it trained, and a
   :class:`~fedmoe.federated.protocol.TrainReply`: its sample count,
   per-expert usage ``u_ki`` (share of its samples each expert was trained on), training
   FLOPs ``F_k = 3 Σ_i rows_ki F_i`` (forward and backward ≈ 3 forward passes, experts
   only), update bits ``b_k`` and the resulting ``T_k``, ``E_k``
   (:func:`fedmoe.federated.selection.round_costs`).

Under supervised routing with frozen experts (``train.routing_trains_experts = false``) a
stage-II round runs every expert forward once on the local data (:func:`fedmoe.training.routing_targets`,
``F_i`` per sample instead of ``3 F_i`` per sample and epoch), then trains the gate alone
on those cached losses: ``u_ki = 0``, so the device uploads the shared group only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from fedmoe.config import MODALITIES
from fedmoe.data.partition import apply_modality_mask
from fedmoe.data.samples import ISACSamples
from fedmoe.federated.parameters import is_local, payload_bits, to_numpy, upload_keys
from fedmoe.federated.protocol import EvaluateReply, RoundInstructions, TrainReply
from fedmoe.federated.selection import round_costs
from fedmoe.federated.world import ScenarioWorld
from fedmoe.models.cost import FORWARD_BACKWARD_FACTOR
from fedmoe.models.moe import MoE
from fedmoe.training import (
    caches_routing_targets,
    evaluate,
    make_critic,
    make_optimiser,
    routes_in_stage1,
    routing_holdout_mask,
    routing_targets,
    stage1_epoch,
    stage1_parameters,
    stage2_epoch,
    stage2_parameters,
)

CRITIC_PREFIX = "critic."
"""Local-state keys of the score-function critic (it never leaves the device)."""

def training_flops_range(expert_flops: np.ndarray, usage: Sequence[float], num_examples: int,
                         epochs: int) -> tuple[float, float]:
    """The least and the most FLOPs a round of :func:`local_update` counts for a device that reports
    ``usage`` on ``num_examples`` samples over ``epochs`` passes (the server checks replies with it).

    :func:`local_update` counts ``F = 3 Σ_i rows_i F_i + Σ_i fwd_i F_i``: ``rows_i = u_i n epochs``
    (sample, expert) pairs trained, and ``fwd_i ≤ n`` pairs run forward once (the cached routing
    targets of a stage-II round with frozen experts). So ``F`` lies between the first term and
    the first term plus one forward pass of every expert on every sample.
    """
    rows = np.rint(np.asarray(usage, dtype=np.float64) * (num_examples * epochs))
    everything_once = np.full(len(expert_flops), num_examples)
    return training_flops(expert_flops, rows), training_flops(expert_flops, rows, everything_once)


def training_flops(expert_flops: np.ndarray, rows: np.ndarray, forward_rows: np.ndarray | None = None) -> float:
    """``F = 3 Σ_i rows_i F_i + Σ_i fwd_i F_i``: ``rows_i`` (sample, expert) pairs trained (forward and
    backward), ``fwd_i`` only run forward; ``F_i`` the expert's forward FLOPs per sample."""
    flops = FORWARD_BACKWARD_FACTOR * float(np.asarray(rows, dtype=np.float64) @ expert_flops)
    return flops if forward_rows is None else flops + float(np.asarray(forward_rows, dtype=np.float64) @ expert_flops)


@dataclass
class LocalResult:
    """A device's reply: the arrays it uploads, the state it keeps, and its metrics."""

    arrays: dict[str, np.ndarray]
    """What the device trained and uploads, by state-dict name (uncompressed)."""
    local_state: dict[str, np.ndarray]
    metrics: dict[str, Any]
    wire: dict[str, np.ndarray]
    """The arrays its reply carries: packed per group and, with ``federated.compression``, compressed
    (:mod:`fedmoe.federated.update_codec`); ``upload-bits`` counts exactly these."""


def load_model(world: ScenarioWorld, global_arrays: Mapping[str, np.ndarray],
               local_state: Mapping[str, np.ndarray] | None = None) -> MoE:
    """A fresh mixture with the global arrays, then the device's own local parameters, loaded."""
    model = world.new_model()
    state = model.state_dict()
    unknown = [k for k in global_arrays if k not in state]
    if unknown:
        raise ValueError(f"global model has unknown parameters {unknown[:3]}{'…' if len(unknown) > 3 else ''}")
    for source in (global_arrays, {k: v for k, v in (local_state or {}).items() if k in state}):
        for k, v in source.items():
            v = np.asarray(v)
            if v.shape != tuple(state[k].shape) and v.size == state[k].numel():
                v = v.reshape(tuple(state[k].shape))  # some rules return a scalar as shape (1,)
            if tuple(v.shape) != tuple(state[k].shape):
                raise ValueError(f"parameter {k!r} has shape {tuple(v.shape)}, the model expects "
                                 f"{tuple(state[k].shape)}")
            state[k] = torch.as_tensor(np.asarray(v)).to(state[k].dtype)
    model.load_state_dict(state)
    return model


def budgeted(samples: ISACSamples, modalities: tuple[str, ...], model: MoE) -> ISACSamples:
    """``samples`` without the modalities outside the budget, and without rows no expert can serve then."""
    mask = np.array([m in modalities for m in MODALITIES])
    out = apply_modality_mask(samples, mask) if not mask.all() else samples
    servable = model.available(torch.from_numpy(out.present)).any(dim=1).numpy()
    return out if servable.all() else out.subset(np.flatnonzero(servable))


def round_seed(world: ScenarioWorld, server_round: int, device_id: int) -> int:
    return (world.cfg.train.seed * 1_000_003 + server_round * 100_003 + device_id) % (2**63)


def local_update(world: ScenarioWorld, device_id: int, global_arrays: Mapping[str, np.ndarray],
                 local_state: Mapping[str, np.ndarray] | None, instr: RoundInstructions,
                 tamper: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None] | None = None
                 ) -> LocalResult:
    """Train device ``device_id`` for one round (module docstring).

    ``tamper(wire, sent)``, if given, edits the packed arrays in place before they are compressed
    (the sign-flipping fault of :mod:`fedmoe.federated.faults` acts there, so that it reaches the
    server under any compression)."""
    if not 0 <= device_id < world.num_devices:
        raise ValueError(f"partition-id {device_id} is outside [0, {world.num_devices})")
    cfg = world.cfg
    local_state = dict(local_state or {})
    model = load_model(world, global_arrays, local_state)
    samples = budgeted(world.partition(device_id).samples, instr.modalities, model)
    if len(samples) == 0:
        raise ValueError(f"device {device_id} has no sample its allowed modalities {list(instr.modalities)} can serve")
    if instr.fit_standardiser:
        model.fit_standardiser(samples)
    seed = round_seed(world, instr.server_round, device_id)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tcfg = cfg.train.model_copy(update={"lr": instr.lr, "lr_schedule": "constant", "cost_weight": instr.cost_weight})
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()} if instr.proximal_mu > 0 else None
    steps = int(np.ceil(len(samples) / tcfg.batch_size)) * instr.local_epochs
    rows = np.zeros(model.num_experts, dtype=np.int64)  # (sample, expert) pairs trained
    forward_rows = np.zeros(model.num_experts, dtype=np.int64)  # pairs only run forward (cached routing targets)
    losses = []
    # Samples the experts never train on, fixed per device: the gate learns from the experts' losses there.
    held_out = routing_holdout_mask(len(samples), tcfg, round_seed(world, 0, device_id))
    if instr.stage == 1:
        routing = routes_in_stage1(tcfg)
        stage1_set = samples if routing or not held_out.any() else samples.subset(np.flatnonzero(~held_out))
        costs = np.broadcast_to(world.cost_row(device_id, instr.rate_bps), (len(samples), model.num_experts)) \
            if routing else None
        opt, sched = make_optimiser(stage1_parameters(model, tcfg), tcfg, steps)
        for _ in range(instr.local_epochs):
            stats = stage1_epoch(model, stage1_set, tcfg, opt, sched, rng, anchor=anchor, mu=instr.proximal_mu,
                                 costs=costs, routing_mask=held_out if routing else None)
            rows += stats.expert_rows
            losses.append(stats.loss)
    else:
        cost_row = world.cost_row(device_id, instr.rate_bps)
        costs = np.broadcast_to(cost_row, (len(samples), model.num_experts))
        critic = make_critic(model, tcfg, with_costs=True)
        if critic is not None:
            saved = {k[len(CRITIC_PREFIX):]: torch.as_tensor(v) for k, v in local_state.items()
                     if k.startswith(CRITIC_PREFIX)}
            if saved:
                critic.load_state_dict(saved)
        params = stage2_parameters(model, tcfg) + (list(critic.parameters()) if critic else [])
        opt, sched = make_optimiser(params, tcfg, steps)
        step = 0
        targets = None
        if caches_routing_targets(tcfg):  # frozen experts: run them once, then only the gate learns
            targets = routing_targets(model, samples, tcfg)
            forward_rows += model.available(torch.from_numpy(samples.present)).sum(0).numpy()
        for _ in range(instr.local_epochs):
            stats, step = stage2_epoch(model, samples, costs, tcfg, opt, sched, rng, lambda _s: instr.tau, step,
                                       critic, anchor=anchor, mu=instr.proximal_mu, routing_mask=held_out,
                                       targets=targets)
            if targets is None:
                rows += stats.expert_rows
            losses.append(stats.loss)
        if critic is not None:
            local_state.update({CRITIC_PREFIX + k: v for k, v in to_numpy(critic.state_dict()).items()})
    passes = len(samples) * instr.local_epochs
    usage = rows / max(passes, 1)
    state = to_numpy(model.state_dict())
    patterns = cfg.federated.local_keys
    keys = upload_keys(list(state), usage, patterns)
    arrays = {k: state[k] for k in keys}
    local_state.update({k: v for k, v in state.items() if is_local(k, patterns)})
    flops = training_flops(world.expert_flops, rows, forward_rows)
    wire = world.layout.pack(arrays)
    reference = world.layout.pack({k: np.asarray(global_arrays[k]) for k in arrays})
    if tamper is not None:
        tamper(wire, reference)
    wire = world.codec.encode(wire, reference, local_state, np.random.default_rng([seed, 0xC0DEC]))
    bits = payload_bits(wire)
    profile = world.profiles.subset([device_id])
    latency, energy = round_costs(profile, np.array([flops]), np.array([bits]), np.array([instr.rate_bps]))
    reply = TrainReply(num_examples=int(len(samples)), expert_usage=tuple(float(u) for u in usage),
                       train_loss=float(np.mean(losses)), flops=flops, upload_bits=bits, latency_s=float(latency[0]),
                       energy_j=float(energy[0]), partition_id=int(device_id), stage=int(instr.stage))
    metrics = reply.to_metrics()
    return LocalResult(arrays, local_state, metrics, wire)


def local_evaluate(world: ScenarioWorld, device_id: int, global_arrays: Mapping[str, np.ndarray],
                   local_state: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Beam accuracy of the global model (with the device's local parameters) on the device's held-out data."""
    model = load_model(world, global_arrays, local_state)
    samples = budgeted(world.evaluation_data(device_id), MODALITIES, model)
    rate = float(world.equal_share_rate[device_id])
    costs = np.broadcast_to(world.cost_row(device_id, rate), (len(samples), model.num_experts))
    ev = evaluate(model, samples, np.ascontiguousarray(costs))
    return EvaluateReply(num_examples=int(len(samples)), accuracy=float(ev["accuracy"]),
                         mean_cost=float(ev["mean_cost"]), partition_id=int(device_id)).to_metrics()
