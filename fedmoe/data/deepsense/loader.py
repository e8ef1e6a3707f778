""":func:`load_deepsense_scenario`: one DeepSense CSV (and the files it names) as :class:`ISACSamples`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from fedmoe.config import MODALITIES, SensorConfig
from fedmoe.data.deepsense.cells import CellReader, MissingTally, Progress
from fedmoe.data.deepsense.errors import DeepSenseFormatError, FileProblem
from fedmoe.data.deepsense.labels import beam_labels
from fedmoe.data.deepsense.modalities import GPS_BITS, READERS, ModalityReader, ReadOptions
from fedmoe.data.deepsense.positions import read_positions, sequence_links
from fedmoe.data.deepsense.table import COLUMN_CANDIDATES, find_csv, read_csv, resolve_columns, scenario_root, suggest
from fedmoe.data.multipath import relative_power_db
from fedmoe.data.samples import ISACSamples

MISSING_WARN_FRACTION = 0.05
"""``missing_files="absent"``: warn when more than this fraction of the referenced files is missing."""

_INPUT_ROLES = ("ue_loc", "camera", "lidar", "radar")


def load_deepsense_scenario(
    root: str | Path,
    csv_name: str | None = None,
    modalities: Sequence[str] = MODALITIES,
    num_beams: int = 64,
    *,
    sensors: SensorConfig | None = None,
    columns: Mapping[str, str] | None = None,
    beam_label_base: int | None = None,
    label_mismatch: Literal["warn", "raise", "ignore"] = "warn",
    rf_scale: Literal["linear", "db"] = "linear",
    lidar_fov_deg: float = 360.0,
    origin: tuple[float, float] | None = None,
    is_uav: bool | None = None,
    next_step: int = 1,
    missing_files: Literal["raise", "absent"] = "raise",
    missing_warn_fraction: float = MISSING_WARN_FRACTION,
    progress: Progress | None = None,
) -> ISACSamples:
    """Load a DeepSense 6G scenario CSV as :class:`ISACSamples` (formats in ``docs/data-deepsense.md``).

    Parameters
    ----------
    root
        The scenario folder (holding the CSV and the ``unit1``/``unit2`` folders), or the
        CSV file itself. Paths in the CSV are relative to the scenario root: ``root`` when
        it is a folder (the CSV may sit in a subfolder such as ``future-1/``), else the
        nearest folder at or up to two levels above the CSV holding ``unit1``/``unit2``.
    csv_name
        The CSV inside ``root`` (may include a subfolder); default: the only
        ``scenarioN.csv``/``scenarioN_dev.csv``, else the only ``*.csv``.
    modalities
        Modalities to load as inputs (subset of :data:`~fedmoe.config.MODALITIES`). The
        power files and GPS files are read for the labels whatever this says.
    num_beams
        Codebook size: the number of values in each power file.
    sensors
        Output sizes (``camera_size``, ``lidar_rays``, ``lidar_max_range_m``,
        ``radar_range_bins``, ``radar_angle_bins``); default :class:`SensorConfig`.
    columns
        Role -> column name overrides (roles: the keys of
        :data:`~fedmoe.data.deepsense.table.COLUMN_CANDIDATES`), e.g. ``{"beam": "beam_index_3"}``.
    beam_label_base
        0 or 1: the base of the beam label column; None detects it (the base under which
        the labels agree best with the power argmax; 1, DeepSense's convention, on a tie).
    label_mismatch
        What to do when the label column disagrees with the power argmax (the argmax is
        used either way): warn once with a count, raise, or ignore.
    rf_scale
        ``"linear"``: the powers as published (NaN beams -> 0); ``"db"``: ``10 log10``
        (powers <= 0 and NaN beams -> :data:`~fedmoe.data.deepsense.modalities.RF_DB_FLOOR`).
    lidar_fov_deg
        Azimuth span of the lidar range scan, centred on the sensor's +x axis.
    origin
        (lat, lon) reference of the local frame for every row; default: the row's
        ``unit1_loc``, else the scenario's ``unit1/GPS_data/gps_location.txt``, else the
        first user fix (with a warning: each split CSV would get its own origin).
    is_uav
        Value of ``conditions["is_uav"]``; None: True iff the CSV has a ``unit2_height``
        column (the drone scenario).
    next_step
        ``next_position`` is the position this many rows later in the same sequence.
    missing_files
        ``"raise"``: a referenced file that does not exist is a DeepSenseFormatError.
        ``"absent"``: the sample lacks that modality instead; rows left with no beam
        label are dropped (with a warning). Malformed files always raise.
    missing_warn_fraction
        ``"absent"``: warn (per column) when more than this fraction of the referenced
        files is missing; when none of them exists the folder is refused.
    progress
        Told about every cell read (e.g. a ``tqdm`` bar; its ``total`` grows column by column).

    Returns
    -------
    ISACSamples
        ``inputs`` for the requested modalities the CSV has a column for; ``labels``
        ``beam`` (int64, 0-based; -1 in an unlabelled CSV), ``pathloss_db`` (NaN),
        ``next_position`` (N, 3), ``beam_power_db`` with powers, ``blockage_future`` with a
        future-window label column; ``conditions`` ``position`` (N, 3; east, north, up in m;
        NaN without a fix), ``blocked`` and ``blocked_known``, ``is_uav``, ``index`` and
        ``seq_index`` (int64, -1 when absent), ``labelled`` (False in an unlabelled CSV),
        ``rf_sequence`` (N, T, B) with a numbered series of power columns.

    Raises
    ------
    FileNotFoundError
        ``root`` or the CSV does not exist.
    DeepSenseFormatError
        A missing required column, or a missing or malformed file referenced by the CSV
        (the message names the file, the CSV data row and its ``index``), or a folder
        none of whose referenced files exists.
    """
    sensors = sensors or SensorConfig()
    mods = tuple(modalities)
    bad = [m for m in mods if m not in MODALITIES]
    if bad:
        raise ValueError(f"unknown modalities {bad}; known: {list(MODALITIES)}")
    if num_beams < 1 or next_step < 1:
        raise ValueError(f"num_beams and next_step must be >= 1, got {num_beams} and {next_step}")
    if not 0.0 < lidar_fov_deg <= 360.0:
        raise ValueError(f"lidar_fov_deg must be in (0, 360], got {lidar_fov_deg}")
    if beam_label_base not in (None, 0, 1):
        raise ValueError(f"beam_label_base must be 0, 1 or None, got {beam_label_base!r}")
    if not 0.0 <= missing_warn_fraction <= 1.0:
        raise ValueError(f"missing_warn_fraction must be in [0, 1], got {missing_warn_fraction}")
    for name, value, allowed in (("label_mismatch", label_mismatch, ("warn", "raise", "ignore")),
                                 ("rf_scale", rf_scale, ("linear", "db")),
                                 ("missing_files", missing_files, ("raise", "absent"))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    csv_path = find_csv(Path(root), csv_name)
    table = read_csv(csv_path)
    cols = resolve_columns(table, columns)
    labelled = _check_labels(table, cols.role)
    base = scenario_root(Path(root), csv_path)
    n = len(table.rows)
    index_cells = table.column(cols["index"]) if cols["index"] else [""] * n
    reader = CellReader(table, base, index_cells, missing_files, progress)
    opts = ReadOptions(sensors, num_beams, rf_scale, lidar_fov_deg)

    rf = READERS.get("rf")
    powers = reader.files(cols["rf"], lambda p: rf.read(p, opts))
    sequence = None
    if len(cols.series.get("rf", [])) > 1:
        sequence = [reader.files(c, lambda p: rf.read(p, opts)) for c in cols.series["rf"][:-1]] + [powers]
    pos = read_positions(reader, cols, base, origin)
    inputs: dict[str, np.ndarray] = {}
    bits: dict[str, int] = {}
    present = np.zeros((n, len(MODALITIES)), dtype=bool)
    for m in mods:
        if m == "gps" or m not in READERS or cols[READERS.get(m).role] is None:
            continue
        spec = READERS.get(m)
        if m == "rf":
            items = [None if p is None else spec.convert(p, opts) for p in powers]
        else:
            items = reader.files(cols[spec.role], lambda p, s=spec: _read_converted(p, s, opts))
        inputs[m], bits[m] = _stack(items, spec.shape(opts), spec.dtype), spec.bits(opts)
        present[:, MODALITIES.index(m)] = [a is not None for a in items]
    blockage = reader.scalars(cols["blockage"])
    future = reader.scalars(cols["future_blockage"])
    _check_missing(reader.tally, csv_path, base, missing_warn_fraction)

    beam = beam_labels(reader, powers, cols["beam"], num_beams, beam_label_base, label_mismatch)
    keep = (beam >= 0) | (not labelled)
    if not keep.all():
        first = int(np.flatnonzero(~keep)[0])
        if missing_files != "absent":
            raise DeepSenseFormatError(f"{reader.where(first)}: no beam label (no power file and no label)")
        warnings.warn(f"{csv_path}: dropped {int((~keep).sum())} rows with no beam label "
                      f"(first: data row {first + 1})", stacklevel=2)

    seq = np.array([-1 if v is None else v for v in reader.integers(cols["seq"])], dtype=np.int64)
    index = np.array([-1 if v is None else v for v in reader.integers(cols["index"])], dtype=np.int64)
    prev_row, next_position = sequence_links(seq, pos.has_fix, pos.position, next_step)
    if "gps" in mods and cols["ue_loc"] is not None:
        gps = np.zeros((n, 6), dtype=np.float32)
        gps[pos.has_fix] = np.concatenate([pos.position, pos.position[prev_row]], axis=1)[pos.has_fix]
        inputs["gps"], bits["gps"] = gps, GPS_BITS
        present[:, MODALITIES.index("gps")] = pos.has_fix

    labels = {
        "beam": beam.astype(np.int64),
        "pathloss_db": np.full(n, np.nan, dtype=np.float32),
        "next_position": next_position.astype(np.float32),
    }
    if cols["rf"] is not None:
        labels["beam_power_db"] = _relative_powers(powers, num_beams)
    if cols["future_blockage"] is not None:
        labels["blockage_future"] = np.array([np.nan if b is None else float(b != 0) for b in future],
                                             dtype=np.float32)
    uav = (cols["height"] is not None) if is_uav is None else bool(is_uav)
    conditions = {
        "blocked": np.array([b is not None and b != 0 for b in blockage], dtype=bool),
        "blocked_known": np.array([b is not None for b in blockage], dtype=bool),
        "is_uav": np.full(n, uav, dtype=bool),
        "position": pos.position.astype(np.float32),
        "index": index,
        "seq_index": seq,
        "labelled": np.full(n, labelled, dtype=bool),
    }
    if sequence is not None:
        conditions["rf_sequence"] = np.stack(
            [_stack(frame, (num_beams,), np.float32, fill=np.nan) for frame in sequence], axis=1)
    samples = ISACSamples(inputs, present, labels, conditions, bits)
    return samples if keep.all() else samples.subset(np.flatnonzero(keep))


def _check_labels(table, role: Mapping[str, str | None]) -> bool:
    """True when the CSV has beam powers or a beam label. Without either it is an unlabelled CSV
    (inference only; a warning says so) if it has an input column and nothing that looks like a
    power or label column under another name; otherwise a :class:`DeepSenseFormatError`."""
    if role["rf"] is not None or role["beam"] is not None:
        return True
    taken = {c for c in role.values() if c is not None}
    hint = suggest(table, "rf", taken) + suggest(table, "beam", taken)
    if hint or not any(role[r] is not None for r in _INPUT_ROLES):
        raise DeepSenseFormatError(
            f"{table.path}: missing required column: need the beam powers "
            f"({' or '.join(COLUMN_CANDIDATES['rf'])}) or a beam label ({' or '.join(COLUMN_CANDIDATES['beam'])}), "
            f"or, for an unlabelled CSV, an input column; columns are {table.header}{hint}")
    warnings.warn(f"{table.path}: UNLABELLED: no beam powers and no beam label column; loaded for inference only "
                  "(labels['beam'] is -1, conditions['labelled'] is False)", stacklevel=3)
    return False


def _check_missing(tally: MissingTally, csv_path: Path, base: Path, fraction: float) -> None:
    """Refuse a CSV none of whose referenced files exists; warn per column above ``fraction`` missing."""
    referenced, missing = tally.total()
    if referenced and missing == referenced:
        column, rows = next(iter(tally.missing.items()))
        raise DeepSenseFormatError(
            f"{csv_path}: none of the {referenced} files it references exists under {base} (first: data row "
            f"{rows[0][0] + 1}, column {column!r}: {rows[0][1]}); is this the scenario folder, with its unit "
            "folders unpacked?")
    heavy = {c: len(v) for c, v in tally.missing.items() if len(v) > fraction * tally.referenced[c]}
    if heavy:
        warnings.warn(f"{csv_path}: missing files (loaded as absent): " + ", ".join(
            f"{c} {k} of {tally.referenced[c]} (first: data row {tally.missing[c][0][0] + 1}, {tally.missing[c][0][1]})"
            for c, k in heavy.items()), stacklevel=3)


def _read_converted(path: Path, spec: ModalityReader, opts: ReadOptions) -> np.ndarray:
    """``spec.convert(spec.read(path))``; a ValueError of the conversion is a problem of the file."""
    data = spec.read(path, opts)
    try:
        return spec.convert(data, opts)
    except ValueError as err:
        raise FileProblem(str(err)) from None


def _relative_powers(powers: list[np.ndarray | None], num_beams: int) -> np.ndarray:
    """Each beam's power relative to the row's best (dB); NaN where the row has no power vector."""
    rel = np.full((len(powers), num_beams), np.nan, dtype=np.float32)
    rows = [i for i, p in enumerate(powers) if p is not None]
    if rows:
        rel[rows] = relative_power_db(np.nan_to_num(np.stack([powers[i] for i in rows]), nan=0.0))
    return rel


def _stack(items: Sequence[np.ndarray | None], shape: tuple[int, ...], dtype: object, fill: float = 0) -> np.ndarray:
    out = np.full((len(items), *shape), fill, dtype=dtype)
    for i, a in enumerate(items):
        if a is not None:
            out[i] = a
    return out
