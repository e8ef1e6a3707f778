"""Resource-aware, two-stage training of the mixture of experts ([P001]) with diagnostics.

Loss ([P001] eq. 9, with the auxiliary router losses of [P003])::

    L = L_task + λ · mean_b Σ_i g_bi C_bi + β_z · L_z + β_lb · L_lb

``L_task`` the weighted multi-task loss (:mod:`fedmoe.models.heads`), ``g_bi`` the gate's
softmax probability of expert ``i`` for sample ``b`` (the differentiable stand-in for the
selection), ``C_bi`` the sample's device cost of the expert
(:mod:`fedmoe.models.device_costs`), ``L_z`` the router z-loss and ``L_lb`` the
load-balancing loss.

Two stages ([P001] Sec. "training"):

* **stage I** trains the experts and heads without the gate: each sample averages a
  random subset of its available experts (each kept with probability ``keep_prob``), so
  every expert learns to be useful alone and in company;
* **stage II** trains the gate (and fine-tunes everything) with the loss above while the
  gate temperature anneals from ``tau_start`` to ``tau_end``.

Diagnostics after every epoch ([P000]'s failure signatures): gate entropy, per-expert
usage, a collapse warning when one expert takes more than ``collapse_share`` of the
selections, accuracy, mean selected cost, and accuracy under modality dropout.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from fedmoe.config import MODALITIES, TrainConfig
from fedmoe.data.samples import ISACSamples
from fedmoe.models.device_costs import link_classes
from fedmoe.models.gates import TemperatureSchedule
from fedmoe.models.heads import task_loss
from fedmoe.models.moe import MoE, batch_tensors
from fedmoe.models.scores import by_condition, ranked_beams, ranking_scores, summarise_scores

log = logging.getLogger(__name__)


def resource_aware_loss(task: torch.Tensor, probs: torch.Tensor, costs: torch.Tensor | None, lam: float,
                        aux: dict[str, torch.Tensor], z_weight: float, balance_weight: float) -> torch.Tensor:
    """``L_task + λ mean_b Σ_i g_bi C_bi + β_z L_z + β_lb L_lb`` (module docstring)."""
    total = task
    if lam > 0 and costs is not None:
        if costs.shape != probs.shape:
            raise ValueError(f"costs have shape {tuple(costs.shape)}, gate probabilities {tuple(probs.shape)}")
        total = total + lam * (torch.nan_to_num(probs) * costs).sum(dim=1).mean()
    return total + _router_penalties(aux, z_weight, balance_weight)


def _router_penalties(aux: dict[str, torch.Tensor], z_weight: float, balance_weight: float) -> torch.Tensor | float:
    """``β_z L_z + β_lb L_lb`` from a gate's auxiliary losses (a term is skipped at weight 0)."""
    total: torch.Tensor | float = 0.0
    if z_weight > 0 and "z_loss" in aux:
        total = total + z_weight * aux["z_loss"]
    if balance_weight > 0 and "load_balance" in aux:
        total = total + balance_weight * aux["load_balance"]
    return total


class RewardBaseline(torch.nn.Module):
    """Critic ``V(x, C) ≈ E[r | x, C]``: the per-sample baseline of the score-function estimator.

    A small MLP on the gate's features and the sample's cost vector (both detached), fitted
    by least squares to the observed resource-aware loss ``r``. Subtracting it removes the
    part of ``r`` due to how hard the sample is (a blocked user has a high loss whatever
    expert serves it), which a batch-mean baseline leaves in; any function of ``(x, C)``
    keeps the gradient estimate unbiased. It exists only during training.
    """

    def __init__(self, in_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, costs: torch.Tensor | None) -> torch.Tensor:
        x = features.detach() if costs is None else torch.cat([features.detach(), costs.detach()], dim=1)
        return self.net(x).squeeze(1)


