"""DeepSense 6G loader: shapes, beam labels, GPS conversion, sensor conversions, errors."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from scipy.io import savemat

from fedmoe.config import MODALITIES, SensorConfig
from fedmoe.data import deepsense
from fedmoe.data.deepsense import (
    DeepSenseFormatError,
    box_resize,
    lidar_range_scan,
    load_deepsense_scenario,
    local_metres,
    range_angle_map,
    read_point_cloud,
)
from tests.data.deepsense.conftest import BS_LAT, BS_LON, power_vector, radar_cube, write_ply

S = SensorConfig()  # default output sizes


def col(name: str) -> int:
    return MODALITIES.index(name)


# --------------------------------------------------------------------------- loading


def test_loads_every_modality_with_the_documented_shapes(scenario):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consistent labels: no warning
        data = load_deepsense_scenario(scenario.root)
    n = 4
    assert len(data) == n and data.present.all()
    shapes = {"camera": (n, 3, S.camera_size, S.camera_size), "lidar": (n, S.lidar_rays),
              "radar": (n, 1, S.radar_range_bins, S.radar_angle_bins), "gps": (n, 6), "rf": (n, 64)}
    assert {m: a.shape for m, a in data.inputs.items()} == shapes
    assert data.inputs["camera"].dtype == np.uint8
    assert all(data.inputs[m].dtype == np.float32 for m in ("lidar", "radar", "gps", "rf"))
    assert data.bits_per_sample == {"camera": 3 * 32 * 32 * 8, "lidar": 64 * 16, "radar": 16 * 32 * 16,
                                    "gps": 6 * 32, "rf": 64 * 16}
    assert data.conditions["index"].tolist() == scenario.index
    assert data.conditions["seq_index"].tolist() == scenario.seq
    assert np.isnan(data.labels["pathloss_db"]).all()
    assert not data.conditions["blocked"].any() and not data.conditions["blocked_known"].any()
    assert not data.conditions["is_uav"].any()
    np.testing.assert_allclose(data.inputs["rf"][2], power_vector(scenario.best[2]), atol=1e-6)


def test_csv_can_be_named_or_given_directly(scenario):
    a = load_deepsense_scenario(scenario.root, "scenario31_dev.csv", modalities=("rf",))
    b = load_deepsense_scenario(scenario.csv, modalities=("rf",))
    np.testing.assert_array_equal(a.labels["beam"], b.labels["beam"])


def test_camera_frames_are_decoded_and_box_resized(npy_scenario, scenario):
    exact = load_deepsense_scenario(npy_scenario.root, modalities=("camera",))
    for r, colour in enumerate(npy_scenario.colours):
        assert (exact.inputs["camera"][r] == np.array(colour, dtype=np.uint8)[:, None, None]).all()
    pytest.importorskip("PIL")
    jpeg = load_deepsense_scenario(scenario.root, modalities=("camera",))
    for r, colour in enumerate(scenario.colours):  # JPEG is lossy: a few levels off
        assert np.abs(jpeg.inputs["camera"][r].astype(int) - np.array(colour)[:, None, None]).max() <= 8


def test_without_pillow_a_jpeg_is_a_clear_error(scenario, monkeypatch):
    monkeypatch.setattr(deepsense.files, "_PILImage", None)
    with pytest.raises(DeepSenseFormatError, match=r"data row 1 \(index 5\).*image_5\.jpg.*Pillow"):
        load_deepsense_scenario(scenario.root, modalities=("camera",))


# --------------------------------------------------------------------------- beam labels


def test_beam_label_is_the_zero_based_argmax_of_the_powers(scenario):
    data = load_deepsense_scenario(scenario.root, modalities=("rf",))
    assert data.labels["beam"].dtype == np.int64
    assert data.labels["beam"].tolist() == scenario.best  # CSV holds best + 1 (1-based)
    np.testing.assert_array_equal(data.labels["beam"], np.argmax(data.inputs["rf"], axis=1))
    # Relative beam powers, recomputed here from the linear powers the loader read.
    linear = data.inputs["rf"].astype(np.float64)
    expected = np.maximum(10 * np.log10(np.maximum(linear, 1e-300) / linear.max(axis=1, keepdims=True)), -60.0)
    np.testing.assert_allclose(data.labels["beam_power_db"], expected, atol=1e-4)


def test_a_label_column_that_disagrees_warns_or_raises(scenario):
    def shift_label(rows):
        rows[3][7] = str(int(rows[3][7]) + 2)  # data row 3 (index 7)
        return rows

    scenario.rewrite_csv(shift_label)
    with pytest.warns(UserWarning, match=r"1 of 4 rows.*data row 3 \(index 7\).*label 33 vs argmax 31"):
        data = load_deepsense_scenario(scenario.root, modalities=("rf",))
    assert data.labels["beam"].tolist() == scenario.best  # the power argmax wins
    with pytest.raises(DeepSenseFormatError, match=r"data row 3 \(index 7\)"):
        load_deepsense_scenario(scenario.root, modalities=("rf",), label_mismatch="raise")


def test_nan_beams_use_the_nan_aware_argmax(scenario):
    # Published files can hold 'nan' entries; a label computed with a plain argmax then
    # points at the first NaN. The loader uses nanargmax and warns about the label.
    p = power_vector(scenario.best[0])
    p[3] = np.nan
    scenario.files["rf"][0].write_text("\n".join("nan" if np.isnan(v) else f"{v:.6f}" for v in p) + "\n")
    scenario.rewrite_csv(lambda rows: [*rows[:1], [*rows[1][:7], "4", *rows[1][8:]], *rows[2:]])
    with pytest.warns(UserWarning, match="not the argmax"):
        data = load_deepsense_scenario(scenario.root, modalities=("rf",))
    assert data.labels["beam"][0] == scenario.best[0]
    assert data.inputs["rf"][0, 3] == 0.0  # NaN beam -> 0 in the input
    db = load_deepsense_scenario(scenario.root, modalities=("rf",), rf_scale="db", label_mismatch="ignore")
    assert db.inputs["rf"][0, 3] == deepsense.RF_DB_FLOOR
    assert db.inputs["rf"][0, scenario.best[0]] == pytest.approx(10 * math.log10(0.7), abs=1e-4)


def test_zero_based_label_column_is_detected(scenario):
    scenario.rewrite_csv(lambda rows: [rows[0]] + [[*r[:7], str(int(r[7]) - 1), *r[8:]] for r in rows[1:]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_deepsense_scenario(scenario.root, modalities=("rf",))
    assert data.labels["beam"].tolist() == scenario.best


def test_labels_from_the_column_alone_when_there_are_no_power_files(scenario):
    drop = lambda rows: [[c for j, c in enumerate(r) if j != 2] for r in rows]  # noqa: E731
    scenario.rewrite_csv(drop)
    data = load_deepsense_scenario(scenario.root)
    assert data.labels["beam"].tolist() == scenario.best
    assert "rf" not in data.inputs and not data.has("rf").any()


# --------------------------------------------------------------------------- GPS


def test_gps_is_converted_to_local_metres_by_hand():
    """At 33.42 deg N the WGS84 radii of curvature are M = 6 354 786.87 m (meridian) and
    N = 6 384 623.05 m (prime vertical), so 1e-4 deg of latitude is M * 1e-4 * pi/180 =
    11.0912 m north and 2e-4 deg of longitude is N cos(33.42 deg) * 2e-4 * pi/180 =
    18.6016 m east (a 1-degree check: 110.9 km per degree of latitude at 33 deg N)."""
    east, north = local_metres(BS_LAT + 1e-4, BS_LON + 2e-4, BS_LAT, BS_LON)
    assert north == pytest.approx(11.0912, abs=1e-3)
    assert east == pytest.approx(18.6016, abs=1e-3)
    # The spherical approximation (R = 6 371 km) agrees to within 0.3 %.
    assert north == pytest.approx(6_371_008.8 * math.radians(1e-4), rel=3e-3)
    # Across the antimeridian the longitude difference wraps.
    east, _ = local_metres(0.0, -179.9999, 0.0, 179.9999)
    assert east == pytest.approx(6_378_137.0 * math.radians(2e-4), rel=1e-9)


def test_gps_input_position_and_next_position(scenario):
    data = load_deepsense_scenario(scenario.root, modalities=("gps",))
    pos = data.conditions["position"]
    expected = np.array([[*local_metres(BS_LAT + a, BS_LON + b, BS_LAT, BS_LON), 0.0] for a, b in scenario.offsets_deg])
    np.testing.assert_allclose(pos, expected, atol=1e-3)
    assert pos[0, 0] == pytest.approx(18.6016, abs=2e-3) and pos[0, 1] == pytest.approx(11.0912, abs=2e-3)
    gps = data.inputs["gps"]
    np.testing.assert_allclose(gps[:, :3], pos, atol=1e-4)
    # previous fix of the same sequence (rows 1-3 are sequence 1; row 4 is sequence 2)
    np.testing.assert_allclose(gps[:, 3:], pos[[0, 0, 1, 3]], atol=1e-4)
    nxt = data.labels["next_position"]
    np.testing.assert_allclose(nxt[:2], pos[1:3], atol=1e-4)
    assert np.isnan(nxt[2]).all() and np.isnan(nxt[3]).all()  # last of their sequences
    two = load_deepsense_scenario(scenario.root, modalities=("gps",), next_step=2)
    np.testing.assert_allclose(two.labels["next_position"][0], pos[2], atol=1e-4)


def test_height_column_and_blockage_column(scenario):
    def add(rows):
        heights = ["unit2_height", "10", "20", "./unit2/height_7.txt", ""]
        block = ["unit1_blockage", "0", "1", "", "blocked"]
        return [[*r, h, b] for r, h, b in zip(rows, heights, block)]

    (scenario.root / "unit2" / "height_7.txt").write_text("30.5\n")
    scenario.rewrite_csv(add)
    data = load_deepsense_scenario(scenario.root, modalities=("gps",))
    assert data.conditions["position"][:, 2].tolist() == [10.0, 20.0, 30.5, 0.0]
    assert data.conditions["is_uav"].all()
    assert data.conditions["blocked"].tolist() == [False, True, False, True]
    assert data.conditions["blocked_known"].tolist() == [True, True, False, True]


# --------------------------------------------------------------------------- lidar and radar


def test_lidar_ply_becomes_a_range_scan(scenario):
    data = load_deepsense_scenario(scenario.root, modalities=("lidar",))
    scan = data.inputs["lidar"]
    ahead, left = 32, 48  # sectors of azimuth 0 and +90 deg among 64 over [-180, 180)
    assert scan[:, ahead].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert (scan[:, left] == 20.0).all()
    others = np.delete(scan, [ahead, left], axis=1)
    assert (others == S.lidar_max_range_m).all()  # the origin marker is ignored


def test_lidar_scan_fov_and_profiles():
    pts = np.array([[10.0, 0.0, 0.0], [0.0, -3.0, 0.0], [-4.0, 0.0, 0.0]])
    scan = lidar_range_scan(pts, rays=4, max_range_m=50.0, fov_deg=180.0)  # sectors of 45 deg over [-90, 90)
    assert scan.tolist() == [3.0, 50.0, 10.0, 50.0]  # the point behind (-x) is outside the FOV
    prof = lidar_range_scan(np.array([1.0, np.nan, 3.0]), rays=5, max_range_m=4.0)
    np.testing.assert_allclose(prof, [1.0, 2.5, 4.0, 3.5, 3.0])


def test_point_cloud_readers(tmp_path):
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    write_ply(tmp_path / "a.ply", pts)
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.ply"), pts)
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar intensity\nend_header\n").encode()
    rec = np.array([(1, 2, 3, 7), (4, 5, 6, 9)], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "u1")])
    (tmp_path / "b.ply").write_bytes(header + rec.tobytes())
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "b.ply"), pts)
    (tmp_path / "c.csv").write_text("x,y,z,intensity\n1,2,3,0\n4,5,6,0\n")
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "c.csv"), pts)
    savemat(tmp_path / "d.mat", {"data": pts})
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "d.mat"), pts)
    np.save(tmp_path / "e.npy", np.array([1.0, 2.0]))
    assert read_point_cloud(tmp_path / "e.npy").shape == (2,)


def test_a_two_column_lidar_array_is_unsupported(scenario):
    bad = scenario.files["lidar"][3].with_suffix(".npy")
    np.save(bad, np.zeros((460, 2)))
    scenario.rewrite_csv(lambda rows: [*rows[:4], [*rows[4][:3], rows[4][3].replace(".ply", ".npy"), *rows[4][4:]]])
    with pytest.raises(DeepSenseFormatError, match=r"data row 4 \(index 12\).*lidar_data_12\.npy: unsupported file.*"
                                                   r"\(460, 2\)"):
        load_deepsense_scenario(scenario.root)
    assert "lidar" not in load_deepsense_scenario(scenario.root, modalities=("gps",)).inputs


def test_radar_range_angle_map_peaks_at_the_target():
    """Target: 64 cycles over 256 ADC samples -> range FFT bin 64 -> block 4 of 16 blocks of 16;
    phase step 2 pi * 0.25 between antennas -> bin 0.25 * 32 = 8 of a 32-point angle FFT,
    16 + 8 = 24 after the shift; it moves (2 Doppler cycles), so clutter removal keeps it."""
    m = range_angle_map(radar_cube(), range_bins=16, angle_bins=32)
    assert m.shape == (1, 16, 32) and m.dtype == np.float32
    assert np.unravel_index(np.argmax(m[0]), m[0].shape) == (4, 24)
    static = range_angle_map(radar_cube(doppler_cycles=0.0), range_bins=16, angle_bins=32)
    assert static.max() < m.max() - 100  # a static target is removed as clutter


def test_radar_from_the_scenario_and_from_mat(scenario):
    data = load_deepsense_scenario(scenario.root, modalities=("radar",))
    for r in range(4):
        assert np.unravel_index(np.argmax(data.inputs["radar"][r, 0]), (16, 32)) == (4, 24)
    mat = scenario.files["radar"][1].with_suffix(".mat")
    savemat(mat, {"data": radar_cube()})
    scenario.rewrite_csv(lambda rows: [*rows[:2], [*rows[2][:4], rows[2][4].replace(".npy", ".mat"), *rows[2][5:]],
                                       *rows[3:]])
    again = load_deepsense_scenario(scenario.root, modalities=("radar",))
    np.testing.assert_allclose(again.inputs["radar"][1], data.inputs["radar"][1], atol=1e-3)


def test_box_resize_layouts():
    img = np.zeros((6, 6, 3), dtype=np.uint8)
    img[:3, :3] = 200  # top-left quadrant
    out = box_resize(img, 2)
    assert out.shape == (3, 2, 2) and out[:, 0, 0].tolist() == [200] * 3 and out[:, 1, 1].tolist() == [0] * 3
    np.testing.assert_array_equal(box_resize(np.moveaxis(img, -1, 0), 2), out)  # channels first
    assert box_resize(np.full((3, 3), 0.5), 2).max() == 128  # float in [0, 1], grey
    assert box_resize(np.ones((1, 1, 3)) * 9, 3).shape == (3, 3, 3)  # upsampling


# --------------------------------------------------------------------------- modality subsets


def test_modality_subset_and_absent_columns(scenario):
    data = load_deepsense_scenario(scenario.root, modalities=("gps", "rf"))
    assert set(data.inputs) == {"gps", "rf"}
    assert data.has("gps").all() and data.has("rf").all()
    assert not data.present[:, [col("camera"), col("lidar"), col("radar")]].any()
    # A CSV without a lidar column: lidar is simply not provided.
    scenario.rewrite_csv(lambda rows: [[c for j, c in enumerate(r) if j != 3] for r in rows])
    data = load_deepsense_scenario(scenario.root)
    assert "lidar" not in data.inputs and not data.has("lidar").any() and data.has("radar").all()
    with pytest.raises(ValueError, match="unknown modalities"):
        load_deepsense_scenario(scenario.root, modalities=("sonar",))


def test_an_empty_cell_marks_that_sample_absent(scenario):
    scenario.rewrite_csv(lambda rows: [*rows[:2], [*rows[2][:4], "", *rows[2][5:]], *rows[3:]])
    data = load_deepsense_scenario(scenario.root, modalities=("radar",))
    assert data.has("radar").tolist() == [True, False, True, True]
    assert not data.inputs["radar"][1].any()


def test_missing_files_absent_mode(scenario):
    scenario.files["lidar"][1].unlink()
    scenario.files["rf"][3].unlink()
    scenario.rewrite_csv(lambda rows: [*rows[:4], [*rows[4][:7], "", *rows[4][8:]]])  # row 4: no label either
    with pytest.warns(UserWarning, match=r"dropped 1 rows.*data row 4"):
        data = load_deepsense_scenario(scenario.root, missing_files="absent")
    assert len(data) == 3 and data.conditions["index"].tolist() == [5, 6, 7]
    assert data.has("lidar").tolist() == [True, False, True]


# --------------------------------------------------------------------------- errors


def test_missing_file_error_names_the_file_and_the_row(scenario):
    scenario.files["lidar"][1].unlink()
    with pytest.raises(DeepSenseFormatError) as err:
        load_deepsense_scenario(scenario.root)
    msg = str(err.value)
    assert "scenario31_dev.csv: data row 2 (index 6)" in msg
    assert "lidar_data_6.ply" in msg and "missing file" in msg and "'unit1_lidar'" in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("content, problem", [
    ("\n".join(["0.5"] * 63) + "\n", "expected 64 beam powers, found 63 values"),
    ("this is not a power file\n", "not a number: 'this'"),
    ("", "empty file"),
    ("\n".join(["nan"] * 64), "every beam power is NaN"),
])
def test_malformed_power_file_error_names_the_file_and_the_row(scenario, content, problem):
    scenario.files["rf"][2].write_text(content)
    with pytest.raises(DeepSenseFormatError, match=re.escape(problem)) as err:
        load_deepsense_scenario(scenario.root, modalities=("gps",))  # powers are read for the labels anyway
    assert "data row 3 (index 7)" in str(err.value) and "mmWave_power_7.txt: malformed file" in str(err.value)


@pytest.mark.parametrize("modality, content, problem", [
    ("gps", "33.42\n", "expected latitude and longitude"),
    ("gps", "433.42\n-111.9\n", "not a latitude/longitude"),
    ("lidar", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n", "no x, y, z"),
    ("lidar", "garbage", "not a PLY file"),
    ("radar", b"\x93NUMPY garbage", "cannot read .npy file"),
    ("camera", b"\xff\xd8 not really a jpeg", "cannot decode image"),
])
def test_malformed_sensor_files(scenario, modality, content, problem):
    if modality == "camera":
        pytest.importorskip("PIL")
    path = scenario.files[modality][0]
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(DeepSenseFormatError, match=re.escape(problem)) as err:
        load_deepsense_scenario(scenario.root)
    assert "data row 1 (index 5)" in str(err.value) and path.name in str(err.value)


def test_missing_csv_and_missing_required_column(scenario, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_deepsense_scenario(scenario.root, "nope.csv")
    with pytest.raises(FileNotFoundError, match="no such DeepSense scenario folder"):
        load_deepsense_scenario(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no scenario CSV"):
        load_deepsense_scenario(tmp_path / "empty")
    # Powers under another name and no label column: the error names the column it recognises and the override.
    def rename(rows):
        rows[0][2] = "unit1_power"
        return [[c for j, c in enumerate(r) if j != 7] for r in rows]

    scenario.rewrite_csv(rename)
    with pytest.raises(DeepSenseFormatError, match=r"scenario31_dev\.csv: missing required column.*unit1_pwr_60ghz.*"
                                                   r"pass columns=\{'rf': 'unit1_power'\}"):
        load_deepsense_scenario(scenario.root)
    renamed = load_deepsense_scenario(scenario.root, columns={"rf": "unit1_power"})
    assert renamed.labels["beam"].tolist() == scenario.best
    with pytest.raises(DeepSenseFormatError, match=r"missing column 'unit1_rgb_1'"):
        load_deepsense_scenario(scenario.root, columns={"camera": "unit1_rgb_1"})


def test_bad_cells_name_the_row(scenario):
    scenario.rewrite_csv(lambda rows: [*rows[:3], [*rows[3][:7], "65", *rows[3][8:]], *rows[4:]])
    with pytest.raises(DeepSenseFormatError, match=r"data row 3 \(index 7\): column 'unit1_beam'.*65 outside 1\.\.64"):
        load_deepsense_scenario(scenario.root, beam_label_base=1)
    scenario.rewrite_csv(lambda rows: [*rows[:3], [*rows[3][:7], "3.5", *rows[3][8:]], *rows[4:]])
    with pytest.raises(DeepSenseFormatError, match=r"data row 3 \(index 7\).*not an integer"):
        load_deepsense_scenario(scenario.root)


def test_several_csvs_need_a_name(scenario):
    (scenario.root / "notes.csv").write_text("a,b\n")
    assert len(load_deepsense_scenario(scenario.root, modalities=("rf",))) == 4  # scenarioN_dev.csv wins
    (scenario.root / "scenario31.csv").write_text(scenario.csv.read_text())
    with pytest.raises(DeepSenseFormatError, match="several CSV files"):
        load_deepsense_scenario(scenario.root)
