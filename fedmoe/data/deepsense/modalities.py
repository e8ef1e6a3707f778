"""The table of per-modality readers: which role, file reader, converter, shape and size each
modality of a DeepSense sample has. A new modality or sensor file type is one entry here.

``rf`` is read for the labels whatever the requested modalities (its converter only scales
the powers of the input); ``gps`` is not read from one file per modality but computed from
the positions (:mod:`fedmoe.data.deepsense.positions`), so it has no reader here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from fedmoe.config import SensorConfig
from fedmoe.data.deepsense.convert import box_resize, lidar_range_scan, range_angle_map
from fedmoe.data.deepsense.files import read_image, read_point_cloud, read_power, read_radar
from fedmoe.registry import Registry

RF_DB_FLOOR = -120.0
"""``rf_scale="db"``: powers <= 0 (and NaN beams) map to this many dB."""


@dataclass(frozen=True)
class ReadOptions:
    """The loader's settings the readers and converters need."""

    sensors: SensorConfig
    num_beams: int = 64
    rf_scale: Literal["linear", "db"] = "linear"
    lidar_fov_deg: float = 360.0


@dataclass(frozen=True)
class ModalityReader:
    """How one modality is read from the file a CSV cell names.

    Attributes
    ----------
    role
        The CSV column role (:data:`~fedmoe.data.deepsense.table.COLUMN_CANDIDATES`).
    read
        ``read(path, options)`` -> the raw array of the file (raises ``FileProblem``).
    convert
        ``convert(raw, options)`` -> the model input of one sample (a ``ValueError`` is a
        problem of the file).
    shape
        ``shape(options)`` -> the per-sample input shape.
    dtype
        The input's dtype.
    bits
        ``bits(options)`` -> uplink bits of one sample.
    """

    role: str
    read: Callable[[Path, ReadOptions], np.ndarray]
    convert: Callable[[np.ndarray, ReadOptions], np.ndarray]
    shape: Callable[[ReadOptions], tuple[int, ...]]
    dtype: Any
    bits: Callable[[ReadOptions], int]


def scale_powers(p: np.ndarray, o: ReadOptions) -> np.ndarray:
    """A power vector as the ``rf`` input: linear (NaN -> 0) or ``10 log10`` (<= 0 and NaN -> :data:`RF_DB_FLOOR`)."""
    if o.rf_scale == "db":
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10.0 * np.log10(np.where(p > 0, p, np.nan))
        return np.where(np.isfinite(db), np.maximum(db, RF_DB_FLOOR), RF_DB_FLOOR)
    return np.nan_to_num(p, nan=0.0)


READERS: Registry[ModalityReader] = Registry("DeepSense modality reader")
"""Modality name -> :class:`ModalityReader`; the loader reads every requested modality listed here."""

READERS.register("rf", ModalityReader(
    "rf", lambda p, o: read_power(p, o.num_beams), scale_powers,
    lambda o: (o.num_beams,), np.float32, lambda o: o.num_beams * 16))
READERS.register("camera", ModalityReader(
    "camera", lambda p, o: read_image(p), lambda a, o: box_resize(a, o.sensors.camera_size),
    lambda o: (3, o.sensors.camera_size, o.sensors.camera_size), np.uint8,
    lambda o: 3 * o.sensors.camera_size ** 2 * 8))
READERS.register("lidar", ModalityReader(
    "lidar", lambda p, o: read_point_cloud(p),
    lambda a, o: lidar_range_scan(a, o.sensors.lidar_rays, o.sensors.lidar_max_range_m, o.lidar_fov_deg),
    lambda o: (o.sensors.lidar_rays,), np.float32, lambda o: o.sensors.lidar_rays * 16))
READERS.register("radar", ModalityReader(
    "radar", lambda p, o: read_radar(p),
    lambda a, o: range_angle_map(a, o.sensors.radar_range_bins, o.sensors.radar_angle_bins),
    lambda o: (1, o.sensors.radar_range_bins, o.sensors.radar_angle_bins), np.float32,
    lambda o: o.sensors.radar_range_bins * o.sensors.radar_angle_bins * 16))

GPS_BITS = 6 * 32
"""The ``gps`` input: current and previous (east, north, up), 32 bit each."""
