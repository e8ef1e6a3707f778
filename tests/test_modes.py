"""The mode registry (:mod:`fedmoe.strategies.modes`): every ``mode`` the config accepts has one
:class:`~fedmoe.strategies.modes.Mode`, and every place that depends on the mode asks it."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from fedmoe.config import FedMoEConfig
from fedmoe.federated.resume import ResumeError
from fedmoe.registry import UnknownNameError
from fedmoe.strategies.modes import MODES, Mode, check_config, mode_of
from tests.federated.conftest import tiny_config


def test_every_mode_of_the_config_is_registered():
    assert MODES.names() == sorted(get_args(FedMoEConfig.model_fields["mode"].annotation))
    assert all(isinstance(MODES.get(name), Mode) for name in MODES)
    assert [name for name in MODES if MODES.get(name).resumable] == ["federated"]


def test_an_unknown_mode_names_the_registered_ones():
    with pytest.raises(UnknownNameError, match="mode: unknown mode 'centralised'; known: distributed, federated, "
                                               "split, splitfed, v2i"):
        MODES.check("centralised", "mode")


@pytest.fixture
def recording_mode(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the registered ``split`` mode by one that records what it is asked."""
    calls: list = []
    split = MODES.get("split")

    def serve(grid, cfg, run_dir, on_round=None, scenario_file=None, resume=False, client_state_dir=None):
        calls.append(("serve", cfg.mode, run_dir))
        return "a run"

    fake = dataclasses.replace(split, check=lambda cfg: calls.append(("check", cfg.mode)), serve=serve,
                               describe=lambda cfg: "a recorded mode", summarise=lambda run, out: f"summary of {run}")
    monkeypatch.setitem(MODES._items, "split", fake)
    return calls


def test_the_server_app_and_the_checks_ask_the_registry(recording_mode, tmp_path):
    from fedmoe.strategies.server_app import serve_any

    cfg = tiny_config(mode="split")
    assert mode_of(cfg) is MODES.get("split")
    check_config(cfg)
    assert serve_any(None, cfg, tmp_path) == "a run"
    assert recording_mode == [("check", "split"), ("serve", "split", tmp_path)]


def test_fedmoe_run_prints_what_the_mode_describes_and_summarises(recording_mode, tmp_path, monkeypatch, capsys):
    import fedmoe.simulation
    from fedmoe.cli import main

    monkeypatch.setattr(fedmoe.simulation, "run_federated", lambda cfg, out, **kwargs: f"{cfg.mode} run")
    assert main(["run", "--set", "mode='split'", "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(": a recorded mode")


def test_only_resumable_modes_resume(tmp_path):
    from fedmoe.strategies.server_app import check_resumable

    check_resumable(tiny_config(), True)
    check_resumable(tiny_config(mode="v2i", partition={"num_devices": 3}), False)
    with pytest.raises(ResumeError, match="resume is supported for mode 'federated' only, not 'distributed'"):
        check_resumable(tiny_config(mode="distributed", distributed={"num_experts": 3}), True)