def score_function_loss(per_sample: torch.Tensor, gate_out, costs: torch.Tensor | None, lam: float,
                        z_weight: float, balance_weight: float, baseline: torch.Tensor | None = None,
                        entropy_weight: float = 0.0) -> torch.Tensor:
    """Surrogate loss whose gradient is an unbiased estimate of that of ``E_π[L]`` (eq. 9) for a sampling gate.

    With ``r_b = ℓ_b + λ Σ_{i∈S_b} C_bi`` the resource-aware loss of sample ``b`` for the
    experts ``S_b`` its gate *drew* with log-probability ``log π(S_b)``::

        L_sf = mean_b ℓ_b + mean_b [ (r_b − b_b) · log π(S_b) ] − β_H mean_b H(softmax(l_b))
               + β_z L_z + β_lb L_lb  (+ mean_b (V_b − r_b)² when a critic gives the baseline)

    ``b_b`` is the critic's prediction ``V_b`` when ``baseline`` is given (see
    :class:`RewardBaseline`), else the mean ``r`` of the other samples (leave-one-out);
    either keeps the estimate unbiased. The first term trains the selected experts and
    the heads; the second (REINFORCE, Williams 1992) trains the gate from the loss of the
    *selected* experts only, so no unselected expert is ever computed. (The
    straight-through gradient only tells the gate whether to scale the chosen expert up
    or down; with it, the cost term alone drives the gate to the cheapest expert.) The
    entropy bonus ``β_H`` keeps the gate exploring, so that it does not settle on one
    expert for every sample before it has seen what the others do.
    """
    reward = per_sample.detach()
    selected = gate_out.selected
    if lam > 0 and costs is not None:
        if costs.shape != selected.shape:
            raise ValueError(f"costs have shape {tuple(costs.shape)}, selection {tuple(selected.shape)}")
        reward = reward + lam * (selected.float() * costs).sum(dim=1)
    n = reward.shape[0]
    if baseline is not None:
        b = baseline.detach()
        critic = ((baseline - reward) ** 2).mean()
    else:
        b = (reward.sum() - reward) / max(n - 1, 1) if n > 1 else reward
        critic = reward.new_zeros(())
    total = per_sample.mean() + ((reward - b) * gate_out.sample_log_prob).mean() + critic
    if entropy_weight > 0:
        logp = torch.log_softmax(gate_out.logits, dim=1)
        # Unavailable experts have logp = −inf and contribute 0. Mask logp itself rather than
        # the product: the product's backward would form 0·(−inf) = NaN in the gate's gradient.
        logp = logp.masked_fill(~torch.isfinite(logp), 0.0)
        entropy = -(logp.exp() * logp).sum(dim=1).mean()
        total = total - entropy_weight * entropy
    return total + _router_penalties(gate_out.aux, z_weight, balance_weight)


