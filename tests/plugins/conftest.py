"""Fixtures of the plugin tests: the example's plain Flower app (an MLP on scikit-learn's digits, with
BatchNorm) run in this process on an in-process Grid, and small device tables."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.federated.conftest import LocalGrid

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plain-flower-wireless"


@pytest.fixture(scope="module")
def digits_app():
    """The ``after`` app's package ``digits_app`` (task, client_app, server_app), imported from the example."""
    sys.path.insert(0, str(EXAMPLE / "after"))
    try:
        modules = {name: importlib.import_module(f"digits_app.{name}") for name in ("task", "client_app", "server_app")}
        yield modules
    finally:
        sys.path.remove(str(EXAMPLE / "after"))
        for name in [m for m in sys.modules if m == "digits_app" or m.startswith("digits_app.")]:
            del sys.modules[name]


@pytest.fixture
def digits_grid(digits_app):
    """``digits_grid(n, **kw)``: a Grid of ``n`` nodes (ids 101, 102, …) answering with the digits ClientApp."""
    def make(num_nodes: int, **kwargs) -> LocalGrid:
        return LocalGrid(num_nodes, client_app=digits_app["client_app"].app, first_node=101, **kwargs)
    return make


@pytest.fixture
def initial_arrays(digits_app):
    import torch
    from flwr.app import ArrayRecord

    torch.manual_seed(0)
    return ArrayRecord(digits_app["task"].Net().state_dict())


def gains_db(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
