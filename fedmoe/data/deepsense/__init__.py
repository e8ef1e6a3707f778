"""Loader for DeepSense 6G scenario folders (real multimodal V2I measurements).

DeepSense 6G (https://www.deepsense6g.net) publishes each scenario as a folder holding
a scenario CSV (``scenarioN.csv``, ``scenarioN_dev.csv``, task and challenge splits, ...)
with one row per sample and per-modality files referenced by relative paths
(``./unit1/mmWave_data/...txt``). :func:`load_deepsense_scenario` reads such a CSV into an
:class:`~fedmoe.data.samples.ISACSamples`:

========  =======================  ===================================================
modality  default CSV column       conversion
========  =======================  ===================================================
rf        ``unit1_pwr_60ghz``      the ``num_beams`` received powers (linear or dB)
camera    ``unit1_rgb``            box-filtered to ``3 x S x S`` uint8
lidar     ``unit1_lidar[_SCR]``    point cloud or 2-D scan -> horizontal range scan (``rays``)
radar     ``unit1_radar``          FMCW cube -> ``1 x R x A`` range-angle map (dB)
gps       ``unit2_loc[_cal]``      lat/lon -> local east/north/up metres from unit 1
========  =======================  ===================================================

The package, one job per module:

- :mod:`~fedmoe.data.deepsense.table`: finding and reading the CSV, column roles (numbered
  series of task CSVs included), the scenario root;
- :mod:`~fedmoe.data.deepsense.files`: the file readers (text, PLY, images, ``.npy``/``.mat``);
- :mod:`~fedmoe.data.deepsense.convert`: frames to fixed-size inputs;
- :mod:`~fedmoe.data.deepsense.modalities`: the table of per-modality readers (role, reader,
  converter, shape, bits);
- :mod:`~fedmoe.data.deepsense.cells`: reading the cells' files with errors naming CSV, row,
  column and file;
- :mod:`~fedmoe.data.deepsense.labels`, :mod:`~fedmoe.data.deepsense.positions`: beam labels,
  positions in one frame, sequences;
- :mod:`~fedmoe.data.deepsense.loader`: :func:`load_deepsense_scenario`.

Formats, conventions and sources: ``docs/data-deepsense.md``.
"""

from fedmoe.data.deepsense.convert import (
    MIN_LIDAR_RANGE_M,
    RADAR_DB_FLOOR,
    box_resize,
    lidar_range_scan,
    range_angle_map,
)
from fedmoe.data.deepsense.errors import DeepSenseFormatError
from fedmoe.data.deepsense.files import ARRAY_FORMATS, read_point_cloud
from fedmoe.data.deepsense.geometry import WGS84_A, WGS84_F, local_metres
from fedmoe.data.deepsense.loader import load_deepsense_scenario
from fedmoe.data.deepsense.modalities import READERS, RF_DB_FLOOR, ModalityReader
from fedmoe.data.deepsense.positions import read_base_station
from fedmoe.data.deepsense.table import COLUMN_CANDIDATES

__all__ = [
    "ARRAY_FORMATS",
    "COLUMN_CANDIDATES",
    "MIN_LIDAR_RANGE_M",
    "RADAR_DB_FLOOR",
    "READERS",
    "RF_DB_FLOOR",
    "WGS84_A",
    "WGS84_F",
    "DeepSenseFormatError",
    "ModalityReader",
    "box_resize",
    "lidar_range_scan",
    "load_deepsense_scenario",
    "local_metres",
    "range_angle_map",
    "read_base_station",
    "read_point_cloud",
]
