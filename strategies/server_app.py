"""The fedmoe ServerApp: discover the devices, run the strategy's rounds (or the loop of another
mode: split learning, distributed experts, V2I agents across base stations), evaluate, write the run folder.

Two entry points share :func:`serve`:

* ``app`` — for ``flwr run .`` (``[tool.flwr.app.components]`` in pyproject.toml): the
  scenario is the run config's ``scenario`` (name or TOML path), ``overrides`` a
  ``;``-separated list of ``key.path=value``, the run folder ``run-dir``, and ``resume``
  (true: continue the run saved in ``run-dir``, :mod:`fedmoe.federated.resume`).
* :func:`make_server_app` — for ``fedmoe run`` (:mod:`sims.runner`), which passes the
  config object directly (under ``run_simulation`` the run config is empty).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedmoe.config import FedMoEConfig
from fedmoe.federated.device_state import MESSAGE_CONFIG_KEY
from fedmoe.federated.evaluation import ServerEvaluator
from fedmoe.federated.reference import centralised_reference
from fedmoe.federated.parameters import LOCAL, to_numpy as state_to_numpy
from fedmoe.federated.report import metrics_document, round_rows, write_run
from fedmoe.federated.resume import (ResumeError, ServerState, capture_rng, load_state, restore_rng, resume_path,
                                     save_state)
from fedmoe.flower import to_numpy, to_record
from strategies.registry import STRATEGIES

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
        strategy.load_state_dict(saved.strategy)
        evaluator.results = dict(saved.evaluations)
        restore_rng(saved.rng)
        initial, first_round = saved.arrays, saved.round + 1
        log.info("resuming the run in %s after round %d of %d", run_dir, saved.round, fed.rounds)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        res = evaluator.evaluate(server_round, to_numpy(arrays))
        if res is None:
            return None
        # A MetricRecord holds numbers only: the main score's name and the nested tables stay in metrics.json.
        return MetricRecord({k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        if run_dir is not None:
            save_state(Path(run_dir), ServerState(server_round, cfg.model_dump(mode="json"), to_numpy(arrays),
                                                  strategy.state_dict(), dict(evaluator.results), capture_rng()))

    config = ConfigRecord({} if client_state_dir is None else {MESSAGE_CONFIG_KEY: str(Path(client_state_dir).resolve())})
    result = strategy.start(grid, to_record(initial), fed.rounds, timeout=fed.round_timeout_s, evaluate_fn=evaluate_fn,
                            train_config=config, evaluate_config=config, first_round=first_round,
                            on_round_end=checkpoint)
    rows = round_rows(getattr(strategy, "history", []), evaluator.results)
    extra = {"strategy": world.cfg.federated.strategy, "aggregator": world.cfg.federated.aggregator, "selection": world.cfg.federated.selection,
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
        write_run(Path(run_dir), world.cfg.model_dump(mode="json"), metrics, scenario_file, extra["experts"])
    return FederatedRun(metrics, to_numpy(result.arrays) if len(result.arrays) else initial,
                        time.perf_counter() - t0, strategy)


def _prepare_run_dir(run_dir: Path | None, cfg: FedMoEConfig, resume: bool,
                     client_state_dir: Path | None) -> ServerState | None:
    """The saved state to resume from (``resume``), else ``None`` after removing what an earlier
    run left in ``run_dir`` that a fresh run must not mix with its own (resume state, device states)."""
    if resume:
        return saved_run(cfg, run_dir)
    if run_dir is not None:
        resume_path(Path(run_dir)).unlink(missing_ok=True)
        if client_state_dir is not None and Path(client_state_dir).resolve().is_relative_to(Path(run_dir).resolve()):
            shutil.rmtree(client_state_dir, ignore_errors=True)
    return None


def serve_any(grid: Grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
              scenario_file: Path | None = None, resume: bool = False, client_state_dir: Path | None = None):
    """:func:`serve` for ``mode = "federated"``, :func:`strategies.distributed_experts.serve_distributed`
    for ``"distributed"``, :func:`strategies.v2i_federated.serve_v2i` for ``"v2i"``,
    :func:`strategies.split_learning.serve_split` otherwise (``resume``: federated only)."""
    check_resumable(cfg, resume)
    if cfg.mode == "federated":
        return serve(grid, cfg, run_dir, on_round, scenario_file, resume, client_state_dir)
    if cfg.mode == "v2i":
        from strategies.v2i_federated import serve_v2i

        return serve_v2i(grid, cfg, run_dir, on_round, scenario_file)
    if cfg.mode == "distributed":
        from strategies.distributed_experts import serve_distributed

        return serve_distributed(grid, cfg, run_dir, on_round, scenario_file)
    from strategies.split_learning import serve_split

    return serve_split(grid, cfg, run_dir, on_round, scenario_file)


def check_resumable(cfg: FedMoEConfig, resume: bool) -> None:
    """Only ``mode = "federated"`` runs checkpoint their whole state and can resume."""
    if resume and cfg.mode != "federated":
        raise ResumeError(f"resume is supported for mode 'federated' only, not {cfg.mode!r} (its run restarts from round 1)")


def saved_run(cfg: FedMoEConfig, run_dir: Path | None) -> ServerState:
    """The state to resume the run of ``cfg`` saved in ``run_dir`` from; a one-line
    :class:`~fedmoe.federated.resume.ResumeError` if this run cannot be resumed from there."""
    check_resumable(cfg, True)
    if run_dir is None:
        raise ResumeError("resume needs the run folder (--out, run-dir) of the run to continue")
    return load_state(Path(run_dir), cfg)


def make_server_app(cfg: FedMoEConfig, run_dir: Path | None, outcome: list, on_round: Callable | None = None,
                    scenario_file: Path | None = None, resume: bool = False,
                    client_state_dir: Path | None = None) -> ServerApp:
    """A ServerApp bound to ``cfg``; :func:`serve`'s result (or the exception it raised) is appended to
    ``outcome``. ``resume`` and ``client_state_dir``: as in :func:`serve`."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            outcome.append(serve_any(grid, cfg, run_dir, on_round, scenario_file, resume, client_state_dir))
        except BaseException as err:  # noqa: BLE001 - reported by the caller, which re-raises it
            outcome.append(err)
            raise

    return server


