r"""DeepSense power sequences as a channel trace: measured 60 GHz received power to gain, SNR and rate.

Each DeepSense sample holds the received power of every beam of unit 1's codebook, linear and
**uncalibrated** (``docs/data-deepsense.md``): relative changes are measured, the absolute level is
not. The channel of a sample is that of its best beam (ideal beam tracking)::

    x = 10 log10 max_b p_b                      (dB, uncalibrated)

**Calibration** (one offset for all replayed sequences, so the differences between them, measured
with one receiver, are kept): the median ``x~`` of the replayed samples maps to the per-RB SNR
``median_snr_db`` of a device transmitting ``reference_tx_power_dbm``::

    g = x - x~ + SNR_med + N_rb - P_ref,        N_rb = N0 + NF + 10 log10 B_rb   (dBm)

so device ``k`` (power ``P_k``) has the per-RB SNR ``P_k + g - N_rb = SNR_med + (x - x~) + (P_k - P_ref)``
and, on ``n`` resource blocks, the rate ``R_k(n) = n B_rb log2(1 + SNR_k / n)`` ([P001] eq. 3–4,
:func:`fedmoe.wireless.ofdma.uplink_rate`).

**Blockage**: a sample's blockage label (``unit1_blockage``/``blockage_label``) where the CSV has one,
else ``x < median of its sequence - blockage_drop_db``.

**Sequences and time**: in a scenario CSV the rows of one ``seq_index`` (ascending ids, rows in CSV
order; without that column, all rows) are one sequence; in a task CSV (numbered power columns
``unit1_pwr_60ghz_1..T``) each row's frames are one sequence (a row's label is its last frame's).
Sample ``i`` of a sequence is at ``i · sample_interval_s`` (DeepSense records 10 samples/s;
time stamps are not parsed). Device ``k`` replays the ``k``-th sequence; further sequences are
not used; fewer sequences than devices is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedmoe.data.deepsense.errors import DeepSenseFormatError
from fedmoe.data.deepsense.loader import load_deepsense_scenario
from fedmoe.data.deepsense.table import find_csv, read_csv, resolve_columns
from fedmoe.wireless.trace import ChannelTrace


def deepsense_trace(root: str | Path, num_devices: int, noise_dbm_per_rb: float, *, csv_name: str | None = None,
                    sample_interval_s: float = 0.1, median_snr_db: float = 20.0,
                    reference_tx_power_dbm: float = 23.0, blockage_drop_db: float = 10.0, num_beams: int = 64,
                    **settings: Any) -> ChannelTrace:
    """The channel trace of ``num_devices`` devices from a DeepSense scenario (module docstring).

    Parameters
    ----------
    root, csv_name
        The scenario folder (or CSV) and the CSV in it, as :func:`~fedmoe.data.deepsense.load_deepsense_scenario`.
    num_devices
        Devices to give a sequence each.
    noise_dbm_per_rb
        ``N_rb``: noise power in one resource block, dBm (``N0 + NF + 10 log10 B_rb``).
    sample_interval_s, median_snr_db, reference_tx_power_dbm, blockage_drop_db, num_beams
        Time step, calibration, blockage threshold and codebook size (module docstring).
    settings
        Reading rules of :class:`~fedmoe.wireless.trace.ChannelTrace` (``between``, ``after_end``, ...).

    Raises
    ------
    DeepSenseFormatError
        No power column, a sample without a positive power (naming CSV, row, column and file), a
        row outside every sequence, or fewer sequences than devices.
    """
    csv_path = find_csv(Path(root), csv_name)
    table = read_csv(csv_path)
    cols = resolve_columns(table, None)
    if cols["rf"] is None:
        raise DeepSenseFormatError(f"{csv_path}: no beam power column (unit1_pwr_60ghz, unit1_pwr or numbered "
                                   f"unit1_pwr_60ghz_1..T) to make a channel trace from; columns are {table.header}")
    samples = load_deepsense_scenario(root, csv_name, modalities=("rf",), num_beams=num_beams,
                                      label_mismatch="ignore")
    cond = samples.conditions
    frames = cond["rf_sequence"] if "rf_sequence" in cond else samples.inputs["rf"][:, None, :]
    power_columns = cols.series.get("rf") or [cols["rf"]]
    best = _best_power_db(np.asarray(frames, dtype=np.float64), table, power_columns, csv_path)  # (N, T)
    label = np.where(cond["blocked_known"], cond["blocked"].astype(float), np.nan)
    if "rf_sequence" in cond:  # a task CSV: each row is a sequence; its label is its last frame's
        sequences = [(best[i], np.r_[np.full(best.shape[1] - 1, np.nan), label[i]]) for i in range(len(best))]
    else:
        sequences = [(best[rows, 0], label[rows]) for rows in _sequence_rows(cond["seq_index"], csv_path)]
    if len(sequences) < num_devices:
        raise DeepSenseFormatError(f"{csv_path}: {len(sequences)} power sequences for {num_devices} devices (one "
                                   "each); use a CSV with more sequences or fewer devices")
    used = sequences[:num_devices]
    median_all = float(np.median(np.concatenate([x for x, _ in used])))
    offset = median_snr_db + noise_dbm_per_rb - reference_tx_power_dbm - median_all
    times, gains, blocked = [], [], []
    for x, lab in used:
        times.append(np.arange(len(x)) * float(sample_interval_s))
        gains.append(x + offset)
        dropped = x < np.median(x) - blockage_drop_db
        blocked.append(np.where(np.isnan(lab), dropped, lab == 1))
    settings.setdefault("source", str(csv_path))
    return ChannelTrace(tuple(times), tuple(gains), tuple(blocked), **settings)


def _best_power_db(frames: np.ndarray, table: Any, columns: list[str], csv_path: Path) -> np.ndarray:
    """``10 log10 max_b p_b`` of every row and frame; a frame without a positive power is an error."""
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.max(np.where(np.isfinite(frames), frames, -np.inf), axis=2)
        x = 10.0 * np.log10(np.where(best > 0, best, np.nan))
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        i, f = (int(v) for v in bad[0])
        column = columns[f]
        index = table.column("index")[i] if "index" in [h.lower() for h in table.header] else "n/a"
        raise DeepSenseFormatError(f"{csv_path}: data row {i + 1} (index {index}), column {column!r}, file "
                                   f"{table.column(column)[i]}: no positive beam power (best {best[i, f]:g}); a "
                                   "channel trace needs the received power of every sample")
    return x


def _sequence_rows(seq: np.ndarray, csv_path: Path) -> list[np.ndarray]:
    """The rows of each ``seq_index`` (ascending), or one sequence of all rows without that column."""
    if (seq < 0).all():
        return [np.arange(len(seq))]
    if (seq < 0).any():
        first = int(np.flatnonzero(seq < 0)[0])
        raise DeepSenseFormatError(f"{csv_path}: data row {first + 1}, column 'seq_index': empty; every row of a "
                                   "power sequence needs its sequence id")
    return [np.flatnonzero(seq == s) for s in np.unique(seq)]
