"""Config models, the TOML loader and its one-line errors; the name registry."""

from __future__ import annotations

import pytest

from fedmoe.config import (
    ConfigError,
    FedMoEConfig,
    deep_merge,
    dotted_to_nested,
    load_config,
    parse_config,
)
from fedmoe.registry import Registry, UnknownNameError


def test_defaults_are_valid_and_round_trip():
    cfg = FedMoEConfig()
    assert parse_config(cfg.model_dump(mode="json")) == cfg
    assert cfg.wireless.uplink.num_resource_blocks == 100  # 20 MHz / 200 kHz


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"data": {"num_samples": 0}},
         "data.num_samples: Input should be greater than 0 (allowed: > 0 and <= 5e+07; got 0)"),
        ({"data": {"sensors": {"camera_size": 4}}},
         "data.sensors.camera_size: Input should be greater than or equal to 8"),
        ({"wireless": {"channel": {"fading": "nakagami"}}}, "wireless.channel.fading: Input should be"),
        ({"partition": {"modality_availability": {"camera": 1.5}}}, "modality_availability.camera: must be in [0, 1]"),
        ({"data": {"scene": {"blockage_loss_db": [40, 20]}}},
         "blockage_loss_db: lower bound 40 exceeds upper bound 20"),
        ({"wireless": {"cell": {"radius_m": 5, "min_distance_m": 10}}}, "wireless.cell"),
        ({"nme": "x"}, "nme: unknown field (check the spelling)"),
        ({"model": {"subsets": [["gps", "gps"]]}}, "each subset needs distinct modalities"),
        ({"model": {"subsets": [["gps", "sonar"]]}}, "model.subsets.0.1: Input should be"),
        ({"model": {"modalities": [], "subsets": []}}, "the mixture has no experts"),
        ({"train": {"stage1_mode": "some"}}, "train.stage1_mode: Input should be 'each' or 'subsets'"),
        ({"model": {"gate": "channel_aware"}}, "model.gate: 'channel_aware' reads a per-expert link quality"),
        ({"mode": "split", "model": {"gate": "channel_aware"}}, 'runs in mode = "distributed"'),
    ],
)
def test_bad_values_name_the_field_in_one_line(data, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    message = str(err.value)
    assert expected in message
    assert len(message.splitlines()) == 1


def test_several_problems_one_line_each():
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"num_samples": -1, "seed": -1}})
    assert len(str(err.value).splitlines()) == 2


def test_load_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\n[data]\nnum_samples = 100\n[data.scene]\nnum_blockers = 2\n')
    cfg = load_config(path, {"data": {"scene": {"num_blockers": 3}}})
    assert (cfg.name, cfg.data.num_samples, cfg.data.scene.num_blockers) == ("x", 100, 3)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_dotted_and_merge_helpers():
    assert dotted_to_nested({"a.b.c": 1, "a.d": 2}) == {"a": {"b": {"c": 1}, "d": 2}}
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_registry_by_name():
    reg: Registry[int] = Registry("widget")
    reg.register("one", 1)

    @reg.register("double")
    def double(x):
        return 2 * x

    assert reg.get("one") == 1 and reg.get("double")(4) == 8
    assert reg.names() == ["double", "one"] and "one" in reg and len(reg) == 2
    with pytest.raises(UnknownNameError, match="widget 'three'.*double, one"):
        reg.get("three")
    with pytest.raises(ValueError, match="already"):
        reg.register("one", 2)
    reg.register("one", 2, overwrite=True)
    assert reg.get("one") == 2


@pytest.mark.parametrize("value", ["ghp_s3cretT0ken", 424242, ["ghp_s3cretT0ken"]], ids=["string", "number", "list"])
def test_errors_name_unknown_keys_without_their_values(value):
    """Issue 18, finding 7: an unknown key's value (a token put in the wrong TOML file) was printed in
    the error. Only its name is."""
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"api_token": value}, "federated": {"rounds": 2}})
    message = str(err.value)
    assert "data.api_token: unknown field" in message
    assert "s3cret" not in message and "424242" not in message
