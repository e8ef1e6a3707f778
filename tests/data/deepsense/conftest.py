"""A small DeepSense 6G scenario folder in the published layout, written by the tests.

Layout (as in the multimodal scenarios 31-34; see docs/data-deepsense.md)::

    scenario31/
      scenario31_dev.csv
      unit1/camera_data/image_<i>.jpg          (Pillow present) or .npy
      unit1/mmWave_data/mmWave_power_<i>.txt   64 lines, one power per line
      unit1/lidar_data/lidar_data_<i>.ply      ASCII PLY: x y z double, intensity ushort
      unit1/radar_data/radar_data_<i>.npy      complex64 (4 rx, 256 samples, 8 chirps)
      unit1/GPS_data/gps_location.txt          base station: latitude, longitude lines
      unit2/GPS_data/GPS_location_<i>.txt      user: latitude, longitude lines

Paths in the CSV are relative (``./unit1/...``), beam labels are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

try:
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None

BS_LAT, BS_LON = 33.42, -111.93
"""Unit 1 (base station) position of the fixture."""

RADAR_SHAPE = (4, 256, 8)
"""rx antennas, ADC samples per chirp, chirps (real frames have 128 or 250 chirps)."""

HEADER = ["index", "unit1_rgb", "unit1_pwr_60ghz", "unit1_lidar", "unit1_radar", "unit1_loc", "unit2_loc",
          "unit1_beam", "seq_index", "time_stamp[UTC]"]


@dataclass
class Scenario:
    """What the fixture wrote, for the assertions."""

    root: Path
    csv: Path
    index: list[int]
    seq: list[int]
    best: list[int]                     # 0-based best beam of each row
    colours: list[tuple[int, int, int]]  # camera colour of each row
    offsets_deg: list[tuple[float, float]]  # user (dlat, dlon) from the base station
    files: dict[str, list[Path]] = field(default_factory=dict)

    def rewrite_csv(self, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
        """Apply ``edit`` to the CSV's rows (header first) and write it back."""
        rows = [line.split(",") for line in self.csv.read_text().splitlines()]
        self.csv.write_text("\n".join(",".join(r) for r in edit(rows)) + "\n")


def power_vector(best: int, num_beams: int = 64) -> np.ndarray:
    """A smooth beam pattern peaking at ``best`` (linear power, all positive)."""
    k = np.arange(num_beams)
    return 0.1 + 0.6 * np.exp(-0.5 * ((k - best) / 3.0) ** 2)


def radar_cube(range_cycles: float = 64.0, spatial: float = 0.25, doppler_cycles: float = 2.0) -> np.ndarray:
    """A single moving point target: ``range_cycles`` cycles over the 256 samples, phase step
    ``2 pi spatial`` between antennas, ``doppler_cycles`` cycles over the chirps."""
    rx, ns, nc = RADAR_SHAPE
    k, t, c = np.meshgrid(np.arange(rx), np.arange(ns), np.arange(nc), indexing="ij")
    phase = range_cycles * t / ns + spatial * k + doppler_cycles * c / nc
    return np.exp(2j * np.pi * phase).astype(np.complex64)


def write_ply(path: Path, points: np.ndarray) -> None:
    lines = ["ply", "format ascii 1.0", "comment written by the fedmoe tests", f"element vertex {len(points)}",
             "property double x", "property double y", "property double z", "property ushort intensity", "end_header"]
    lines += [f"{x:.6f} {y:.6f} {z:.6f} {i}" for i, (x, y, z) in enumerate(points)]
    path.write_text("\n".join(lines) + "\n")


def lidar_points(row: int) -> np.ndarray:
    """Two returns: one straight ahead (+x) at 5 + row m, one at +90 deg (+y) at 20 m, plus a
    no-return marker at the origin."""
    return np.array([[5.0 + row, 0.0, 0.3], [0.0, 20.0, -1.0], [0.0, 0.0, 0.0]])


