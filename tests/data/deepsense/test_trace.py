"""DeepSense power sequences as channel traces: calibration, sequences, time, blockage, errors; gains compared
with values computed by hand from the powers the fixtures wrote."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmoe.data.deepsense import DeepSenseFormatError
from fedmoe.data.deepsense.trace import deepsense_trace
from tests.data.deepsense.conftest import write_power_sequences

N_RB = -112.0  # noise per resource block, dBm (any value: it only shifts the gains)


def _db(p: float) -> float:
    return 10 * math.log10(p)


def test_gains_are_the_best_beam_power_calibrated_so_the_median_has_the_chosen_snr(tmp_path):
    scen = write_power_sequences(tmp_path / "scenario31", [[1.0, 1.0, 0.01, 2.0], [3.0, 3.0, 3.0]])
    trace = deepsense_trace(scen.root, 2, N_RB, median_snr_db=15.0, reference_tx_power_dbm=20.0,
                            sample_interval_s=0.25)
    x = [[_db(p) for p in seq] for seq in scen.peaks]
    median = float(np.median(x[0] + x[1]))  # over every replayed sample: 7 values, the 4th smallest is 0.7 × 2
    assert median == pytest.approx(_db(1.4))
    for k in range(2):
        expected = [v - median + 15.0 + N_RB - 20.0 for v in x[k]]
        np.testing.assert_allclose(trace.gain_db[k], expected, atol=1e-5)
        np.testing.assert_allclose(trace.times_s[k], 0.25 * np.arange(len(x[k])))
    # the per-RB SNR of a device at the reference power: P + g - N_rb; the median sample has the chosen SNR
    snr = 20.0 + trace.gain_db[0][3] - N_RB
    assert snr == pytest.approx(15.0, abs=1e-5)
    # blockage without a label column: 20 dB below its sequence's median (1.0) is blocked, the rest is not
    assert trace.blocked[0].tolist() == [False, False, True, False]
    assert trace.blocked[1].tolist() == [False, False, False]


def test_sequences_go_to_devices_in_increasing_seq_index_and_extra_ones_are_not_used(tmp_path):
    scen = write_power_sequences(tmp_path / "s", [[1.0], [2.0, 2.0], [4.0]], seq_ids=[9, 3, 5])
    trace = deepsense_trace(scen.root, 2, N_RB)
    # seq 3 (scales 2, 2) is device 0, seq 5 (scale 4) device 1; seq 9 is left out of the calibration too
    assert [len(t) for t in trace.times_s] == [2, 1]
    assert trace.gain_db[1][0] - trace.gain_db[0][0] == pytest.approx(_db(2.0), abs=1e-5)
    assert np.median(np.concatenate(trace.gain_db)) == pytest.approx(20.0 + N_RB - 23.0, abs=1e-5)


def test_blockage_labels_are_used_where_the_csv_has_them(tmp_path):
    scen = write_power_sequences(tmp_path / "s", [[1.0, 1.0, 0.001]], labels=[[1, 0, 0]])
    trace = deepsense_trace(scen.root, 1, N_RB)
    assert trace.blocked[0].tolist() == [True, False, False]  # the label, not the 30 dB drop


def test_a_task_csv_gives_one_sequence_per_row_and_ignores_the_future_label(sequence_task):
    trace = deepsense_trace(sequence_task.root, 3, N_RB, csv_name="future-1/scenario17_series.csv",
                            median_snr_db=10.0, reference_tx_power_dbm=0.0)
    for k in range(3):  # every frame's best power is 0.7: all gains are the median's
        np.testing.assert_allclose(trace.times_s[k], [0.0, 0.1, 0.2], atol=1e-12)
        np.testing.assert_allclose(trace.gain_db[k], np.full(3, 10.0 + N_RB), atol=1e-5)
        assert not trace.blocked[k].any()  # blockage_final (1 in rows 1 and 3) is a future label


def test_the_drop_threshold_is_the_configured_one(tmp_path):
    scen = write_power_sequences(tmp_path / "s", [[1.0, 1.0, 0.2, 1.0]])  # 7 dB down
    assert deepsense_trace(scen.root, 1, N_RB, blockage_drop_db=6.0).blocked[0].tolist() == [0, 0, 1, 0]
    assert not deepsense_trace(scen.root, 1, N_RB, blockage_drop_db=8.0).blocked[0].any()


def test_fewer_sequences_than_devices_is_refused(tmp_path):
    scen = write_power_sequences(tmp_path / "s", [[1.0], [1.0]])
    with pytest.raises(DeepSenseFormatError, match=r"scenario31\.csv: 2 power sequences for 3 devices"):
        deepsense_trace(scen.root, 3, N_RB)


def test_a_sample_without_power_names_csv_row_column_and_file(tmp_path):
    scen = write_power_sequences(tmp_path / "s", [[1.0, 1.0], [1.0]])
    scen.files[2].write_text("\n".join(["0"] * 64) + "\n")
    with pytest.raises(DeepSenseFormatError) as err:
        deepsense_trace(scen.root, 2, N_RB)
    msg = str(err.value)
    assert "\n" not in msg
    assert "scenario31.csv: data row 3 (index 3), column 'unit1_pwr_60ghz', file " \
           "./unit1/mmWave_data/mmWave_power_3.txt: no positive beam power" in msg


def test_a_row_outside_every_sequence_is_refused(tmp_path):
    scen = write_power_sequences(tmp_path / "s", [[1.0, 1.0]])
    rows = [line.split(",") for line in scen.csv.read_text().splitlines()]
    rows[2][2] = ""
    scen.csv.write_text("\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(DeepSenseFormatError, match=r"scenario31\.csv: data row 2, column 'seq_index': empty"):
        deepsense_trace(scen.root, 1, N_RB)


def test_a_csv_without_powers_is_refused(challenge):
    with pytest.raises(DeepSenseFormatError, match=r"scenario5_unlabelled\.csv: no beam power column"):
        deepsense_trace(challenge.unlabelled, 1, N_RB)


def test_the_drop_is_measured_from_the_devices_own_sequence(tmp_path):
    """A weak sequence is not blocked for being 30 dB below a strong one; its own 30 dB dip is."""
    scen = write_power_sequences(tmp_path / "s", [[1.0, 1.0, 0.001], [1000.0] * 4])
    trace = deepsense_trace(scen.root, 2, N_RB)  # the calibration's median is the strong one's power
    assert trace.blocked[0].tolist() == [False, False, True]
    assert not trace.blocked[1].any()
