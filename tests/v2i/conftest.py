"""Fixtures of the V2I tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread, as in the benchmarks: the agents' operations are small, and on a machine
    whose cores are busy more threads than free cores make them many times slower."""
    from strategies.v2i_federated import torch_threads

    with torch_threads(1):
        yield
