"""A device's side of multimodal split learning, without Flower: its experts, its data, its batches.

In split learning (Vepakomma et al. 2018; the multimodal setting of [P001] and of the
survey [P003]) the mixture is cut after the modality experts. A device keeps

* the standardiser, fitted once on its own data, and the experts (encoders) of the
  mixture (:class:`~fedmoe.models.moe.MoE`), with their AdamW optimiser state;
* its data; the batches of a round follow from ``(train.seed, round, device)`` alone, so
  the device and the server agree on them without storing anything.

Per chunk of ``split.batches_per_message`` batches the device

1. (stage II and evaluation) sends the gate's inputs — standardised cheap modalities and
   presence flags, :meth:`MoE.gate_features` — and receives the server's selection;
2. computes only the selected (sample, expert) pairs, :meth:`MoE.expert_features`, and
   sends those features ("smashed data") with the labels;
3. when the server's gradient ``∂L/∂z`` of those features arrives, recomputes the same
   features with the same parameters and back-propagates it into the experts, one
   optimiser step per batch. (Between messages a device keeps no autograd graph: in a
   deployment every message may run in a fresh process.)

With one batch per message this is exactly the gradient of the unsplit model; with more,
the later batches of a chunk receive gradients computed at features from before the
chunk's earlier steps (stale by at most ``batches_per_message − 1`` steps).

Everything a device keeps between messages is what :meth:`DevicePart.state` returns (plain
arrays, for Flower's ``context.state``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from fedmoe.config import MODALITIES
from fedmoe.data.samples import ISACSamples
from fedmoe.federated.local import budgeted, round_seed
from fedmoe.federated.parameters import to_numpy
from fedmoe.federated.world import ScenarioWorld
from fedmoe.models.cost import FORWARD_BACKWARD_FACTOR
from fedmoe.models.moe import MoE, batch_tensors
from fedmoe.training import make_optimiser, minibatches

OPT_PREFIX = "opt."
"""State keys of the device's optimiser moments (``opt.<param>.exp_avg`` …)."""


DEVICE_PREFIXES: tuple[str, ...] = ("experts.", "standardiser.")
"""State-dict prefixes of what a device owns: the experts and the standardiser."""


def device_keys(model: MoE) -> list[str]:
    """State-dict keys a device owns (:data:`DEVICE_PREFIXES`)."""
    return [k for k in model.state_dict() if k.startswith(DEVICE_PREFIXES)]


@dataclass
class DevicePart:
    """The device's live objects for one message: the mixture (only its device part is used) and its optimiser."""

    model: MoE
    opt: torch.optim.Optimizer

    def state(self) -> dict[str, np.ndarray]:
        """What the device keeps until its next message: its parameters and the optimiser's moments."""
        state = to_numpy({k: v for k, v in self.model.state_dict().items() if k.startswith(DEVICE_PREFIXES)})
        names = {id(p): n for n, p in self.model.named_parameters()}
        for group in self.opt.param_groups:
            for p in group["params"]:
                for key, value in self.opt.state.get(p, {}).items():
                    state[f"{OPT_PREFIX}{names[id(p)]}.{key}"] = np.asarray(
                        torch.as_tensor(value).detach().cpu().numpy())
        return state


def load_device(world: ScenarioWorld, device_id: int, state: Mapping[str, np.ndarray],
                experts: Mapping[str, np.ndarray] | None = None) -> DevicePart:
    """The device's part as it was after its last message (the scenario's initial mixture before any).

    ``experts`` (SplitFed) replaces the expert parameters with the server's average; the
    optimiser moments are kept. A first load fits the standardiser on the device's data.
    """
    model = world.new_model()
    sd = model.state_dict()
    params = {k: v for k, v in state.items() if not k.startswith(OPT_PREFIX)}
    unknown = sorted(set(params) - set(sd)) + sorted(set(experts or {}) - set(sd))
    if unknown:
        raise ValueError(f"device state has unknown parameters {unknown[:3]}")
    for source in (params, experts or {}):
        for k, v in source.items():
            if tuple(np.shape(v)) != tuple(sd[k].shape):
                raise ValueError(f"parameter {k!r} has shape {np.shape(v)}, the model expects {tuple(sd[k].shape)}")
            sd[k] = torch.as_tensor(np.asarray(v)).to(sd[k].dtype)
    model.load_state_dict(sd)
    if not params:
        model.fit_standardiser(world.partition(device_id).samples)
    model.train()
    cfg = world.cfg.train.model_copy(update={"lr_schedule": "constant"})
    opt, _ = make_optimiser(list(model.experts.parameters()), cfg, 1)
    moments = {k[len(OPT_PREFIX):]: v for k, v in state.items() if k.startswith(OPT_PREFIX)}
    if moments:
        for name, p in model.experts.named_parameters():
            full = f"experts.{name}"
            entry = {key: torch.as_tensor(np.asarray(moments[f"{full}.{key}"]))
                     for key in ("step", "exp_avg", "exp_avg_sq") if f"{full}.{key}" in moments}
            if entry:
                opt.state[p] = entry
    return DevicePart(model, opt)


def training_samples(world: ScenarioWorld, device_id: int, model: MoE) -> ISACSamples:
    """The device's training data (rows no expert could serve left out)."""
    samples = budgeted(world.partition(device_id).samples, MODALITIES, model)
    if len(samples) == 0:
        raise ValueError(f"device {device_id} has no sample any expert can serve")
    return samples


def round_batches(world: ScenarioWorld, device_id: int, server_round: int, num_samples: int) -> list[np.ndarray]:
    """The row indices of every batch of the round, ``federated.local_epochs`` shuffled passes."""
    rng = np.random.default_rng(round_seed(world, server_round, device_id))
    size = world.cfg.train.batch_size
    return [rows for _ in range(world.cfg.federated.local_epochs) for rows in minibatches(num_samples, size, rng)]


