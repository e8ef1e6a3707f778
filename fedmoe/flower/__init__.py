"""The only place in ``fedmoe/`` that imports Flower: conversions between numpy and Flower records."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` of named numpy arrays (order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays of an ``ArrayRecord``."""
    return {k: v.numpy() for k, v in record.items()}
