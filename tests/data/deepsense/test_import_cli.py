"""``fedmoe data import deepsense ROOT --out FILE.npz``: the dataset file holds what the loader reads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedmoe.cli import main
from fedmoe.data.deepsense import load_deepsense_scenario, local_metres
from fedmoe.data.samples import ISACSamples
from tests.data.deepsense.conftest import BS_LAT, BS_LON, power_vector


def test_import_writes_the_scenario_as_a_dataset_file(npy_scenario, tmp_path, capsys):
    out = tmp_path / "s31.npz"
    assert main(["data", "import", "deepsense", str(npy_scenario.root), "--out", str(out), "--quiet"]) == 0
    assert "wrote 4 samples" in capsys.readouterr().out
    data = ISACSamples.load(out)
    assert data.labels["beam"].tolist() == npy_scenario.best  # written by the fixture, 0-based
    assert data.conditions["index"].tolist() == npy_scenario.index
    for r, colour in enumerate(npy_scenario.colours):
        assert (data.inputs["camera"][r] == np.array(colour, dtype=np.uint8)[:, None, None]).all()
    np.testing.assert_allclose(data.inputs["rf"][3], power_vector(npy_scenario.best[3]), atol=1e-6)
    direct = load_deepsense_scenario(npy_scenario.root)
    for m in direct.inputs:
        np.testing.assert_array_equal(data.inputs[m], direct.inputs[m])
    assert data.bits_per_sample == direct.bits_per_sample


def test_import_options_and_the_unlabelled_csv(challenge, tmp_path, capsys):
    with pytest.warns(UserWarning, match="UNLABELLED"):
        assert main(["data", "import", "deepsense", str(challenge.root), "--csv", challenge.unlabelled.name,
                     "--out", str(tmp_path / "u.npz"), "--quiet"]) == 0
    assert "UNLABELLED: for inference only" in capsys.readouterr().out
    assert not ISACSamples.load(tmp_path / "u.npz").conditions["labelled"].any()
    out = tmp_path / "val.npz"
    val = challenge.splits["val"]
    val.write_text(val.read_text().replace("unit2_loc_1", "user_fix", 1))  # a column only --column finds
    (challenge.root / "unit1/GPS_data/gps_location.txt").unlink()  # the frame then needs --origin
    code = main(["data", "import", "deepsense", str(challenge.root), "--csv", val.name, "--modalities", "gps",
                 "--column", "ue_loc=user_fix", "--origin", f"{BS_LAT},{BS_LON}", "--out", str(out), "--quiet"])
    assert code == 0
    data = ISACSamples.load(out)
    assert set(data.inputs) == {"gps"} and data.labels["beam"].tolist() == [challenge.best[s] for s in (3, 4)]
    north = [local_metres(BS_LAT + challenge.offsets_deg[s][0], BS_LON, BS_LAT, BS_LON)[1] for s in (3, 4)]
    np.testing.assert_allclose(data.inputs["gps"][:, 1], north, atol=1e-3)


def test_import_errors_are_one_line_and_write_nothing(challenge, tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["data", "import", "deepsense", str(challenge.root), "--out", str(out), "--quiet"]) == 2
    assert "several CSV files" in capsys.readouterr().err and not out.exists()
    (challenge.root / "unit1/mmWave_data/mmWave_power_2.txt").write_text("1\n2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["data", "import", "deepsense", str(challenge.root), "--csv", "scenario5_dev_train.csv",
                     "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and len(err.strip().splitlines()) == 1
    assert "data row 2 (index 2)" in err and "mmWave_power_2.txt" in err and "'unit1_pwr_1'" in err
    with pytest.raises(SystemExit):
        main(["data", "import", "deepsense", str(challenge.root), "--out", str(out), "--origin", "95,0"])
