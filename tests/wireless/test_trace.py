"""Channel traces: reading a device's samples between and after them (hand values), the profiles they give,
and the trace file's format with its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.plugins.costs import device_profiles
from fedmoe.wireless.trace import ChannelTrace, traced_profiles
from fedmoe.wireless.trace_file import TraceFormatError, read_trace_csv, write_trace_csv

# device 0: samples at 0, 1, 3 s (last interval 2 s: a loop lasts 5 s); device 1: one sample
ROWS = [(0, 0.0, -100.0, 0), (1, 2.0, -80.0, 1), (0, 1.0, -110.0, 1), (0, 3.0, -90.0, 0)]


def _trace(**settings) -> ChannelTrace:
    return ChannelTrace.from_samples([0, 0, 0, 1], [0.0, 1.0, 3.0, 2.0], [-100.0, -110.0, -90.0, -80.0],
                                     [False, True, False, True], **settings)


@pytest.mark.parametrize("settings,clock,gain0,blocked0", [
    ({}, 0.0, -100.0, False),
    ({}, 0.5, -100.0, False),             # sample-and-hold
    ({}, 1.0, -110.0, True),
    ({}, 2.99, -110.0, True),
    ({}, 3.0, -90.0, False),
    ({}, 50.0, -90.0, False),             # held after the end
    ({"between": "linear"}, 0.5, -105.0, False),
    ({"between": "linear"}, 2.0, -100.0, True),  # halfway from -110 to -90; the earlier sample's flag
    ({"between": "linear"}, 50.0, -90.0, False),
    ({"after_end": "loop"}, 4.0, -90.0, False),  # the last sample is held for its predecessor's 2 s
    ({"after_end": "loop"}, 5.5, -100.0, False),  # 5.5 s is 0.5 s into the second pass
    ({"after_end": "loop"}, 11.2, -110.0, True),  # 1.2 s into the third pass
    ({"after_end": "loop", "between": "linear"}, 4.0, -95.0, False),  # heading back to the first sample
    ({"after_end": "loop", "between": "linear"}, 6.0, -110.0, True),
    ({"start_s": 1.0}, 0.0, -110.0, True),  # the clock starts 1 s into the trace
    ({"start_s": 1.0, "between": "linear"}, 1.0, -100.0, True),
])
def test_a_device_is_read_as_its_settings_say(settings, clock, gain0, blocked0):
    gain, blocked = _trace(**settings).at(clock)
    assert gain[0] == pytest.approx(gain0, abs=1e-12)
    assert blocked[0] == blocked0
    assert (gain[1], blocked[1]) == (-80.0, True)  # one sample: constant, before and after it


def test_before_its_first_sample_a_device_has_its_first_sample():
    trace = ChannelTrace.from_samples([0, 0], [2.0, 4.0], [-70.0, -75.0], [True, False], between="linear")
    assert trace.at(0.0)[0][0] == -70.0 and trace.at(0.0)[1][0]


def test_the_profiles_get_the_traces_gain_and_keep_the_rest():
    base = device_profiles(gain_db=[-95.0, -99.0], tx_power_dbm=20.0, compute_flops=1e9)
    prof, blocked = traced_profiles(base, _trace(), 1.5)
    np.testing.assert_allclose(prof.gain, [1e-11, 1e-8], rtol=1e-12)
    np.testing.assert_allclose(prof.gain, 10 ** (-(prof.pathloss_db + prof.shadowing_db) / 10) * prof.fading,
                               rtol=1e-12)
    np.testing.assert_array_equal(prof.tx_power_w, base.tx_power_w)
    assert blocked.tolist() == [True, True]
    with pytest.raises(ValueError, match="describes 2 devices, there are 3"):
        traced_profiles(device_profiles(gain_db=[-90.0] * 3, tx_power_dbm=20.0, compute_flops=1e9), _trace(), 0.0)


def test_a_trace_file_reads_back_what_was_written(trace_file, tmp_path):
    trace = read_trace_csv(trace_file(ROWS), 2)
    np.testing.assert_array_equal(trace.times_s[0], [0.0, 1.0, 3.0])
    np.testing.assert_array_equal(trace.gain_db[0], [-100.0, -110.0, -90.0])
    np.testing.assert_array_equal(trace.blocked[0], [False, True, False])
    np.testing.assert_array_equal(trace.gain_db[1], [-80.0])
    again = read_trace_csv(write_trace_csv(trace, tmp_path / "again.csv"), 2)
    for field in ("times_s", "gain_db", "blocked"):
        for a, b in zip(getattr(trace, field), getattr(again, field)):
            np.testing.assert_array_equal(a, b)


def test_the_blocked_column_is_optional_and_settings_pass_through(trace_file):
    path = trace_file([(-90, 0, 0), (-91, 1, 0)], header="gain_db,time_s,device")
    trace = read_trace_csv(path, 1, between="linear", start_s=0.5)
    assert not trace.blocked[0].any()
    assert trace.at(0.0)[0][0] == pytest.approx(-90.5)


@pytest.mark.parametrize("rows,header,needle", [
    ([(0, 0, -90)], "device,time_s", "missing column 'gain_db'; the header must be device,time_s,gain_db"),
    ([(0, 0, -90, 1)], "device,time_s,gain_db,snr_db", "unknown column 'snr_db'"),
    ([(0, 0, "nan", 0)], None, "row 1 (line 2), field 'gain_db': 'nan' is not finite"),
    ([(0, 0, -90, 0), (0, "inf", -90, 0)], None, "row 2 (line 3), field 'time_s': 'inf' is not finite"),
    ([(0, 0, -90, 0), (0, 0.5, "x", 0)], None, "row 2 (line 3), field 'gain_db': 'x' is not a number"),
    ([(0, -1, -90, 0)], None, "row 1 (line 2), field 'time_s': -1 is negative"),
    ([(0, 1, -90, 0), (1, 0, -90, 0), (0, 0.5, -90, 0)], None,
     "row 3 (line 4), field 'time_s': 0.5 is not after device 0's previous time 1 (row 1)"),
    ([(0, 1, -90, 0), (0, 1, -90, 0)], None, "row 2 (line 3), field 'time_s': 1 is not after"),
    ([(0, 0, -90, 0), (2, 0, -90, 0)], None, "row 2 (line 3), field 'device': unknown device id 2 (the scenario "
                                             "has 2 devices, ids 0..1)"),
    ([(-1, 0, -90, 0)], None, "row 1 (line 2), field 'device': unknown device id -1"),
    ([("a", 0, -90, 0)], None, "row 1 (line 2), field 'device': 'a' is not an integer device id"),
    ([(0, 0, -90, "maybe")], None, "row 1 (line 2), field 'blocked': 'maybe' is not 0, 1, true or false"),
    ([(0, 0, -90)], None, "row 1 (line 2): 3 fields, the header has 4"),
    ([(0, 0, -90, 0)], None, "no rows for devices [1] (the scenario has 2 devices"),
    ([], None, "no data rows"),
])
def test_bad_trace_files_get_one_line_errors_naming_file_row_and_field(trace_file, rows, header, needle):
    path = trace_file(rows, **({"header": header} if header else {}))
    with pytest.raises(TraceFormatError) as err:
        read_trace_csv(path, 2)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert needle in msg


def test_a_missing_trace_file_is_named(tmp_path):
    with pytest.raises(TraceFormatError, match=r"nope\.csv: no such trace file"):
        read_trace_csv(tmp_path / "nope.csv", 1)
