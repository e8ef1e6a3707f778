"""The fedmoe ServerApp: discover the devices, run the strategy's rounds (or the loop of another
mode: split learning, distributed experts, V2I agents across base stations), evaluate, write the run folder.

Two entry points share :func:`serve_any` (the federated rounds themselves are
:func:`fedmoe.strategies.federated_learning.serve`):

* ``app`` — for ``flwr run .`` (``[tool.flwr.app.components]`` in pyproject.toml; on the
  deployment runtime its grid pulls replies every 0.25 s, :mod:`fedmoe.strategies.polling_grid`): the
  scenario is the run config's ``scenario`` (name or TOML path), ``overrides`` a
  ``;``-separated list of ``key.path=value``, the run folder ``run-dir``, ``resume``
  (true: continue the run saved in ``run-dir``, :mod:`fedmoe.federated.resume`) and
  ``force`` (true: a ``run-dir`` that holds an earlier run's outputs may be replaced; without
  it or ``resume`` a non-empty ``run-dir`` fails the run, :mod:`fedmoe.federated.run_folder`).
  A run that fails leaves no final model or report in ``run-dir``
  (:func:`fedmoe.federated.run_folder.discard_failed_run`).
* :func:`make_server_app` — for ``fedmoe run`` (:mod:`fedmoe.simulation`), which passes the
  config object directly (under ``run_simulation`` the run config is empty).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmoe.config import FedMoEConfig
from fedmoe.federated.resume import ResumeError, ServerState
from fedmoe.strategies.federated_learning import saved_state, serve  # noqa: F401  serve: the tests import it from here
from fedmoe.strategies.modes import MODES, mode_of


def serve_any(grid: Grid, cfg: FedMoEConfig, run_dir: Path | None, on_round: Callable | None = None,
              scenario_file: Path | None = None, resume: bool = False, client_state_dir: Path | None = None):
    """The ServerApp loop of ``cfg.mode`` (:attr:`fedmoe.strategies.modes.Mode.serve`): :func:`serve` for
    ``"federated"``, :func:`fedmoe.strategies.split_learning.serve_split` for ``"split"`` and ``"splitfed"``,
    :func:`fedmoe.strategies.distributed_experts.serve_distributed`, :func:`fedmoe.strategies.v2i_federated.serve_v2i`
    (``resume``: resumable modes only, :func:`check_resumable`)."""
    check_resumable(cfg, resume)
    return mode_of(cfg).serve(grid, cfg, run_dir, on_round, scenario_file, resume, client_state_dir)


def check_resumable(cfg: FedMoEConfig, resume: bool) -> None:
    """Only the modes whose runs checkpoint their whole state can resume (``federated``)."""
    if resume and not mode_of(cfg).resumable:
        resumable = " or ".join(repr(name) for name in MODES.names() if MODES.get(name).resumable)
        raise ResumeError(f"resume is supported for mode {resumable} only, not {cfg.mode!r} (its run restarts from "
                          "round 1)")


def saved_run(cfg: FedMoEConfig, run_dir: Path | None) -> ServerState:
    """The state to resume the run of ``cfg`` saved in ``run_dir`` from; a one-line
    :class:`~fedmoe.federated.resume.ResumeError` if this run cannot be resumed from there."""
    check_resumable(cfg, True)
    return saved_state(cfg, run_dir)


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
    force: bool = False


def config_from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """The config, run folder and resume flag of a ``flwr run`` run config (module docstring).

    Keys left out take the defaults of ``[tool.flwr.app.config]``. A bad value is a one-line
    :class:`~fedmoe.config.ConfigError` (or ``ValueError``) naming the run-config key: an unknown
    scenario, an ``overrides`` entry that is not ``key.path=value`` or whose value the config
    refuses, a ``resume`` or ``force`` that is not a boolean, both of them true, a ``run-dir``
    that is empty, not a string, not a folder that can be written, or not empty while neither
    ``resume`` nor ``force`` is true.
    """
    from fedmoe.config import ConfigError
    from fedmoe.federated.run_folder import check_run_folder
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
    force = run_config.get("force", False)
    if not isinstance(force, bool):
        raise ConfigError(f"run config force={force!r}: expected true or false")
    if resume and force:
        raise ConfigError("run config: resume=true and force=true exclude each other")
    folder = check_folder_target(run_dir.strip(), "run config run-dir")
    check_run_folder(folder, resume, force, "run config run-dir")
    return RunConfig(cfg, folder, resume, scenario_file, force)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run .`` entry point: config from the run config (:func:`config_from_run_config`)."""
    from fedmoe.federated.run_folder import clear_run_folder, discard_failed_run
    from fedmoe.files import first_missing
    from fedmoe.strategies.polling_grid import with_fast_replies

    cfg, run_dir, resume, scenario_file, force = config_from_run_config(context.run_config)
    if force:
        clear_run_folder(run_dir)
    made = first_missing(run_dir)
    try:
        serve_any(with_fast_replies(grid), cfg, run_dir, scenario_file=scenario_file, resume=resume)
    except BaseException:
        discard_failed_run(run_dir, cfg, made)
        raise
