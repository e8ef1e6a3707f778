"""Federated rounds of the mixture on a Flower grid (``mode = "federated"``): discover the
devices, run the strategy's rounds (``federated.strategy``), evaluate, write the run folder,
checkpoint the server's state after every round so that the run can resume
(:mod:`fedmoe.federated.resume`), and append the round's rows to the files an operator watches
(:mod:`fedmoe.federated.live_log`).

The ServerApp (:mod:`fedmoe.strategies.server_app`) runs :func:`serve` for this mode; the other
modes have their own loops (:mod:`fedmoe.strategies.split_learning`,
:mod:`fedmoe.strategies.distributed_experts`, :mod:`fedmoe.strategies.v2i_federated`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from fedmoe.config import FedMoEConfig
from fedmoe.federated.device_state import MESSAGE_CONFIG_KEY
from fedmoe.federated.evaluation import ServerEvaluator
from fedmoe.federated.live_log import LiveLog
from fedmoe.federated.parameters import LOCAL
from fedmoe.federated.parameters import to_numpy as state_to_numpy
from fedmoe.federated.reference import centralised_reference
from fedmoe.federated.report import metrics_document, round_rows, write_run
from fedmoe.federated.resume import (
    ResumeError,
    ServerState,
    capture_rng,
    check_arrays,
    load_state,
    restore_rng,
    resume_path,
    save_state,
)
from fedmoe.flower import to_numpy, to_record
from fedmoe.strategies.registry import STRATEGIES

log = logging.getLogger(__name__)


@dataclass
class FederatedRun:
    """What :func:`serve` produced: the metrics document and the final global arrays."""

    metrics: dict[str, Any]
    arrays: dict[str, Any]
    wall_s: float
    strategy: Any = field(repr=False, default=None)


def serve(grid: Grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
          scenario_file: Path | None = None, resume: bool = False,
          client_state_dir: Path | None = None) -> FederatedRun:
    """Run ``cfg.federated.rounds`` rounds of ``cfg.federated.strategy`` on ``grid``; write ``run_dir``.

    With a ``run_dir`` the server's state is saved there after every round
    (:mod:`fedmoe.federated.resume`); ``resume`` continues the run saved there instead of
    starting afresh. ``client_state_dir`` (simulation: a folder every virtual device can
    reach) is where devices keep their local state between rounds
    (:mod:`fedmoe.federated.device_state`); it is sent in every message's config.
    """
    t0 = time.perf_counter()
    fed = cfg.federated
    saved = _prepare_run_dir(run_dir, cfg, resume, client_state_dir)
    strategy = STRATEGIES.get(fed.strategy)(cfg, on_round=on_round)
    world = strategy.world
    groups = getattr(strategy, "groups", {})
    local = set(groups.get(LOCAL, []))
    initial = {k: v for k, v in state_to_numpy(world.template.state_dict()).items() if k not in local}
    evaluator = ServerEvaluator(world, fed.rounds, fed.eval_every, fed.checkpoint_every,
                                None if run_dir is None else Path(run_dir) / "checkpoints")
    first_round = 1
    if saved is not None:
        where = resume_path(Path(run_dir))
        check_arrays(saved.arrays, initial, where)
        try:
            strategy.restore_checkpoint_state(saved.strategy)
            restore_rng(saved.rng)
        except ResumeError as err:
            raise ResumeError(f"{where}: not a valid fedmoe resume state: {err}") from None
        evaluator.results = dict(saved.evaluations)
        initial, first_round = saved.arrays, saved.round + 1
        log.info("resuming the run in %s after round %d of %d", run_dir, saved.round, fed.rounds)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        res = evaluator.evaluate(server_round, to_numpy(arrays))
        if res is None:
            return None
        # A MetricRecord holds numbers only: the main score's name and the nested tables stay in metrics.json.
        return MetricRecord({k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    live = None
    if run_dir is not None:  # the per-round files an operator watches (fedmoe.federated.live_log)
        live = LiveLog(Path(run_dir), world.cfg.model_dump(mode="json"),
                       getattr(getattr(strategy, "ledger", None), "device_class", None), cfg.report.tensorboard)
        live.start(round_rows(getattr(strategy, "history", []), evaluator.results) if saved is not None else [],
                   getattr(strategy, "history", []), resumed=saved is not None)

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        if run_dir is not None:
            save_state(Path(run_dir), ServerState(server_round, cfg.model_dump(mode="json"), to_numpy(arrays),
                                                  strategy.checkpoint_state(), dict(evaluator.results), capture_rng()))
            history = getattr(strategy, "history", [])
            live.append(round_rows(history, evaluator.results), history)

    config = ConfigRecord({} if client_state_dir is None
                          else {MESSAGE_CONFIG_KEY: str(Path(client_state_dir).resolve())})
    try:
        result = strategy.start(grid, to_record(initial), fed.rounds, timeout=fed.round_timeout_s,
                                evaluate_fn=evaluate_fn, train_config=config, evaluate_config=config,
                                first_round=first_round, on_round_end=checkpoint)
    finally:
        if live is not None:
            live.close()
    rows = round_rows(getattr(strategy, "history", []), evaluator.results)
    extra = {"strategy": world.cfg.federated.strategy, "aggregator": world.cfg.federated.aggregator,
             "selection": world.cfg.federated.selection,
             "experts": [e.name for e in world.template.experts], "wall_s": time.perf_counter() - t0}
    if saved is not None:
        extra["resumed_after_round"] = saved.round
    metrics = metrics_document(rows, extra)
    if fed.centralised_reference and world.cfg.mode == "federated" and metrics["summary"].get("accuracy") is not None:
        ref = centralised_reference(world.cfg)
        metrics["centralised"] = ref
        metrics["summary"]["centralised_accuracy"] = ref["accuracy"]
        metrics["summary"]["accuracy_ratio"] = metrics["summary"]["accuracy"] / max(ref["accuracy"], 1e-12)
    if run_dir is not None:
        write_run(Path(run_dir), world.cfg.model_dump(mode="json"), metrics, scenario_file, extra["experts"],
                  rounds_csv=False)  # the live log wrote it round by round
    return FederatedRun(metrics, to_numpy(result.arrays) if len(result.arrays) else initial,
                        time.perf_counter() - t0, strategy)


def _prepare_run_dir(run_dir: Path | None, cfg: FedMoEConfig, resume: bool,
                     client_state_dir: Path | None) -> ServerState | None:
    """The saved state to resume from (``resume``), else ``None`` after removing what an earlier
    run left in ``run_dir`` that a fresh run must not mix with its own (resume state, device states)."""
    if resume:
        return saved_state(cfg, run_dir)
    if run_dir is not None:
        resume_path(Path(run_dir)).unlink(missing_ok=True)
        if client_state_dir is not None and Path(client_state_dir).resolve().is_relative_to(Path(run_dir).resolve()):
            shutil.rmtree(client_state_dir, ignore_errors=True)
    return None


def saved_state(cfg: FedMoEConfig, run_dir: Path | None) -> ServerState:
    """The state saved in ``run_dir`` to resume the run of ``cfg`` from; a one-line
    :class:`~fedmoe.federated.resume.ResumeError` without a run folder or if the run cannot be
    resumed from there (:func:`fedmoe.federated.resume.load_state`)."""
    if run_dir is None:
        raise ResumeError("resume needs the run folder (--out, run-dir) of the run to continue")
    return load_state(Path(run_dir), cfg)
