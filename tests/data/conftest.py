"""Fixtures for the data tests: sample sources built on the shared random containers."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from fedmoe.data.partition import DevicePartition, SampleSource
from tests.conftest import random_samples


def sample_source(num_beams: int = 10) -> SampleSource:
    """A :data:`~fedmoe.data.partition.SampleSource` of random containers, labels uniform over ``num_beams``.

    Module-level (not only a fixture) so that a subprocess can import it.
    """
    return lambda n, rng: random_samples(n, rng, num_beams)


def partition_arrays(part: DevicePartition) -> dict[str, np.ndarray]:
    """Every array of a device partition, flat, for exact comparisons (and ``np.savez``)."""
    s = part.samples
    out = {"present": s.present, "modalities": part.modalities, "noise": part.degradation.noise,
           "dropout": part.degradation.dropout, "dropped": part.dropped}
    for group in ("inputs", "labels", "conditions"):
        out.update({f"{group}/{k}": v for k, v in getattr(s, group).items()})
    if part.label_proportions is not None:
        out["label_proportions"] = part.label_proportions
    return out


@pytest.fixture
def make_source() -> Callable[..., SampleSource]:
    """Factory: ``make_source(num_beams=10)`` -> a sample source of random containers."""
    return sample_source