def write_scenario(root: Path, use_jpeg: bool = True) -> Scenario:
    """Write a 4-row scenario: sequence 1 holds rows 1-3, sequence 2 row 4."""
    index, seq = [5, 6, 7, 12], [1, 1, 1, 2]
    best = [10, 20, 30, 45]
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)]
    offsets = [(1e-4, 2e-4), (2e-4, 2e-4), (3e-4, 1e-4), (-1e-4, -1e-4)]
    dirs = {d: root / d for d in ("unit1/camera_data", "unit1/mmWave_data", "unit1/lidar_data",
                                  "unit1/radar_data", "unit1/GPS_data", "unit2/GPS_data")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (dirs["unit1/GPS_data"] / "gps_location.txt").write_text(f"{BS_LAT}\n{BS_LON}\n")
    scen = Scenario(root, root / "scenario31_dev.csv", index, seq, best, colours, offsets,
                    {m: [] for m in ("camera", "rf", "lidar", "radar", "gps")})
    rows = [HEADER]
    jpeg = use_jpeg and Image is not None
    for r, i in enumerate(index):
        img = np.broadcast_to(np.array(colours[r], dtype=np.uint8), (54, 96, 3)).copy()
        cam = dirs["unit1/camera_data"] / (f"image_{i}.jpg" if jpeg else f"image_{i}.npy")
        if jpeg:
            Image.fromarray(img).save(cam, quality=95)
        else:
            np.save(cam, img)
        pwr = dirs["unit1/mmWave_data"] / f"mmWave_power_{i}.txt"
        pwr.write_text("\n".join(f"{v:.6f}" for v in power_vector(best[r])) + "\n")
        lid = dirs["unit1/lidar_data"] / f"lidar_data_{i}.ply"
        write_ply(lid, lidar_points(r))
        rad = dirs["unit1/radar_data"] / f"radar_data_{i}.npy"
        np.save(rad, radar_cube())
        gps = dirs["unit2/GPS_data"] / f"GPS_location_{i}.txt"
        gps.write_text(f"{BS_LAT + offsets[r][0]:.8f}\n{BS_LON + offsets[r][1]:.8f}\n")
        for m, p in (("camera", cam), ("rf", pwr), ("lidar", lid), ("radar", rad), ("gps", gps)):
            scen.files[m].append(p)
        rel = lambda p: "./" + p.relative_to(root).as_posix()  # noqa: E731
        rows.append([str(i), rel(cam), rel(pwr), rel(lid), rel(rad), "./unit1/GPS_data/gps_location.txt", rel(gps),
                     str(best[r] + 1), str(seq[r]), f"11-48-28-{477968 + 100000 * r}"])
    scen.csv.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return scen


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    """The 4-row scenario folder (camera frames as JPEG when Pillow is installed)."""
    return write_scenario(tmp_path / "scenario31")


@pytest.fixture
def npy_scenario(tmp_path: Path) -> Scenario:
    """The same folder with camera frames stored as .npy (exact pixel values)."""
    return write_scenario(tmp_path / "npy" / "scenario31", use_jpeg=False)


# --------------------------------------------------------------------------- task and challenge layouts

CHALLENGE_HEADER = ["index", "unit2_loc_1", "unit1_pwr_1", "beam_index_1"]
"""Split CSVs of the position-aided beam prediction challenge (scenarios 1-9)."""


@dataclass
class Challenge:
    """A scenario folder with the challenge's split CSVs (what the fixture wrote)."""

    root: Path
    splits: dict[str, Path]                 # "train"/"val"/"test" -> CSV
    rows: dict[str, list[int]]              # split -> the sample numbers of its rows
    best: dict[int, int]                    # sample -> 0-based best beam
    offsets_deg: dict[int, tuple[float, float]]  # sample -> user (dlat, dlon) from the base station
    unlabelled: Path                        # the unlabelled CSV: index, unit1_loc, unit2_loc


def write_challenge(root: Path) -> Challenge:
    """Scenario 5 with three 2-row split CSVs and an unlabelled 2-row CSV. The base station's file
    has CRLF line ends and trailing blank lines; the CSV paths start with ``./``."""
    for d in ("unit1/GPS_data", "unit1/mmWave_data", "unit2/GPS_data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "unit1/GPS_data/gps_location.txt").write_bytes(f"{BS_LAT}\r\n{BS_LON}\r\n\r\n\r\n".encode())
    rows = {"train": [1, 2], "val": [3, 4], "test": [5, 6], "unlabelled": [7, 8]}
    best = {s: 3 + 7 * s for s in range(1, 9)}
    offsets = {s: (1e-4 * s, -5e-5 * s) for s in range(1, 9)}
    splits = {}
    for split, samples in rows.items():
        lines = [["index", "unit1_loc", "unit2_loc"] if split == "unlabelled" else CHALLENGE_HEADER]
        for s in samples:
            gps = root / f"unit2/GPS_data/gps_location_{s}.txt"
            gps.write_text(f"{BS_LAT + offsets[s][0]:.8f}\n{BS_LON + offsets[s][1]:.8f}\n")
            pwr = root / f"unit1/mmWave_data/mmWave_power_{s}.txt"
            pwr.write_text("\n".join(f"{v:.6f}" for v in power_vector(best[s])) + "\n")
            if split == "unlabelled":
                lines.append([str(s), "./unit1/GPS_data/gps_location.txt", f"./unit2/GPS_data/gps_location_{s}.txt"])
            else:
                lines.append([str(s), f"./unit2/GPS_data/gps_location_{s}.txt",
                              f"./unit1/mmWave_data/mmWave_power_{s}.txt", str(best[s] + 1)])
        name = "scenario5_unlabelled.csv" if split == "unlabelled" else f"scenario5_dev_{split}.csv"
        splits[split] = root / name
        splits[split].write_text("\n".join(",".join(r) for r in lines) + "\n")
    unlabelled = splits.pop("unlabelled")
    return Challenge(root, splits, rows, best, offsets, unlabelled)


@pytest.fixture
def challenge(tmp_path: Path) -> Challenge:
    return write_challenge(tmp_path / "scenario5")


@dataclass
class SequenceTask:
    """A sequence task folder (blockage prediction): ``future-1/`` holds the CSV, paths are
    relative to the scenario root."""

    root: Path
    csv: Path
    frames: int
    best: list[list[int]]       # row -> the 0-based best beam of each frame
    colours: list[tuple[int, int, int]]  # row -> the colour of its last camera frame
    future: list[str]           # row -> the blockage_final cell


def write_sequence_task(root: Path, frames: int = 3) -> SequenceTask:
    """Scenario 17 with a 3-row task CSV ``future-1/scenario17_series.csv``: ``unit1_pwr_60ghz_1..F``,
    ``unit1_rgb_1..F`` (frames as ``.npy``), ``blockage_final`` and ``seq_index``."""
    for d in ("unit1/mmWave_data", "unit1/camera_data", "future-1"):
        (root / d).mkdir(parents=True, exist_ok=True)
    header = ["index", *[f"unit1_pwr_60ghz_{k}" for k in range(1, frames + 1)],
              *[f"unit1_rgb_{k}" for k in range(1, frames + 1)], "blockage_final", "seq_index"]
    best = [[5 + r * 10 + k for k in range(frames)] for r in range(3)]
    colours = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    future = ["1", "0", "1"]
    lines = [header]
    for r in range(3):
        pwr, rgb = [], []
        for k in range(frames):
            s = 100 * r + k
            path = root / f"unit1/mmWave_data/mmWave_power_{s}.txt"
            path.write_text("\n".join(f"{v:.6f}" for v in power_vector(best[r][k])) + "\n")
            colour = colours[r] if k == frames - 1 else (255, 255, 255)
            np.save(root / f"unit1/camera_data/image_{s}.npy",
                    np.broadcast_to(np.array(colour, dtype=np.uint8), (8, 8, 3)).copy())
            pwr.append(f"./unit1/mmWave_data/mmWave_power_{s}.txt")
            rgb.append(f"./unit1/camera_data/image_{s}.npy")
        lines.append([str(r + 1), *pwr, *rgb, future[r], "1"])
    csv_path = root / "future-1" / "scenario17_series.csv"
    csv_path.write_text("\n".join(",".join(x) for x in lines) + "\n")
    return SequenceTask(root, csv_path, frames, best, colours, future)


@pytest.fixture
def sequence_task(tmp_path: Path) -> SequenceTask:
    return write_sequence_task(tmp_path / "scenario17")


# --------------------------------------------------------------------------- power sequences (channel traces)


@dataclass
class PowerSequences:
    """A scenario folder whose CSV holds power sequences (what the fixture wrote)."""

    root: Path
    csv: Path
    peaks: list[list[float]]                 # sequence -> the best-beam power of each of its rows (linear)
    labels: list[list[int]] | None           # sequence -> the blockage label of each row (None: no column)
    files: list[Path] = field(default_factory=list)  # the power file of each CSV row, in CSV order


def write_power_sequences(root: Path, scales: list[list[float]], labels: list[list[int]] | None = None,
                          seq_ids: list[int] | None = None) -> PowerSequences:
    """Scenario 31's layout with only power files: the CSV (``index, unit1_pwr_60ghz, seq_index,
    time_stamp[UTC]`` and ``unit1_blockage`` with ``labels``) has one row per sample; sequence ``s`` (id
    ``seq_ids[s]``, default ``s + 1``) has ``len(scales[s])`` rows whose power vectors are
    ``scale × power_vector(7 + s)``, so their best-beam power is ``0.7 × scale``. Rows of the sequences are
    written interleaved (row order within a sequence is kept)."""
    (root / "unit1/mmWave_data").mkdir(parents=True, exist_ok=True)
    ids = seq_ids or [s + 1 for s in range(len(scales))]
    header = ["index", "unit1_pwr_60ghz", *(["unit1_blockage"] if labels is not None else []), "seq_index",
              "time_stamp[UTC]"]
    order = sorted(((i, s) for s in range(len(scales)) for i in range(len(scales[s]))), key=lambda p: (p[0], -p[1]))
    lines, files = [header], []
    for n, (i, s) in enumerate(order, start=1):
        path = root / f"unit1/mmWave_data/mmWave_power_{n}.txt"
        path.write_text("\n".join(repr(float(v)) for v in scales[s][i] * power_vector(7 + s)) + "\n")
        files.append(path)
        label = [str(labels[s][i])] if labels is not None else []
        lines.append([str(n), f"./unit1/mmWave_data/mmWave_power_{n}.txt", *label, str(ids[s]),
                      f"11-48-{10 + i:02d}-000000"])
    csv_path = root / "scenario31.csv"
    csv_path.write_text("\n".join(",".join(x) for x in lines) + "\n")
    peaks = [[0.7 * v for v in seq] for seq in scales]
    return PowerSequences(root, csv_path, peaks, labels, files)
