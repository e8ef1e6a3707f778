"""``fedmoe data stats --input`` on an imported DeepSense scenario: its radar input is one range-angle map
(the synthetic generator has two), and the example figure shows that one."""

from __future__ import annotations

from fedmoe.cli import main
from fedmoe.data.deepsense import load_deepsense_scenario
from fedmoe.data.plots import example_columns


def test_the_example_panels_follow_the_radar_channels(npy_scenario, make_samples):
    samples = load_deepsense_scenario(npy_scenario.root)
    assert samples.inputs["radar"].shape[1] == 1
    assert example_columns(samples) == ["camera", "lidar", "radar:0", "rf"]
    assert example_columns(make_samples(4)) == ["camera", "lidar", "radar:0", "radar:1", "rf"]


def test_data_stats_on_an_imported_deepsense_file_writes_its_figures(npy_scenario, tmp_path, capsys):
    data = tmp_path / "s31.npz"
    assert main(["data", "import", "deepsense", str(npy_scenario.root), "--out", str(data), "--quiet"]) == 0
    out = tmp_path / "stats"
    code = main(["data", "stats", "--input", str(data), "--out", str(out), "--epochs", "0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (out / "examples.png").stat().st_size > 5_000
