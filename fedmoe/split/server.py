"""The server's side of multimodal split learning, without Flower: the channel, gate, fusion, heads, loss.

The server holds the mixture's gate and task heads (and the score-function critic). For a
chunk a device sent (:class:`fedmoe.split.device.Encoded`) it

1. passes the features through the device's uplink (:mod:`fedmoe.split.links`; the ideal
   link leaves them unchanged): ``ẑ = z + (link(z) − z)``, the difference held constant
   for back-propagation, so ``∂L/∂z = ∂L/∂ẑ`` (straight through a quantiser);
2. per batch, fuses ``z = Σ_d w_d ẑ_d`` (:meth:`MoE.combine`) and runs the heads:

   * stage I (``train.stage1_mode``): ``each`` — every expert's features alone through the
     heads, the mean of their losses; ``subsets`` — the uniform mean over a random subset
     of the available experts (the device sent all of them);
   * stage II: the gate's weights on its selection (drawn by :meth:`select` from the gate
     inputs the device sent first), the resource-aware loss of [P001] eq. 9 with the
     device's cost vector, by the score-function estimator when the gate samples
     (:func:`fedmoe.training.score_function_loss`) — exactly the centralised stage II;

3. takes one optimiser step on its parameters and returns ``∂L/∂ẑ`` for every row the
   device sent.

The loss of each batch is the loss the unsplit mixture computes on that batch, so on an
ideal link the gradient a device receives is the unsplit model's (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmoe.federated.world import ScenarioWorld
from fedmoe.models.heads import task_loss
from fedmoe.models.moe import MoE
from fedmoe.split.links import FeatureLink, make_link
from fedmoe.training import make_critic, make_optimiser, score_function_loss


def feature_link(world: ScenarioWorld) -> FeatureLink | None:
    """The scenario's feature link (``split.link``); ``None`` for the ideal one."""
    split = world.cfg.split
    return None if split.link == "ideal" else make_link(split.link, **dict(split.link_options))


@dataclass
class StepResult:
    """The server's answer to one chunk: gradient rows (as sent), mean task loss, correct beams, rows."""

    grads: np.ndarray
    loss: float
    correct: int
    rows: int


