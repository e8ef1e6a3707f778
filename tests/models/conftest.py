"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def shapes(samples):
    """Per-sample input shapes of the module's own ``samples`` fixture."""
    return samples.input_shapes
