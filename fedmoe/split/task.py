"""The distributed-experts task of a scenario (``[distributed]``): data, model, two-stage training.

Data (``distributed.dataset``):

* ``isac`` — ``num_samples`` samples of the scenario's synthetic generator; the input is
  GPS and RF (8 numbers), standardised with training statistics; the label is the best
  beam of the codebook. (Adding the flattened radar map made the MLP overfit:
  100 % train, 56 % validation accuracy, measured with ``sims.bench.split_gating``, which
  loads the same input with a validation split of its own);
* ``digits`` — scikit-learn's bundled 8×8 digits (1,797 images, no download), scaled to
  [0, 1]; a non-wireless check.

The backbone is an MLP to ``feature_dim``; the experts and gates are those of
:class:`fedmoe.split.distributed.DistributedMoE`. :func:`train_task` runs [P004]'s
stage 1 once and stage 2 for the naive and for the channel-aware gate on copies of the
stage-1 model, so the two gates share the backbone and experts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from fedmoe.config import FedMoEConfig
from fedmoe.models.experts import mlp_layers
from fedmoe.split.distributed import DistributedMoE, SplitTrainConfig, train_stage1, train_stage2
from fedmoe.split.links import FeatureLink, make_link

ISAC_MODALITIES: tuple[str, ...] = ("gps", "rf")


@dataclass
class TaskData:
    """Train and test tensors of the task."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def task_data(cfg: FedMoEConfig) -> TaskData:
    """The data of ``cfg.distributed.dataset`` (module docstring), split with ``distributed.seed``."""
    d = cfg.distributed
    if d.dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.data.astype(np.float32) / 16.0
        y = digits.target.astype(np.int64)
        classes = 10
    else:
        from fedmoe.data.synthetic import generate

        samples = generate(cfg.data, cfg.wireless.channel, d.num_samples, d.seed)
        x = np.concatenate([samples.inputs[m].reshape(len(samples), -1).astype(np.float32) for m in ISAC_MODALITIES], 1)
        y = samples.labels["beam"].astype(np.int64)
        classes = cfg.wireless.channel.codebook_size
    order = np.random.default_rng(d.seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * d.test_fraction)))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    t = torch.from_numpy
    return TaskData(t(x[train]), t(y[train]), t(x[test]), t(y[test]), classes)


def task_link(cfg: FedMoEConfig) -> FeatureLink:
    """The feature link of the task (``distributed.link`` with ``link_options``)."""
    return make_link(cfg.distributed.link, **dict(cfg.distributed.link_options))


def build_task_model(cfg: FedMoEConfig, in_dim: int, num_classes: int) -> DistributedMoE:
    """A freshly initialised (seeded) mixture for the task."""
    d = cfg.distributed
    torch.manual_seed(d.seed)
    backbone = mlp_layers(in_dim, d.hidden, d.feature_dim)
    return DistributedMoE(backbone, d.feature_dim, num_classes, d.num_experts, d.hidden)


def train_config(cfg: FedMoEConfig) -> SplitTrainConfig:
    d = cfg.distributed
    return SplitTrainConfig(stage1_epochs=d.stage1_epochs, stage2_epochs=d.stage2_epochs, batch_size=d.batch_size,
                            lr=d.lr, balance_weight=d.balance_weight, snr_db_range=tuple(d.train_snr_db),
                            fading=d.fading, seed=d.seed)


@dataclass
class TrainedTask:
    """The stage-1 model with its stage-2 gates: ``naive`` and ``aware`` share backbone and experts."""

    naive: DistributedMoE
    aware: DistributedMoE
    stage1_losses: list[float]
    stage2_losses: dict[str, list[float]]


def train_task(cfg: FedMoEConfig, data: TaskData) -> TrainedTask:
    """Stage 1 once, then stage 2 for each gate (module docstring)."""
    link = task_link(cfg)
    tcfg = train_config(cfg)
    model = build_task_model(cfg, data.x_train.shape[1], data.num_classes)
    s1 = train_stage1(model, data.x_train, data.y_train, tcfg)
    naive, aware = model, copy.deepcopy(model)
    s2 = {"naive": train_stage2(naive, data.x_train, data.y_train, link, False, tcfg),
          "aware": train_stage2(aware, data.x_train, data.y_train, link, True, tcfg)}
    return TrainedTask(naive, aware, s1, s2)