def oracle_routing_loss(model: MoE, inputs: dict[str, torch.Tensor], present: torch.Tensor,
                        labels: dict[str, torch.Tensor], costs: torch.Tensor | None, cfg: TrainConfig,
                        gate_rows: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Stage II by supervised routing: every expert learns alone, the gate learns to predict their losses.

    Each available expert ``i`` predicts alone (as in stage I) with per-sample task loss
    ``t_bi`` and routing loss ``ℓ_bi`` (:func:`routing_loss`, detached). The gate's logits
    are ``l_bi = f_i(x_b, C_b) − λ C_bi``: its backbone ``f`` regresses ``−ℓ_bi`` by least
    squares and the cost term is exact (``Gate.routing_cost_weight = λ``)::

        L = mean_i mean_{b: i available} t_bi  +  mean_{b,i available} (f_i(x_b, C_b) + ℓ_bi)²

    So ``argmax_i l_bi`` is the expert with the smallest predicted ``ℓ + λ C``: the
    per-sample oracle of :mod:`fedmoe.models.oracle` ([P001] eq. 9 per sample) with
    the loss replaced by its expectation given the gate's cheap inputs (the Bayes
    decision). There is no sampling noise (the score-function estimator sees one
    expert's loss per sample; here it sees all of them), and a device with a costlier
    link gets a cheaper choice without having to learn it. The price is training compute:
    every available expert runs on every training sample, as in stage I; inference
    still computes only the expert the gate selects. For gates that select one expert.

    ``gate_rows`` (B,) bool marks the rows held out from the experts (``routing_holdout``):
    the gate learns from those rows only and the experts from the others, so the gate
    sees the losses the experts make on data they were not fitted to. ``targets`` (B, E) are
    the batch's rows of :func:`routing_targets` when the experts are frozen: then no expert
    runs here and only the gate's loss is returned.
    """
    batch = present.shape[0]
    gate_rows = torch.ones(batch, dtype=torch.bool) if gate_rows is None else gate_rows.bool()
    expert_rows = ~gate_rows if bool((~gate_rows).any()) and bool(gate_rows.any()) else torch.ones_like(gate_rows)
    avail = model.available(present.bool())
    expert_loss, trained = 0.0, 0
    if targets is not None:
        if cfg.routing_trains_experts:
            raise ValueError("cached routing targets need frozen experts (train.routing_trains_experts = false)")
        loss_matrix = targets
    else:
        with torch.set_grad_enabled(cfg.routing_trains_experts and torch.is_grad_enabled()):
            each = each_expert_loss(model, inputs, present, labels, cfg)
        loss_matrix = torch.full((batch, model.num_experts), float("inf"))
        for i, r, per, routed in each:
            loss_matrix[r, i] = routed
            fit = expert_rows[r]
            if bool(fit.any()):
                expert_loss, trained = expert_loss + per[fit].mean(), trained + 1
    set_routing_cost_weight(model, cfg)
    logits = model.gate_logits(inputs, present, costs)
    # The backbone predicts −ℓ; the gate's logits are that minus λ C (exact, Gate.routing_cost_weight).
    cost_term = model.gate.routing_cost_weight * costs if costs is not None else 0.0
    learn = avail & gate_rows[:, None]
    gate_loss = ((logits + cost_term + loss_matrix)[learn] ** 2).mean() if bool(learn.any()) else logits.sum() * 0.0
    if not cfg.routing_trains_experts:
        return gate_loss
    return expert_loss / max(trained, 1) + gate_loss


def caches_routing_targets(cfg: TrainConfig) -> bool:
    """Whether stage II can compute the gate's regression targets once instead of every batch: under
    supervised routing with frozen experts (``routing_trains_experts = false``) nothing but the gate
    changes in stage II, so every expert's loss on a sample stays what it was at the stage's start."""
    return cfg.gate_estimator == "oracle_routing" and not cfg.routing_trains_experts


@torch.no_grad()
def routing_targets(model: MoE, samples: ISACSamples, cfg: TrainConfig, batch_size: int = 1024) -> torch.Tensor:
    """(N, E) routing loss ``ℓ_ni`` (:func:`routing_loss`) of every expert alone on each sample, ``inf``
    where the expert is unavailable: the targets :func:`oracle_routing_loss` regresses.

    With frozen experts (:func:`caches_routing_targets`) one pass before stage II replaces an
    expert forward pass per batch and epoch: the gate's epochs then cost only the gate's own
    compute. The experts are deterministic (no dropout, and a standardiser fitted once), so the
    targets are exactly those each batch would compute.
    """
    out = torch.full((len(samples), model.num_experts), float("inf"))
    was_training = model.training
    model.train()  # the mode of the stage-II batches (the same outputs: nothing in the experts depends on it)
    for rows in minibatches(len(samples), batch_size, np.random.default_rng(0), shuffle=False):
        inputs, present, labels = batch_tensors(samples, rows)
        for i, r, _, routed in each_expert_loss(model, inputs, present, labels, cfg):
            out[torch.as_tensor(rows)[r], i] = routed
    model.train(was_training)
    return out


def each_expert_loss(model: MoE, inputs: dict[str, torch.Tensor], present: torch.Tensor,
                     labels: dict[str, torch.Tensor], cfg: TrainConfig) -> list[tuple[int, torch.Tensor, torch.Tensor,
                                                                                      torch.Tensor]]:
    """``[(i, rows, t, ℓ)]``: every expert ``i`` available on some batch rows, alone on those ``rows``:
    its per-sample task loss ``t`` and its (detached) routing loss ``ℓ`` (:func:`routing_loss`)."""
    avail = model.available(present.bool())
    cols = [i for i in range(model.num_experts) if bool(avail[:, i].any())]
    out = []
    for i, (r, res) in zip(cols, model.forward_each(inputs, present)):
        sub = {k: v[r] for k, v in labels.items()}
        per, _ = task_loss(res, sub, cfg.tasks, reduction="none")
        out.append((i, r, per, routing_loss(res.beam_logits.detach(), per.detach(), sub, cfg)))
    return out


def routing_holdout_mask(n: int, cfg: TrainConfig, seed: int) -> np.ndarray:
    """(n,) bool: the training samples held out from the experts for the gate (``cfg.routing_holdout``).

    Fixed by ``seed`` (the same rows every epoch and, for a device, every round); all False
    unless supervised routing with a hold-out is configured.
    """
    if cfg.gate_estimator != "oracle_routing" or cfg.routing_holdout <= 0 or n < 2:
        return np.zeros(n, dtype=bool)
    mask = np.random.default_rng(np.random.SeedSequence([seed, 0x70_75_74])).random(n) < cfg.routing_holdout
    if mask.all() or not mask.any():  # keep both parts non-empty
        mask[:] = False
        mask[: max(1, int(round(n * cfg.routing_holdout)))] = True
    return mask


def _held_rows(routing_mask: np.ndarray | None, rows: np.ndarray) -> torch.Tensor | None:
    """The batch ``rows`` of ``routing_mask`` as the ``gate_rows`` of :func:`oracle_routing_loss`
    (``None``: no hold-out)."""
    return None if routing_mask is None or not routing_mask.any() else torch.from_numpy(routing_mask[rows])


def set_routing_cost_weight(model: MoE, cfg: TrainConfig) -> None:
    """Give the gate the λ it subtracts (``λ C``) under supervised routing, 0 otherwise
    (``Gate.routing_cost_weight``)."""
    lam = cfg.cost_weight if cfg.gate_estimator == "oracle_routing" else 0.0
    if float(model.gate.routing_cost_weight) != lam:
        model.gate.routing_cost_weight.fill_(lam)


ROUTING_LOSS_CAP_DB = 10.0
"""``power_loss_db`` larger than this counts as this much: a sweep that loses more has failed either way, and
the rare deep misses (up to 60 dB) would otherwise dominate the gate's least-squares fit."""


def routing_loss(logits: torch.Tensor, task: torch.Tensor, labels: dict[str, torch.Tensor],
                 cfg: TrainConfig) -> torch.Tensor:
    """Per-sample loss ``ℓ`` the routing oracle weighs against ``λ C`` (``cfg.routing_loss``).

    ``task``: the training objective itself; ``topk_miss``: 1 when the best beam is not
    among the ``k`` predicted (``cfg.routing_top_k``, by default ``cfg.score.top_k``); ``power_loss_db``: the
    dB the sweep of those ``k`` beams loses to the best beam (``−`` the power ratio of
    :mod:`fedmoe.models.scores`). The last two value a prediction as beam management
    does: a near-miss that the sweep corrects costs nothing.
    """
    if cfg.routing_loss == "task":
        return task
    k = min(cfg.routing_top_k or cfg.score.top_k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    miss = (~(top == labels["beam"][:, None]).any(dim=1)).to(task.dtype)
    if cfg.routing_loss == "topk_miss":
        return miss
    if "beam_power_db" not in labels:
        raise ValueError("routing_loss 'power_loss_db' needs the beam_power_db label, which the data lacks")
    power = labels["beam_power_db"]
    lost = (-power.gather(1, top).max(dim=1).values.to(task.dtype)).clamp(max=ROUTING_LOSS_CAP_DB)
    return torch.where(torch.isfinite(lost), lost, miss)


@dataclass
class EpochReport:
    stage: int
    epoch: int
    loss: float
    accuracy: float
    gate_entropy: float = float("nan")
    usage: list[float] = field(default_factory=list)
    mean_cost: float = float("nan")
    collapsed: bool = False
    dropout_accuracy: dict[str, float] = field(default_factory=dict)


def minibatches(n: int, size: int, rng: np.random.Generator, shuffle: bool = True) -> list[np.ndarray]:
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


def _costs_for(costs: np.ndarray | None, rows: np.ndarray) -> torch.Tensor | None:
    return None if costs is None else torch.from_numpy(costs[rows].astype(np.float32))


@torch.no_grad()
def _stage1_accuracy(model: MoE, samples: ISACSamples, mode: str, batch_size: int = 2048) -> float:
    """Beam accuracy of what stage I trains: the mean over experts of each alone (``each``), or the
    uniform average of all available experts (``subsets``)."""
    model.eval()
    hits, total = 0.0, 0
    for rows in minibatches(len(samples), batch_size, np.random.default_rng(0), shuffle=False):
        inputs, present, labels = batch_tensors(samples, rows)
        if mode == "each":
            pairs = model.forward_each(inputs, present)
            hits += sum(float((o.beam_logits.argmax(1) == labels["beam"][r]).float().mean()) for r, o in pairs) \
                / len(pairs) * len(rows)
        else:
            out, _ = model.forward_uniform(inputs, present)
            hits += float((out.beam_logits.argmax(1) == labels["beam"]).float().sum())
        total += len(rows)
    return hits / total


def make_optimiser(params: list[torch.nn.Parameter], cfg: TrainConfig, steps: int):
    """Adam(W) at ``cfg.lr`` with weight decay, and the stage's learning-rate schedule.

    ``cosine`` decays the rate from ``lr`` to ``lr / 100`` over the stage's ``steps``;
    ``constant`` keeps it.
    """
    # foreach: one kernel per update step over all parameters instead of one per tensor; torch
    # picks the per-tensor loop for CPU tensors by default, which costs a third more here.
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=cfg.lr / 100)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


@torch.no_grad()
def evaluate(model: MoE, samples: ISACSamples, costs: np.ndarray | None = None, batch_size: int = 1024,
             top_k: int = 3) -> dict:
    """Beam scores, gate statistics and the computed (sample, expert) pairs on ``samples``.

    ``accuracy`` is top-1; ``scores`` holds the per-sample top-1, top-``top_k`` and power
    ratio of :func:`fedmoe.models.scores.beam_scores` (beams swept: ``top_k``).
    """
    model.eval()
    correct, entropy, usage, spent, cost_sum = 0, 0.0, torch.zeros(model.num_experts), 0, 0.0
    selected_all, hits, ranked = [], [], []
    for rows in minibatches(len(samples), batch_size, np.random.default_rng(0), shuffle=False):
        inputs, present, labels = batch_tensors(samples, rows)
        c = _costs_for(costs, rows)
        out = model(inputs, present, c)
        hit = out.tasks.beam_logits.argmax(1) == labels["beam"]
        correct += int(hit.sum())
        hits.append(hit)
        ranked.append(ranked_beams(out.tasks.beam_logits, min(top_k, out.tasks.beam_logits.shape[1])))
        p = torch.nan_to_num(out.gate.probs)
        entropy += float(-(p * torch.log(p.clamp_min(1e-12))).sum(1).sum())
        usage += out.gate.selected.float().sum(0)
        spent += int(out.expert_samples.sum())
        if c is not None:
            cost_sum += float((out.gate.selected.float() * c).sum())
        selected_all.append(out.gate.selected)
    n = len(samples)
    scores = ranking_scores(np.concatenate(ranked), samples.labels["beam"], samples.labels.get("beam_power_db"))
    return {"accuracy": correct / n, "gate_entropy": entropy / n, "usage": (usage / n).tolist(),
            "expert_evaluations_per_sample": spent / n,
            "mean_cost": cost_sum / n if costs is not None else float("nan"),
            "selected": torch.cat(selected_all).numpy(), "correct": torch.cat(hits).numpy(), "scores": scores}


def accuracy_under_dropout(model: MoE, samples: ISACSamples, costs: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy when each modality in turn is removed from every sample ([P000]'s robustness check)."""
    out = {}
    for j, m in enumerate(MODALITIES):
        if m not in samples.inputs:
            continue
        reduced = samples.subset(slice(None))
        reduced.present = samples.present.copy()
        reduced.present[:, j] = False
        if not reduced.present.any(axis=1).all() or not model.available(torch.from_numpy(reduced.present)).any(1).all():
            continue  # some sample would have no expert left
        out[m] = evaluate(model, reduced, costs)["accuracy"]
    return out


@dataclass
class EpochStats:
    """What one pass over the local data did: mean loss, and how often each expert was computed.

    ``expert_rows[i]`` counts the (sample, expert ``i``) pairs computed in the pass; the
    federated client turns it into the per-expert usage that weighs its expert updates.
    """

    loss: float
    samples: int
    expert_rows: np.ndarray

    @property
    def usage(self) -> np.ndarray:
        """Share of the pass's samples on which each expert was computed."""
        return self.expert_rows / max(self.samples, 1)


def proximal_term(model: MoE, anchor: dict[str, torch.Tensor] | None, mu: float) -> torch.Tensor | float:
    """FedProx's ``(μ/2) ||w − w_global||²`` over the parameters named in ``anchor`` (0 when μ = 0)."""
    if not anchor or mu <= 0:
        return 0.0
    total = 0.0
    for name, p in model.named_parameters():
        if name in anchor:
            total = total + ((p - anchor[name]) ** 2).sum()
    return 0.5 * mu * total


def _optimise(model: MoE, loss: torch.Tensor, opt, sched, anchor: dict[str, torch.Tensor] | None,
              mu: float) -> float:
    """One step on ``loss`` (plus FedProx's proximal term); returns the loss value."""
    loss = loss + proximal_term(model, anchor, mu)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def routes_in_stage1(cfg: TrainConfig) -> bool:
    """Supervised routing from stage I (``routing_from_stage1``): every expert runs alone there anyway
    (``each``), so the gate can learn their losses from the first pass at no extra expert compute."""
    return cfg.gate_estimator == "oracle_routing" and cfg.stage1_mode == "each" and cfg.routing_from_stage1


def stage1_epoch(model: MoE, train_set: ISACSamples, cfg: TrainConfig, opt, sched, rng: np.random.Generator,
                 bar=None, anchor: dict[str, torch.Tensor] | None = None, mu: float = 0.0,
                 costs: np.ndarray | None = None, routing_mask: np.ndarray | None = None) -> EpochStats:
    """One stage-I pass (module docstring): every available expert alone (``each``) or random subsets.

    Under supervised routing (:func:`routes_in_stage1`) the pass is :func:`oracle_routing_loss`: the
    experts learn alone as in ``each`` and the gate learns their losses (``costs`` and ``routing_mask``
    as for :func:`stage2_epoch`).
    """
    model.train()
    total, rows_done = 0.0, 0
    computed = np.zeros(model.num_experts, dtype=np.int64)
    for rows in minibatches(len(train_set), cfg.batch_size, rng):
        inputs, present, labels = batch_tensors(train_set, rows)
        if routes_in_stage1(cfg):
            loss = oracle_routing_loss(model, inputs, present, labels, _costs_for(costs, rows), cfg,
                                       _held_rows(routing_mask, rows))
            computed += model.available(present).sum(0).numpy()
        elif cfg.stage1_mode == "each":
            pairs = model.forward_each(inputs, present)
            loss = sum(task_loss(o, {k: v[r] for k, v in labels.items()}, cfg.tasks)[0] for r, o in pairs) / len(pairs)
            computed += model.available(present).sum(0).numpy()
        else:
            active = torch.from_numpy(rng.random((len(rows), model.num_experts)) < cfg.keep_prob)
            out, counts = model.forward_uniform(inputs, present, active)
            loss, _ = task_loss(out, labels, cfg.tasks)
            computed += counts.numpy().astype(np.int64)
        total += _optimise(model, loss, opt, sched, anchor, mu) * len(rows)
        rows_done += len(rows)
        if bar is not None:
            bar.update(1)
    return EpochStats(total / max(rows_done, 1), rows_done, computed)


def stage2_epoch(model: MoE, train_set: ISACSamples, costs: np.ndarray | None, cfg: TrainConfig, opt, sched,
                 rng: np.random.Generator, schedule, step: int, critic: "RewardBaseline | None" = None,
                 bar=None, anchor: dict[str, torch.Tensor] | None = None, mu: float = 0.0,
                 routing_mask: np.ndarray | None = None,
                 targets: torch.Tensor | None = None) -> tuple[EpochStats, int]:
    """One stage-II pass: the gate (score function or straight-through, module docstring) and fine-tuning.

    ``schedule(step) -> τ`` sets the gate temperature; returns the pass's statistics and
    the step count after it. ``routing_mask`` (N,) marks the samples held out from the
    experts under supervised routing (:func:`routing_holdout_mask`); ``targets`` (N, E) are
    the cached :func:`routing_targets` of ``train_set`` (frozen experts).
    """
    score_function = cfg.gate_estimator == "score_function" and model.gate.samples_in_training
    model.train()
    total, rows_done = 0.0, 0
    computed = np.zeros(model.num_experts, dtype=np.int64)
    for rows in minibatches(len(train_set), cfg.batch_size, rng):
        model.gate.temperature = float(schedule(step))
        if targets is not None:  # the gate alone learns: only its own inputs are needed
            inputs = {m: torch.from_numpy(train_set.inputs[m][rows]) for m in model.gate_modalities}
            present, labels = torch.from_numpy(train_set.present[rows]), {}
        else:
            inputs, present, labels = batch_tensors(train_set, rows)
        c = _costs_for(costs, rows)
        if cfg.gate_estimator == "oracle_routing":
            loss = oracle_routing_loss(model, inputs, present, labels, c, cfg, _held_rows(routing_mask, rows),
                                       None if targets is None else targets[torch.from_numpy(rows)])
            total += _optimise(model, loss, opt, sched, anchor, mu) * len(rows)
            rows_done += len(rows)
            computed += model.available(present.bool()).sum(0).numpy()
            step += 1
            if bar is not None:
                bar.update(1)
            continue
        out = model(inputs, present, c, detach_weights=score_function)
        per_sample, _ = task_loss(out.tasks, labels, cfg.tasks, reduction="none")
        if score_function:
            loss = score_function_loss(per_sample, out.gate, c, cfg.cost_weight, cfg.z_loss_weight,
                                       cfg.balance_weight, critic(out.gate_features, c) if critic else None,
                                       cfg.entropy_weight)
        else:
            loss = resource_aware_loss(per_sample.mean(), out.gate.probs, c, cfg.cost_weight, out.gate.aux,
                                       cfg.z_loss_weight, cfg.balance_weight)
        total += _optimise(model, loss, opt, sched, anchor, mu) * len(rows)
        rows_done += len(rows)
        computed += out.expert_samples.numpy().astype(np.int64)
        step += 1
        if bar is not None:
            bar.update(1)
    return EpochStats(total / max(rows_done, 1), rows_done, computed), step


def make_critic(model: MoE, cfg: TrainConfig, with_costs: bool) -> "RewardBaseline | None":
    """The critic of the score-function estimator, when the gate samples and ``cfg`` asks for one."""
    score_function = cfg.gate_estimator == "score_function" and model.gate.samples_in_training
    if not (score_function and cfg.critic_baseline):
        return None
    return RewardBaseline(model.gate.in_dim + (model.num_experts if with_costs else 0))


def stage1_parameters(model: MoE, cfg: TrainConfig | None = None) -> list[torch.nn.Parameter]:
    """What stage I trains: everything but the gate (and the gate too under :func:`routes_in_stage1`)."""
    if cfg is not None and routes_in_stage1(cfg):
        return list(model.parameters())
    return [p for n, p in model.named_parameters() if not n.startswith("gate.")]


def stage2_parameters(model: MoE, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """What stage II trains: everything, or the gate alone when supervised routing freezes the experts
    (:func:`caches_routing_targets`)."""
    if caches_routing_targets(cfg):
        return list(model.gate.parameters())
    return list(model.parameters())


def train(model: MoE, train_set: ISACSamples, cfg: TrainConfig, costs: np.ndarray | None = None,
          val_set: ISACSamples | None = None, val_costs: np.ndarray | None = None,
          schedule=None, progress: bool = False, diagnostics: bool = True) -> list[EpochReport]:
    """Two-stage training (module docstring); returns one report per epoch.

    ``diagnostics=False`` skips the per-epoch evaluation on ``val_set`` (accuracy, gate
    statistics, accuracy under modality dropout): the reports then carry the training loss
    only, and the trained model is the same.

    ``costs`` is the (N, E) cost vector of each training sample (its device's row of the
    cost matrix); ``schedule(step) -> τ`` sets the gate temperature in stage II (default:
    exponential from ``tau_start`` to ``tau_end``).
    """
    from tqdm.auto import tqdm

    if costs is not None and costs.shape != (len(train_set), model.num_experts):
        raise ValueError(f"costs must have shape ({len(train_set)}, {model.num_experts}), got {costs.shape}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.fit_standardiser(train_set)
    val_set = val_set if val_set is not None else train_set
    val_costs = val_costs if val_set is not train_set or val_costs is not None else costs
    reports: list[EpochReport] = []
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps2 = max(1, cfg.stage2_epochs * steps_per_epoch)
    if schedule is None:
        schedule = TemperatureSchedule(cfg.tau_start, cfg.tau_end, total_steps2)
    bar = tqdm(total=(cfg.stage1_epochs + cfg.stage2_epochs) * steps_per_epoch, desc="training",
               disable=not progress, leave=False)

    held_out = routing_holdout_mask(len(train_set), cfg, cfg.seed)
    routing = routes_in_stage1(cfg)
    stage1_set = train_set if routing or not held_out.any() else train_set.subset(np.flatnonzero(~held_out))
    opt, sched = make_optimiser(stage1_parameters(model, cfg), cfg, cfg.stage1_epochs * steps_per_epoch)
    for epoch in range(cfg.stage1_epochs):
        stats = stage1_epoch(model, stage1_set, cfg, opt, sched, rng, bar, costs=costs if routing else None,
                             routing_mask=held_out if routing else None)
        acc = _stage1_accuracy(model, val_set, cfg.stage1_mode) if diagnostics else float("nan")
        reports.append(EpochReport(1, epoch, stats.loss, acc))
        log.info("stage I epoch %d: loss %.4f, accuracy %.3f", epoch, reports[-1].loss, acc)

    critic = make_critic(model, cfg, costs is not None)
    opt, sched = make_optimiser(stage2_parameters(model, cfg) + (list(critic.parameters()) if critic else []), cfg,
                            total_steps2)
    step = 0
    targets = routing_targets(model, train_set, cfg) if caches_routing_targets(cfg) and cfg.stage2_epochs else None
    for epoch in range(cfg.stage2_epochs):
        stats, step = stage2_epoch(model, train_set, costs, cfg, opt, sched, rng, schedule, step, critic, bar,
                                   routing_mask=held_out, targets=targets)
        if not diagnostics:
            reports.append(EpochReport(2, epoch, stats.loss, float("nan")))
            continue
        ev = evaluate(model, val_set, val_costs, top_k=cfg.score.top_k)
        usage = np.asarray(ev["usage"])
        share = usage / max(usage.sum(), 1e-12)
        collapsed = bool(share.max() > cfg.collapse_share) and model.num_experts > 1
        if collapsed:
            log.warning("gate collapse: expert %d takes %.0f%% of the selections", int(share.argmax()),
                        100 * share.max())
        reports.append(EpochReport(2, epoch, stats.loss, ev["accuracy"], ev["gate_entropy"],
                                   ev["usage"], ev["mean_cost"], collapsed,
                                   accuracy_under_dropout(model, val_set, val_costs)))
        log.info("stage II epoch %d: loss %.4f, accuracy %.3f, entropy %.3f", epoch, reports[-1].loss,
                 ev["accuracy"], ev["gate_entropy"])
    bar.close()
    return reports


COSTLY_MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar")


def summarise(final: dict, test_set: ISACSamples, model: MoE, costs, rows: slice) -> dict:
    """Test metrics of a trained mixture: scores by condition, and the cost of what the gate chose.

    ``final`` is :func:`evaluate`'s output on ``test_set``; ``costs`` a
    :class:`fedmoe.models.builder.SampleCosts` whose samples ``rows`` are the test set.
    Per-sample latency and energy are those of the selected experts on the sample's
    device, each modality sensed and sent once (:meth:`~fedmoe.models.builder.SampleCosts.of_selection`).

    Besides the totals: ``scores`` (top-1, top-k, power ratio by condition,
    :mod:`fedmoe.models.scores`), ``costly_rate`` (share of samples whose selection reads
    camera, lidar or radar, by condition), ``usage_by_condition`` (each expert's share of
    the LoS and of the blocked samples), ``usage_by_class`` (the same by the link class of the
    sample's device) and ``uplink_bits`` (mean bits per sample of the
    modalities the selection reads, over all samples and by the link class of the
    sample's device, :func:`fedmoe.models.device_costs.link_classes`).
    """
    selected, correct = final["selected"], final["correct"]
    blocked = test_set.conditions.get("blocked", np.zeros(len(test_set), bool))
    flops = np.array([c.flops_per_sample for c in costs.experts], dtype=np.float64)
    latency, energy = costs.of_selection(selected, rows)
    costly = np.array([any(m in COSTLY_MODALITIES for m in e.modalities) for e in model.experts])
    uses_costly = (selected & costly).any(1)
    bits = costs.bits_of_selection(selected)
    device_class = link_classes(costs.rate_bps)[costs.device[rows]].astype(str)

    def usage(mask: np.ndarray) -> list[float]:
        return selected[mask].mean(axis=0).tolist() if mask.any() else [float("nan")] * selected.shape[1]

    return {"accuracy": by_condition(correct.astype(float), blocked),
            "scores": summarise_scores(final["scores"], blocked),
            "mean_flops": float((selected @ flops).mean()),
            "mean_latency_s": float(latency.mean()), "mean_energy_j": float(energy.mean()),
            "costly_rate": by_condition(uses_costly.astype(float), blocked), "usage": final["usage"],
            "usage_by_condition": {"los": usage(~blocked), "blocked": usage(blocked)},
            "usage_by_class": {str(c): usage(device_class == c) for c in sorted(set(device_class))},
            "uplink_bits": {"all": float(bits.mean()),
                            **{str(c): float(bits[device_class == c].mean()) for c in sorted(set(device_class))}},
            "expert_evaluations_per_sample": final["expert_evaluations_per_sample"]}
