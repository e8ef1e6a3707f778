"""Flower's round loop, able to start at any round and to checkpoint after each one.

:meth:`flwr.serverapp.strategy.Strategy.start` always runs rounds ``1..num_rounds`` from the
initial arrays. A run resumed from a checkpoint (:mod:`fedmoe.federated.resume`) must
instead continue with round ``t + 1`` from the arrays and the strategy state saved after
round ``t``. :class:`ResumableStrategy` runs the same loop as Flower's ``start`` (training
round, client-side evaluation, server-side ``evaluate_fn``) from ``first_round``, and
calls ``on_round_end(round, arrays)`` once each round is complete, which is where the
server saves its state. Subclasses provide :meth:`ResumableStrategy.state_dict` and
:meth:`ResumableStrategy.load_state_dict`: everything besides the global arrays that the
next rounds depend on.
"""

from __future__ import annotations

import time
from logging import INFO
from typing import Any, Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

RoundEnd = Callable[[int, ArrayRecord], None]


class ResumableStrategy(Strategy):
    """A :class:`~flwr.serverapp.strategy.Strategy` whose loop can resume (module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        """Picklable state (besides the global arrays) that later rounds depend on."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed: it lacks state_dict()")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        raise NotImplementedError(f"{type(self).__name__} cannot be resumed: it lacks load_state_dict()")

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None, *,
              first_round: int = 1, on_round_end: RoundEnd | None = None) -> Result:
        """Rounds ``first_round..num_rounds`` of Flower's loop from ``initial_arrays``.

        Parameters
        ----------
        grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn
            As in :meth:`flwr.serverapp.strategy.Strategy.start`; ``evaluate_fn(0, …)`` (the
            initial model) runs only when ``first_round == 1``.
        first_round : int, optional
            The first round to run (``t + 1`` when resuming after round ``t``).
        on_round_end : callable, optional
            ``on_round_end(round, arrays)`` after each complete round (checkpoints).

        Returns
        -------
        Result
            The final arrays and the metrics of the rounds run by this call.
        """
        if not 1 <= first_round <= num_rounds + 1:
            raise ValueError(f"first_round={first_round} is outside [1, {num_rounds + 1}]")
        # Flower's own logger and lines, as Strategy.start writes them: `flwr run --stream` shows them
        log(INFO, "Starting %s strategy at round %d of %d", type(self).__name__, first_round, num_rounds)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        result.arrays = initial_arrays
        t0 = time.time()
        if evaluate_fn and first_round == 1:
            res = evaluate_fn(0, initial_arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        for current in range(first_round, num_rounds + 1):
            log(INFO, "")
            log(INFO, "[ROUND %d/%d]", current, num_rounds)
            replies = grid.send_and_receive(messages=self.configure_train(current, arrays, train_config, grid),
                                            timeout=timeout)
            new_arrays, train_metrics = self.aggregate_train(current, replies)
            if new_arrays is not None:
                result.arrays = arrays = new_arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[current] = train_metrics
            replies = grid.send_and_receive(messages=self.configure_evaluate(current, arrays, evaluate_config, grid),
                                            timeout=timeout)
            eval_metrics = self.aggregate_evaluate(current, replies)
            if eval_metrics is not None:
                result.evaluate_metrics_clientapp[current] = eval_metrics
            if evaluate_fn:
                res = evaluate_fn(current, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[current] = res
            if on_round_end is not None:
                on_round_end(current, arrays)
        log(INFO, "Strategy execution finished in %.2fs (rounds %d..%d)", time.time() - t0, first_round, num_rounds)
        return result
