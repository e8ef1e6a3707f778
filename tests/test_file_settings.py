"""fedmoe.config.FILE_SETTINGS: the settings naming a file that every process of a run opens are found wherever
they sit in the config, and made absolute from the working folder (``fedmoe run``, ``fedmoe deploy local``)."""

from __future__ import annotations

from pathlib import Path

from fedmoe.config import FILE_SETTINGS, FedMoEConfig, file_settings, parse_config, with_absolute_files


def _config(**files: str) -> FedMoEConfig:
    data = FedMoEConfig().model_dump(mode="json")
    if "input" in files:
        data["data"]["input"] = files["input"]
    if "trace" in files:
        data["wireless"]["trace"] = {"path": files["trace"]}
    if "availability" in files:
        data["federated"]["dynamics"] = {"availability": {"model": "trace", "path": files["availability"]}}
    return parse_config(data)


def test_every_file_setting_is_found_and_none_is_invented():
    assert file_settings(FedMoEConfig()) == {}
    cfg = _config(input="d.npz", trace="/abs/t.csv", availability="a.csv")
    assert file_settings(cfg) == {"data.input": "d.npz", "wireless.trace.path": "/abs/t.csv",
                                  "federated.dynamics.availability.path": "a.csv"}
    assert set(file_settings(cfg)) == set(FILE_SETTINGS)


def test_relative_files_become_absolute_from_the_working_folder_and_absolute_ones_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config(input="data/d.npz", trace="/abs/t.csv", availability="~/a.csv")
    done = file_settings(with_absolute_files(cfg))
    assert done == {"data.input": str(tmp_path.resolve() / "data" / "d.npz"), "wireless.trace.path": "/abs/t.csv",
                    "federated.dynamics.availability.path": str(Path("~/a.csv").expanduser().resolve())}
    plain = _config(trace="/abs/t.csv")
    assert with_absolute_files(plain) is plain