def num_chunks(world: ScenarioWorld, num_samples: int) -> int:
    """Messages (chunks of ``split.batches_per_message`` batches) a device needs for one round."""
    batches = int(np.ceil(num_samples / world.cfg.train.batch_size)) * world.cfg.federated.local_epochs
    return int(np.ceil(batches / world.cfg.split.batches_per_message))


def chunk_rows(batches: list[np.ndarray], chunk: int, per_message: int) -> list[np.ndarray]:
    """The batches of chunk ``chunk`` (empty past the end)."""
    return batches[chunk * per_message:(chunk + 1) * per_message]


@dataclass
class Encoded:
    """What a device sends for a chunk: features of the selected pairs and what the server needs to use them."""

    features: np.ndarray  # (P, D) float32, pieces in batch order, then expert order, then row order
    expert: np.ndarray  # (P,) int: the expert of each row of ``features``
    row: np.ndarray  # (P,) int: the row within the chunk (batches concatenated)
    batch: np.ndarray  # (R,) int: batch index of each row of the chunk
    present: np.ndarray  # (R, M) bool
    labels: dict[str, np.ndarray]
    forward_flops: float


def _inputs(model: MoE, samples: ISACSamples, rows: np.ndarray) -> tuple[dict, torch.Tensor, dict]:
    inputs, present, labels = batch_tensors(samples, rows)
    x, present = model.prepare_inputs(inputs, present)
    return x, present, labels


def gate_inputs(model: MoE, samples: ISACSamples, batches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(features, present)`` the server's gate reads for the rows of ``batches`` (concatenated)."""
    feats, pres = [], []
    with torch.no_grad():
        for rows in batches:
            x, present, _ = _inputs(model, samples, rows)
            feats.append(model.gate_features(x, present).numpy())
            pres.append(present.numpy())
    return np.concatenate(feats), np.concatenate(pres)


def _selection(model: MoE, present: torch.Tensor, selected: np.ndarray | None) -> torch.Tensor:
    """The pairs to compute: the server's selection, or (stage I) every available expert."""
    avail = model.available(present)
    if selected is None:
        return avail
    sel = torch.as_tensor(np.asarray(selected, dtype=bool))
    if sel.shape != avail.shape:
        raise ValueError(f"selection has shape {tuple(sel.shape)}, the batch needs {tuple(avail.shape)}")
    if bool((sel & ~avail).any()):
        raise ValueError("the server selected an expert whose modality the sample lacks")
    return sel


def encode(world: ScenarioWorld, part: DevicePart, samples: ISACSamples, batches: list[np.ndarray],
           selected: np.ndarray | None) -> Encoded:
    """The features of the selected pairs of every batch in ``batches`` (no gradient kept)."""
    model = part.model
    flops = world.expert_flops
    feats, experts, rows_out, batch_of, present_all = [], [], [], [], []
    labels: dict[str, list[np.ndarray]] = {}
    offset = 0
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    total_flops = 0.0
    with torch.no_grad():
        for b, rows in enumerate(batches):
            x, present, lab = _inputs(model, samples, rows)
            sel = _selection(model, present, None if selected is None else selected[offset:offset + len(rows)])
            for i, r, z in model.expert_features(x, sel):
                feats.append(z.numpy())
                experts.append(np.full(len(r), i))
                rows_out.append(r.numpy() + offset)
                total_flops += float(flops[i]) * len(r)
            batch_of.append(np.full(len(rows), b))
            present_all.append(present.numpy())
            for k, v in lab.items():
                labels.setdefault(k, []).append(v.numpy())
            offset += len(rows)
    for k, v in model.named_buffers():  # running statistics move once per batch, in the backward pass
        v.copy_(buffers[k])
    dim = model.heads.in_features
    return Encoded(np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, dim), np.float32),
                   np.concatenate(experts) if experts else np.zeros(0, np.int64),
                   np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64),
                   np.concatenate(batch_of), np.concatenate(present_all),
                   {k: np.concatenate(v) for k, v in labels.items()}, total_flops)


def apply_gradients(world: ScenarioWorld, part: DevicePart, samples: ISACSamples, batches: list[np.ndarray],
                    selected: np.ndarray | None, grads: np.ndarray) -> float:
    """Back-propagate the server's ``∂L/∂z`` (rows as :func:`encode` sent them) into the experts.

    One optimiser step per batch; returns the FLOPs spent (a forward pass to rebuild the
    graph and the backward pass, ≈ 3 forward passes of the pairs).
    """
    model = part.model
    flops = world.expert_flops
    grads = torch.as_tensor(np.asarray(grads, dtype=np.float32))
    offset, cursor, total = 0, 0, 0.0
    for rows in batches:
        x, present, _ = _inputs(model, samples, rows)
        sel = _selection(model, present, None if selected is None else selected[offset:offset + len(rows)])
        pieces = model.expert_features(x, sel)
        n = sum(len(r) for _, r, _ in pieces)
        if cursor + n > grads.shape[0]:
            raise ValueError(f"gradient has {grads.shape[0]} rows, the chunk's features need more")
        part.opt.zero_grad()
        if pieces:
            z = torch.cat([out for _, _, out in pieces])
            z.backward(grads[cursor:cursor + n])
            part.opt.step()
        total += FORWARD_BACKWARD_FACTOR * float(sum(flops[i] * len(r) for i, r, _ in pieces))
        cursor += n
        offset += len(rows)
    if cursor != grads.shape[0]:
        raise ValueError(f"gradient has {grads.shape[0]} rows, the chunk's features have {cursor}")
    return total