class SplitServer:
    """Gate, heads and their optimiser (module docstring).

    Parameters
    ----------
    world
        The scenario; the server's parameters start as the scenario's initial mixture.
    seed
        Seeds the channel noise and the gate's draws.
    """

    def __init__(self, world: ScenarioWorld, seed: int = 0) -> None:
        self.world = world
        self.cfg = world.cfg
        self.model: MoE = world.new_model()
        self.link = feature_link(world)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.rng = np.random.default_rng(seed)
        tcfg = self.cfg.train.model_copy(update={"lr_schedule": "constant"})
        self.tcfg = tcfg
        self.score_function = tcfg.gate_estimator == "score_function" and self.model.gate.samples_in_training
        self.critic = make_critic(self.model, tcfg, with_costs=True)
        self.stage = 0
        self.opt = None

    # ------------------------------------------------------------------ parameters

    def server_parameters(self, stage: int) -> list[torch.nn.Parameter]:
        """Stage I trains the heads; stage II the gate, heads and critic."""
        heads = list(self.model.heads.parameters())
        if stage == 1:
            return heads
        return list(self.model.gate.parameters()) + heads + (list(self.critic.parameters()) if self.critic else [])

    def begin_stage(self, stage: int) -> None:
        """A fresh optimiser for ``stage`` (as the centralised training starts one per stage)."""
        if stage != self.stage:
            self.stage = stage
            self.opt, _ = make_optimiser(self.server_parameters(stage), self.tcfg, 1)

    # ------------------------------------------------------------------ channel

    def receive(self, z: np.ndarray, snr_linear: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(leaf z, ẑ)``: the features as sent (a leaf that collects ``∂L/∂z``) and as received."""
        leaf = torch.as_tensor(np.asarray(z, dtype=np.float32)).requires_grad_(True)
        if self.link is None or leaf.shape[0] == 0:
            return leaf, leaf
        with torch.no_grad():
            snr = torch.full((leaf.shape[0],), float(snr_linear))
            delta = self.link.corrupt(leaf.detach(), snr, self.generator) - leaf.detach()
        return leaf, leaf + delta

    # ------------------------------------------------------------------ gate

    def select(self, features: np.ndarray, present: np.ndarray, costs: np.ndarray, tau: float,
               train: bool, seed: int) -> np.ndarray:
        """(R, E) bool: the experts the gate picks for each row (drawn in training, its mode otherwise).

        A sampling gate draws with the torch generator seeded by ``seed``; :meth:`train_exchange`
        replays the draw with the same seed and the same parameters, which gives the same
        selection together with its log-probability and weights.
        """
        with torch.no_grad():
            out = self._gate(*self._gate_inputs(features, costs), present, tau, train, seed)
        return out.selected.numpy().astype(bool)

    def _gate_inputs(self, features, costs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, costs)`` as the gate reads them: (R, F) floats and the (E,) cost vector per row."""
        feats = torch.as_tensor(np.asarray(features)).float()
        c = torch.as_tensor(np.broadcast_to(np.asarray(costs, dtype=np.float32),
                                            (feats.shape[0], self.model.num_experts)).copy())
        return feats, c

    def _gate(self, feats: torch.Tensor, costs: torch.Tensor, present, tau: float, train: bool, seed: int):
        gate = self.model.gate
        gate.train(train)
        gate.temperature = float(tau)
        present = torch.as_tensor(np.asarray(present)).bool()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return gate(feats, costs=costs, available=self.model.available(present))

    # ------------------------------------------------------------------ steps

    def _pieces(self, z: torch.Tensor, enc, rows: np.ndarray):
        """The ``(i, rows_in_batch, ẑ)`` pieces of the chunk rows ``rows`` (contiguous)."""
        lo, hi = int(rows[0]), int(rows[-1])
        idx = np.flatnonzero((enc.row >= lo) & (enc.row <= hi))
        return [(int(i), torch.as_tensor(enc.row[idx[enc.expert[idx] == i]] - lo),
                 z[torch.as_tensor(idx[enc.expert[idx] == i])]) for i in np.unique(enc.expert[idx])]

    def _chunk_loss(self, item: "ChunkInput", z: torch.Tensor, stage: int, train: bool):
        """Mean loss of a device's chunk (its batches' losses weighted by their rows) and its beam logits."""
        enc = item.encoded
        labels_all = {k: torch.as_tensor(v) for k, v in enc.labels.items()}
        present_all = torch.as_tensor(enc.present).bool()
        losses, reported, logits = [], [], []
        for b in np.unique(enc.batch):
            rows = np.flatnonzero(enc.batch == b)
            idx = torch.as_tensor(rows)
            pieces = self._pieces(z, enc, rows)
            labels = {k: v[idx] for k, v in labels_all.items()}
            if stage == 1:
                loss, task, lg = self._stage1_loss(pieces, labels, present_all[idx], len(rows), train)
            else:
                loss, task, lg = self._stage2_loss(pieces, labels, present_all[idx], item, rows, train)
            losses.append(loss * len(rows))
            reported.append(float(task) * len(rows))
            logits.append(lg)
        n = max(len(enc.batch), 1)
        return sum(losses) / n, sum(reported) / n, torch.cat(logits) if logits else torch.zeros(0)

    def train_exchange(self, items: list["ChunkInput"], stage: int) -> list[StepResult]:
        """One server step on every device's chunk of an exchange: the mean over devices of their
        chunk losses; each device gets ``∂L_k/∂z_k`` of its own chunk loss ``L_k``."""
        self.begin_stage(stage)
        if not items:
            return []
        leaves, losses, tasks, logits = [], [], [], []
        for item in items:
            leaf, z = self.receive(item.encoded.features, item.snr_linear)
            loss, task, lg = self._chunk_loss(item, z, stage, train=True)
            leaves.append(leaf)
            losses.append(loss)
            tasks.append(task)
            logits.append(lg)
        total = sum(losses) / len(items)
        self.opt.zero_grad()
        total.backward()
        self.opt.step()
        out = []
        for item, leaf, task, lg in zip(items, leaves, tasks, logits):
            g = np.zeros(leaf.shape, np.float32) if leaf.grad is None else leaf.grad.numpy() * len(items)
            out.append(StepResult(g.astype(np.float32), task, _correct(lg, item.encoded),
                                  len(item.encoded.batch)))
        return out

    @torch.no_grad()
    def predict(self, item: "ChunkInput", stage: int) -> StepResult:
        """Loss and correct beams of a device's chunk without training (evaluation)."""
        _, z = self.receive(item.encoded.features, item.snr_linear)
        _, task, lg = self._chunk_loss(item, z, stage, train=False)
        return StepResult(np.zeros((0,), np.float32), task, _correct(lg, item.encoded), len(item.encoded.batch))

    def _stage1_loss(self, pieces, labels, present, n: int, train: bool):
        model, tcfg = self.model, self.cfg.train
        sel = model.available(present)
        uniform = sel.float() / sel.sum(dim=1, keepdim=True).clamp_min(1)
        if train and tcfg.stage1_mode == "each":
            losses = [task_loss(model.heads(z), {k: v[r] for k, v in labels.items()}, tcfg.tasks)[0]
                      for _, r, z in pieces]
            loss = sum(losses) / max(len(losses), 1)
            with torch.no_grad():
                z, _ = model.combine([(i, r, t.detach()) for i, r, t in pieces], uniform, n)
                return loss, float(loss.detach()), model.heads(z).beam_logits
        if train and tcfg.stage1_mode == "subsets":
            active = torch.as_tensor(self.rng.random(tuple(sel.shape)) < tcfg.keep_prob)
            sel = torch.where((sel & active).any(dim=1, keepdim=True), sel & active, sel)
            uniform = sel.float() / sel.sum(dim=1, keepdim=True).clamp_min(1)
        z, _ = model.combine(pieces, uniform, n)
        out = model.heads(z)
        loss = task_loss(out, labels, tcfg.tasks)[0]
        return loss, float(loss.detach()), out.beam_logits.detach()

    def _stage2_loss(self, pieces, labels, present, item: "ChunkInput", rows: np.ndarray, train: bool):
        model, tcfg = self.model, self.tcfg
        f, c = self._gate_inputs(item.gate_features[rows], item.costs)
        out = self._gate(f, c, present, item.tau, train, item.seed)
        if not torch.equal(out.selected.bool(), torch.as_tensor(item.selected[rows]).bool()):
            raise RuntimeError("the gate's replayed selection differs from the one the device computed "
                               "(gate parameters changed between selection and step?)")
        sf = train and self.score_function
        weights = out.weights.detach() if sf else out.weights
        z, _ = model.combine(pieces, weights, len(rows))
        heads = model.heads(z)
        per_sample, _ = task_loss(heads, labels, tcfg.tasks, reduction="none")
        task = float(per_sample.detach().mean())
        if not train:
            return per_sample.mean(), task, heads.beam_logits.detach()
        if sf:
            loss = score_function_loss(per_sample, out, c, tcfg.cost_weight, tcfg.z_loss_weight, tcfg.balance_weight,
                                       self.critic(f, c) if self.critic else None, tcfg.entropy_weight)
        else:
            from fedmoe.training import resource_aware_loss

            loss = resource_aware_loss(per_sample.mean(), out.probs, c, tcfg.cost_weight, out.aux,
                                       tcfg.z_loss_weight, tcfg.balance_weight)
        return loss, task, heads.beam_logits.detach()


@dataclass
class ChunkInput:
    """One device's chunk as the server processes it."""

    encoded: object  # fedmoe.split.device.Encoded
    snr_linear: float
    costs: np.ndarray | None = None  # (E,)
    gate_features: np.ndarray | None = None  # (R, F), stage II
    selected: np.ndarray | None = None  # (R, E) bool, stage II
    tau: float = 1.0
    seed: int = 0


def _correct(logits: torch.Tensor, enc) -> int:
    if logits.numel() == 0:
        return 0
    return int((logits.argmax(1).numpy() == np.asarray(enc.labels["beam"])).sum())
