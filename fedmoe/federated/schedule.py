r"""The stage schedule of a federated run: each round's stage, learning rate, gate temperature and λ.

Rounds ``1..S`` train stage I (the experts; ``S = federated.stage1_rounds``), rounds
``S+1..R`` stage II (gate and experts, the resource-aware loss; ``R = federated.rounds``).
With ``d`` the rounds of the current stage done before round ``t`` and ``n`` the rounds of
that stage:

* learning rate: ``train.lr``; with ``train.lr_schedule = "cosine"`` it decays within each
  stage, :math:`\eta_t = \eta_{\min} + \tfrac12 (\eta - \eta_{\min})(1 + \cos(\pi d / (n - 1)))`
  with :math:`\eta_{\min} = \eta / 100` (constant when ``n <= 1``);
* gate temperature τ: ``train.tau_start`` in stage I; in stage II
  :class:`fedmoe.models.gates.TemperatureSchedule` from ``tau_start`` to ``tau_end`` over
  ``max(1, n - 1)`` rounds, at step ``d``;
* λ (the weight of the cost term of the stage-II loss): ``train.cost_weight`` in every round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmoe.config import FedMoEConfig
from fedmoe.models.gates import TemperatureSchedule


@dataclass(frozen=True)
class StageSchedule:
    """Stage, learning rate, τ and λ of every round (module docstring).

    Parameters
    ----------
    rounds : int
        ``federated.rounds``.
    stage1_rounds : int
        ``federated.stage1_rounds``.
    lr : float
        ``train.lr``.
    lr_schedule : str
        ``train.lr_schedule`` (``"cosine"`` decays within each stage; anything else is constant).
    tau_start, tau_end : float
        ``train.tau_start``, ``train.tau_end``.
    cost_weight : float
        ``train.cost_weight``.
    """

    rounds: int
    stage1_rounds: int
    lr: float
    lr_schedule: str
    tau_start: float
    tau_end: float
    cost_weight: float

    @classmethod
    def from_config(cls, cfg: FedMoEConfig) -> "StageSchedule":
        """The schedule of the scenario ``cfg``."""
        t = cfg.train
        return cls(cfg.federated.rounds, cfg.federated.stage1_rounds, t.lr, t.lr_schedule, t.tau_start, t.tau_end,
                   t.cost_weight)

    def stage(self, server_round: int) -> int:
        """1 for the first ``stage1_rounds`` rounds, then 2."""
        return 1 if server_round <= self.stage1_rounds else 2

    def progress(self, server_round: int) -> tuple[int, int]:
        """(rounds done in the current stage before this one, rounds of the stage)."""
        s1 = self.stage1_rounds
        if server_round <= s1:
            return server_round - 1, s1
        return server_round - s1 - 1, self.rounds - s1

    def learning_rate(self, server_round: int) -> float:
        """``lr``, with ``cosine`` decaying it to lr/100 over the rounds of each stage."""
        done, total = self.progress(server_round)
        if self.lr_schedule != "cosine" or total <= 1:
            return self.lr
        lo = self.lr / 100
        return lo + 0.5 * (self.lr - lo) * (1 + np.cos(np.pi * done / (total - 1)))

    def temperature(self, server_round: int) -> float:
        """τ: ``tau_start`` in stage I, annealed to ``tau_end`` over the rounds of stage II."""
        if server_round <= self.stage1_rounds:
            return self.tau_start
        done, total = self.progress(server_round)
        return float(TemperatureSchedule(self.tau_start, self.tau_end, max(1, total - 1))(done))

