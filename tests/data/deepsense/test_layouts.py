"""DeepSense layouts beyond the scenario CSV: challenge splits in one frame, unlabelled CSVs,
sequence task CSVs, folders without their data, .mat lidar scans, the table of readers."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy.io import savemat

from fedmoe.config import MODALITIES
from fedmoe.data.deepsense import READERS, DeepSenseFormatError, ModalityReader, load_deepsense_scenario, local_metres
from tests.data.deepsense.conftest import BS_LAT, BS_LON, power_vector

# --------------------------------------------------------------------------- challenge splits


def expected_positions(challenge, split):
    return np.array([[*local_metres(BS_LAT + challenge.offsets_deg[s][0], BS_LON + challenge.offsets_deg[s][1],
                                    BS_LAT, BS_LON), 0.0] for s in challenge.rows[split]])


def test_challenge_splits_load_without_overrides_in_the_base_station_frame(challenge):
    for split in ("train", "val", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # labels agree, the frame is the base station's: no warning
            data = load_deepsense_scenario(challenge.root, challenge.splits[split].name)
        samples = challenge.rows[split]
        assert data.conditions["index"].tolist() == samples
        assert data.labels["beam"].tolist() == [challenge.best[s] for s in samples]  # beam_index_1 is 1-based
        np.testing.assert_allclose(data.inputs["rf"][1], power_vector(challenge.best[samples[1]]), atol=1e-6)
        # Every split in one frame: unit 1 at the origin, not each split's first fix.
        np.testing.assert_allclose(data.conditions["position"], expected_positions(challenge, split), atol=1e-3)
        assert data.has("gps").all() and data.conditions["labelled"].all()
    # By hand: sample 3 is 3e-4 deg north (M(33.42) * 3e-4 * pi/180 = 33.274 m) of the base station.
    val = load_deepsense_scenario(challenge.splits["val"])
    assert val.conditions["position"][0, 1] == pytest.approx(33.2737, abs=2e-3)


def test_without_the_base_station_file_each_split_would_get_its_own_origin(challenge):
    (challenge.root / "unit1/GPS_data/gps_location.txt").unlink()
    with pytest.warns(UserWarning, match=r"scenario5_dev_val\.csv: no unit1_loc column.*origin of its own.*"
                                         r"origin=\(lat, lon\)"):
        data = load_deepsense_scenario(challenge.root, "scenario5_dev_val.csv")
    pos = data.conditions["position"]
    assert pos[0].tolist() == [0.0, 0.0, 0.0]  # the first user fix is the origin
    exact = expected_positions(challenge, "val")
    np.testing.assert_allclose(pos[1], exact[1] - exact[0], atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = load_deepsense_scenario(challenge.root, "scenario5_dev_val.csv", origin=(BS_LAT, BS_LON))
    np.testing.assert_allclose(fixed.conditions["position"], exact, atol=1e-3)


def test_a_malformed_base_station_file_names_it(challenge):
    (challenge.root / "unit1/GPS_data/gps_location.txt").write_text("33.42\n")
    with pytest.raises(DeepSenseFormatError, match=r"gps_location\.txt: malformed file \(the base station's fix\): "
                                                   r"expected latitude and longitude"):
        load_deepsense_scenario(challenge.root, "scenario5_dev_train.csv")


def test_the_unlabelled_challenge_csv_loads_for_inference(challenge):
    with pytest.warns(UserWarning, match=r"scenario5_unlabelled\.csv: UNLABELLED.*inference only"):
        data = load_deepsense_scenario(challenge.root, challenge.unlabelled.name)
    assert len(data) == 2 and data.labels["beam"].tolist() == [-1, -1]
    assert not data.conditions["labelled"].any()
    assert set(data.inputs) == {"gps"} and data.has("gps").all()
    np.testing.assert_allclose(data.conditions["position"], expected_positions(challenge, "unlabelled"), atol=1e-3)


# --------------------------------------------------------------------------- sequence task CSVs


def test_sequence_task_csv_in_a_subfolder(sequence_task):
    t = sequence_task
    a = load_deepsense_scenario(t.root, "future-1/scenario17_series.csv", modalities=("rf", "camera"))
    b = load_deepsense_scenario(t.csv, modalities=("rf", "camera"))  # the CSV alone: the root is found above it
    for data in (a, b):
        last = [row[-1] for row in t.best]
        assert data.labels["beam"].tolist() == last  # the row's own frame is the last observed one
        np.testing.assert_allclose(data.inputs["rf"][2], power_vector(last[2]), atol=1e-6)
        seq = data.conditions["rf_sequence"]
        assert seq.shape == (3, t.frames, 64)
        for r in range(3):
            for k in range(t.frames):
                assert int(np.argmax(seq[r, k])) == t.best[r][k]
        for r, colour in enumerate(t.colours):
            assert (data.inputs["camera"][r] == np.array(colour, dtype=np.uint8)[:, None, None]).all()
        # The future-window label stays a label of the future, not the row's own blockage state.
        assert data.labels["blockage_future"].tolist() == [float(v) for v in t.future]
        assert not data.conditions["blocked_known"].any()


def test_a_series_of_beam_labels_must_be_chosen(sequence_task):
    t = sequence_task
    rows = [line.split(",") for line in t.csv.read_text().splitlines()]
    rows = [[*r, *(["beam_index_1", "beam_index_2"] if i == 0 else ["3", "4"])] for i, r in enumerate(rows)]
    t.csv.write_text("\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(DeepSenseFormatError, match=r"several beam label columns \(beam_index_1, beam_index_2\).*"
                                                   r"columns=\{'beam': 'beam_index_1'\}"):
        load_deepsense_scenario(t.csv)
    data = load_deepsense_scenario(t.csv, columns={"beam": "beam_index_2"}, label_mismatch="ignore")
    assert data.labels["beam"].tolist() == [row[-1] for row in t.best]  # powers win; the column was read


# --------------------------------------------------------------------------- a folder without its data


def test_a_folder_without_its_data_is_refused(scenario):
    for paths in scenario.files.values():
        for p in paths:
            p.unlink()
    with pytest.raises(DeepSenseFormatError, match=r"scenario31_dev\.csv: none of the \d+ files it references exists"
                                                   r".*data row 1.*unpacked"):
        load_deepsense_scenario(scenario.root, missing_files="absent")


def test_missing_files_above_the_threshold_warn_per_column(scenario):
    scenario.files["camera"][0].unlink()
    scenario.files["camera"][2].unlink()
    with pytest.warns(UserWarning, match=r"missing files \(loaded as absent\): unit1_rgb 2 of 4 \(first: data row 1"):
        data = load_deepsense_scenario(scenario.root, missing_files="absent")
    assert data.has("camera").tolist() == [False, True, False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 2 of 4 is not above a half
        load_deepsense_scenario(scenario.root, missing_files="absent", missing_warn_fraction=0.5)


# --------------------------------------------------------------------------- .mat files and the reader table


def test_mat_lidar_scan_and_radar(scenario):
    """A scenario 8-9 lidar .mat holds a (K, 2) array; its first column is read as a range profile
    (K = 5 ranges resampled to 64 rays: ray j at position 4 j / 63 of the profile)."""
    ranges = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    mat = scenario.files["lidar"][0].with_suffix(".mat")
    savemat(mat, {"data": np.stack([ranges, np.linspace(-1.5, 1.5, 5)], axis=1)})
    rad = scenario.files["radar"][0].with_suffix(".mat")
    savemat(rad, {"data": np.load(scenario.files["radar"][0])})
    scenario.rewrite_csv(lambda rows: [rows[0], [*rows[1][:3], rows[1][3].replace(".ply", ".mat"),
                                                 rows[1][4].replace(".npy", ".mat"), *rows[1][5:]], *rows[2:]])
    data = load_deepsense_scenario(scenario.root, modalities=("lidar", "radar"))
    scan = data.inputs["lidar"][0]
    assert scan[0] == 1.0 and scan[63] == 5.0
    assert scan[21] == pytest.approx(1.0 + 4 * 21 / 63, abs=1e-5)
    assert np.unravel_index(np.argmax(data.inputs["radar"][0, 0]), (16, 32)) == (4, 24)


def test_a_new_modality_reader_is_one_table_entry(scenario):
    old = READERS.get("lidar")
    READERS.register("lidar", ModalityReader("lidar", lambda p, o: np.array([p.stat().st_size], dtype=float),
                                             lambda a, o: np.full(o.sensors.lidar_rays, a[0]), old.shape,
                                             np.float32, lambda o: 7), overwrite=True)
    try:
        data = load_deepsense_scenario(scenario.root, modalities=("lidar",))
    finally:
        READERS.register("lidar", old, overwrite=True)
    sizes = [p.stat().st_size for p in scenario.files["lidar"]]
    assert data.inputs["lidar"][:, 5].tolist() == sizes and data.bits_per_sample["lidar"] == 7
    assert data.present[:, MODALITIES.index("lidar")].all()


def test_error_messages_keep_their_details(challenge):
    challenge.splits["train"].write_text(challenge.splits["train"].read_text().replace(
        "gps_location_2.txt", "gps_location_9.txt"))
    with pytest.raises(DeepSenseFormatError) as err:
        load_deepsense_scenario(challenge.splits["train"])
    assert re.search(r"scenario5_dev_train\.csv: data row 2 \(index 2\): .*gps_location_9\.txt: missing file "
                     r"\(column 'unit2_loc_1'\)", str(err.value))