class RunConfig(NamedTuple):
    """What the ``flwr run`` run config asks for (:func:`config_from_run_config`)."""

    cfg: FedMoEConfig
    run_dir: Path
    resume: bool
    scenario_file: Path


def config_from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """The config, run folder and resume flag of a ``flwr run`` run config (module docstring).

    Keys left out take the defaults of ``[tool.flwr.app.config]``. A bad value is a one-line
    :class:`~fedmoe.config.ConfigError` (or ``ValueError``) naming the run-config key: an unknown
    scenario, an ``overrides`` entry that is not ``key.path=value`` or whose value the config
    refuses, a ``resume`` that is not a boolean, a ``run-dir`` that is empty, not a string or
    not a folder that can be written.
    """
    from fedmoe.config import ConfigError
    from fedmoe.files import check_folder_target
    from fedmoe.overrides import parse_overrides
    from fedmoe.scenarios import load_scenario, resolve_scenario

    def text(key: str, default: str) -> str:
        value = run_config.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"run config {key}={value!r}: expected a string")
        return value

    scenario = text("scenario", "default")
    assignments = [a.strip() for a in text("overrides", "").split(";") if a.strip()]
    overrides = parse_overrides(assignments, "run config overrides:")
    try:
        scenario_file = resolve_scenario(scenario)
    except ConfigError as err:
        raise ConfigError(f"run config scenario: {err}") from None
    try:
        cfg = load_scenario(scenario, overrides)
    except ConfigError as err:
        raise ConfigError("run config: " + "; ".join(str(err).splitlines())) from None
    run_dir = text("run-dir", "runs/flwr")
    if not run_dir.strip():
        raise ConfigError("run config run-dir='': expected the run folder's path")
    resume = run_config.get("resume", False)
    if not isinstance(resume, bool):
        raise ResumeError(f"run config resume={resume!r}: expected true or false")
    return RunConfig(cfg, check_folder_target(run_dir.strip(), "run config run-dir"), resume, scenario_file)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run .`` entry point: config from the run config (:func:`config_from_run_config`)."""
    cfg, run_dir, resume, scenario_file = config_from_run_config(context.run_config)
    serve_any(grid, cfg, run_dir, scenario_file=scenario_file, resume=resume)
