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

That state may hold Flower objects: the aggregation rules themselves (a Flower
``Strategy`` per parameter group, with FedAvgM's momentum or FedAdam's moments inside) and
their ``ArrayRecord`` s. A resume file holds plain data only (no pickle,
:mod:`fedmoe.federated.resume`), so :meth:`ResumableStrategy.checkpoint_state` turns each
rule into a :class:`SavedRule` (its class name and its data attributes; its functions come
from the config) and each ``ArrayRecord`` into :class:`SavedArrays`, and
:meth:`ResumableStrategy.restore_checkpoint_state` puts the data back onto a fresh rule
built from the config (:meth:`ResumableStrategy.new_rule`), refusing a saved rule of
another class, with attributes the fresh rule lacks, or whose options differ from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import INFO
from typing import Any, Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedmoe.federated.resume import STATE_RECORDS, ResumeError

RoundEnd = Callable[[int, ArrayRecord], None]

_OPTION_TYPES = (bool, int, float, str)
"""Attributes of a fresh rule of these types are its options (from the config): a saved rule must match them."""


@dataclass
class SavedRule:
    """A Flower rule in a resume file: its class and its data attributes (module docstring).

    Attributes
    ----------
    kind : str
        ``module.QualifiedName`` of the rule's class.
    attributes : dict[str, Any]
        Its attributes that are not functions, as plain data (:func:`plain_state`).
    """

    kind: str
    attributes: dict[str, Any]


@dataclass
class SavedArrays:
    """A Flower ``ArrayRecord`` in a resume file: its arrays by name, in order."""

    arrays: dict[str, np.ndarray]


STATE_RECORDS.register("SavedRule", SavedRule)
STATE_RECORDS.register("SavedArrays", SavedArrays)


def _kind(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def plain_state(value: Any) -> Any:
    """``value`` with every Flower rule made a :class:`SavedRule` and every ``ArrayRecord`` a
    :class:`SavedArrays`, through dicts, lists and tuples (other values are returned as they are)."""
    if isinstance(value, Strategy):
        return SavedRule(_kind(value), {k: plain_state(v) for k, v in vars(value).items() if not callable(v)})
    if isinstance(value, ArrayRecord):
        return SavedArrays({k: a.numpy() for k, a in value.items()})
    if isinstance(value, dict):
        return {k: plain_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_state(v) for v in value)
    return value


def live_state(value: Any, new_rule: Callable[[], Strategy], where: str = "state") -> Any:
    """The inverse of :func:`plain_state`: each :class:`SavedRule` restored onto ``new_rule()``.

    A :class:`~fedmoe.federated.resume.ResumeError` (naming ``where``) if a saved rule is of
    another class than the fresh one, sets an attribute the fresh rule does not have or has
    as a function, or has an option (a plain number, string or flag of the fresh rule) of
    another value.
    """
    if isinstance(value, SavedRule):
        rule = new_rule()
        if value.kind != _kind(rule):
            raise ResumeError(f"{where}: a saved {value.kind}, but the config's rule is a {_kind(rule)}")
        fresh = vars(rule)
        for name, saved in value.attributes.items():
            if name not in fresh or callable(fresh[name]):
                raise ResumeError(f"{where}: {value.kind} has no data attribute {name!r}")
            current = fresh[name]
            if isinstance(current, _OPTION_TYPES) and (type(saved) is not type(current) or saved != current):
                raise ResumeError(f"{where}: option {name}={saved!r} of the saved rule differs from the config's "
                                  f"{current!r}")
            setattr(rule, name, live_state(saved, new_rule, f"{where}.{name}"))
        return rule
    if isinstance(value, SavedArrays):
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in value.arrays.items()})
    if isinstance(value, dict):
        return {k: live_state(v, new_rule, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(live_state(v, new_rule, f"{where}[{i}]") for i, v in enumerate(value))
    return value


class ResumableStrategy(Strategy):
    """A :class:`~flwr.serverapp.strategy.Strategy` whose loop can resume (module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        """State (besides the global arrays) that later rounds depend on: plain data, arrays,
        dataclasses registered in :data:`fedmoe.federated.resume.STATE_RECORDS`, Flower rules and
        ``ArrayRecord`` s (module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed: it lacks state_dict()")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        raise NotImplementedError(f"{type(self).__name__} cannot be resumed: it lacks load_state_dict()")

    def new_rule(self) -> Strategy:
        """A fresh instance of the aggregation rule its state holds, built from the config, onto
        which :meth:`restore_checkpoint_state` puts a saved rule's data. This default builds
        ``make_aggregator(self.aggregator_name, self.aggregator_options)``
        (:mod:`fedmoe.strategies.aggregators`), as :class:`fedmoe.strategies.ExpertWise` does for every group."""
        from fedmoe.strategies.aggregators import make_aggregator

        return make_aggregator(getattr(self, "aggregator_name"), getattr(self, "aggregator_options"))

    def checkpoint_state(self) -> dict[str, Any]:
        """:meth:`state_dict` as plain data for a resume file (:func:`plain_state`)."""
        return plain_state(self.state_dict())

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """:meth:`load_state_dict` of a state read back from a resume file.

        The saved state must have the keys of this (fresh) strategy's :meth:`state_dict`, each
        value of the same type; rules are rebuilt by :func:`live_state`. Any of these checks, or
        :meth:`load_state_dict` itself, failing on the saved values is a one-line
        :class:`~fedmoe.federated.resume.ResumeError`: a state file that is not one never
        half-restores a strategy that then fails in a later round.
        """
        expected = self.state_dict()
        if set(state) != set(expected):
            raise ResumeError(f"strategy state has keys {sorted(state)}, {type(self).__name__} has {sorted(expected)}")
        for key, value in expected.items():
            if type(state[key]) is not type(value):
                raise ResumeError(f"strategy state {key!r} is a {type(state[key]).__name__}, "
                                  f"expected a {type(value).__name__}")
        live = live_state(state, self.new_rule, "strategy state")
        try:
            self.load_state_dict(live)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, OverflowError) as err:
            raise ResumeError(f"strategy state: {type(self).__name__} cannot load it ({type(err).__name__}: "
                              f"{err})") from None

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
