"""Flower's built-in strategies as aggregation rules under :class:`fedmoe.strategies.ExpertWise`, by name.

``federated.aggregator`` picks one; ``federated.aggregator_options`` are its keyword
arguments (e.g. ``proximal_mu`` for ``fedprox``, ``eta`` for ``fedadam``,
``num_malicious_nodes`` for ``krum``). Every rule is built with ``fraction_train=1``
and all minimum node counts at 1: *which* devices take part is
decided by the resource-aware selection, and the rule only combines what arrived. A rule
gets one instance per parameter group (shared parameters, each expert), so stateful
rules (FedAdam's moments, FedAvgM's momentum) keep separate state per group.

Register your own rule (any :class:`flwr.serverapp.strategy.Strategy` whose
``aggregate_train`` combines the ``"arrays"`` of the replies)::

    from flwr.serverapp.strategy import FedAvg
    from fedmoe.strategies import AGGREGATORS

    @AGGREGATORS.register("my-rule")
    def my_rule(**options):
        return MyFedAvg(fraction_train=1.0, min_train_nodes=1, min_evaluate_nodes=1,
                        min_available_nodes=1, **options)

A rule that cannot combine the updates of a group (too few for a robust rule, say) raises
one of :data:`AGGREGATION_ERRORS`; ``ExpertWise`` then keeps that group as it was for the
round. Any other exception is a bug and ends the run.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

from flwr.serverapp import strategy as fs
from flwr.serverapp.exception import AggregationError, InconsistentMessageReplies

from fedmoe.registry import Registry

AggregatorFactory = Callable[..., fs.Strategy]
"""``factory(**options) -> Strategy``: a fresh rule instance per parameter group."""

AGGREGATORS: Registry[AggregatorFactory] = Registry("aggregator")

AGGREGATION_ERRORS: tuple[type[Exception], ...] = (
    AggregationError, InconsistentMessageReplies, ValueError, FloatingPointError, ZeroDivisionError)
"""What a rule raises when it refuses the updates it was given, rather than failing:

* ``AggregationError`` — Flower's rules: FedTrimmedAvg when its trimmed mean cannot be
  computed, FedAdam/FedAdagrad/FedYogi/FedAvgM without current arrays (``configure_train``
  not called) or with keys or shapes unlike them;
* ``InconsistentMessageReplies`` — Flower's check that the replies carry the same records and keys;
* ``ValueError`` — numpy on the updates (arrays that do not stack or broadcast), and the way
  a rule of one's own refuses;
* ``FloatingPointError`` — numpy under ``np.errstate(all="raise")``;
* ``ZeroDivisionError`` — weights that sum to zero in Flower's weighted means.

A ``TypeError``, ``AttributeError``, ``KeyError`` (…) is a bug, in the rule or in the
strategy, and is not caught.
"""

_ANY_NODE = {"fraction_train": 1.0, "min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}


def _builtin(cls: type[fs.Strategy]) -> AggregatorFactory:
    def factory(**options: Any) -> fs.Strategy:
        return cls(**{**_ANY_NODE, **options})

    factory.__doc__ = f"Flower's ``{cls.__name__}`` with any number of nodes (module docstring)."
    return factory


for _name, _cls in {
    "fedavg": fs.FedAvg,
    "fedprox": fs.FedProx,
    "fedavgm": fs.FedAvgM,
    "fedadam": fs.FedAdam,
    "fedadagrad": fs.FedAdagrad,
    "fedyogi": fs.FedYogi,
    "fedmedian": fs.FedMedian,
    "fedtrimmedavg": fs.FedTrimmedAvg,
    "krum": fs.Krum,
    "multikrum": fs.MultiKrum,
    "bulyan": fs.Bulyan,
}.items():
    AGGREGATORS.register(_name, _builtin(_cls))


@contextlib.contextmanager
def quiet_flower() -> Iterator[None]:
    """Silence Flower's INFO lines while a rule runs once per group (they would repeat per group)."""
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def make_aggregator(name: str, options: dict[str, Any] | None = None) -> fs.Strategy:
    """An instance of the rule ``name``; a bad option is a ``ValueError`` naming the rule."""
    factory = AGGREGATORS.get(name)
    try:
        with quiet_flower():
            rule = factory(**(options or {}))
    except TypeError as err:
        raise ValueError(f"aggregator {name!r}: {err}") from None
    for attr in ("min_available_nodes", "min_train_nodes"):
        if getattr(rule, attr, 1) > 1:
            raise ValueError(f"aggregator {name!r} has {attr}={getattr(rule, attr)}; it must be 1 under ExpertWise "
                             "(the resource-aware selection decides who takes part)")
    return rule
