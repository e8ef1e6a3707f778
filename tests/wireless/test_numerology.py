"""NR numerology presets against TS 38.101-1/-2 Table 5.3.2-1 and TS 38.211 Table 4.2-1, and their config."""

from __future__ import annotations

import pytest

from fedmoe.config import NUMEROLOGIES, ConfigError, FedMoEConfig, Numerology, parse_config

# (channel MHz, SCS kHz) -> N_RB, typed from TS 38.101-1 Table 5.3.2-1 (FR1) and TS 38.101-2 Table 5.3.2-1 (FR2).
N_RB = {(20, 15): 106, (50, 15): 270, (20, 30): 51, (50, 30): 133, (100, 30): 273,
        (100, 120): 66, (200, 120): 132, (400, 120): 264}


@pytest.mark.parametrize("name", NUMEROLOGIES.names())
def test_presets_match_the_tables(name):
    p = NUMEROLOGIES.get(name)
    assert p.num_rb == N_RB[(round(p.channel_bandwidth_hz / 1e6), round(p.scs_hz / 1e3))]
    assert p.rb_hz == 12 * p.scs_hz
    assert p.scs_hz == 15e3 * 2**p.mu
    assert p.frequency_range == ("FR1" if p.scs_hz <= 30e3 else "FR2")


def test_registered_presets_cover_fr1_and_fr2():
    assert {"fr1-20mhz-15khz", "fr1-50mhz-30khz", "fr1-100mhz-30khz", "fr2-100mhz-120khz", "fr2-200mhz-120khz",
            "fr2-400mhz-120khz"} <= set(NUMEROLOGIES.names())
    assert NUMEROLOGIES.get("fr2-100mhz-120khz").rb_hz == 1.44e6
    assert NUMEROLOGIES.get("fr1-20mhz-15khz").transmission_bandwidth_hz == pytest.approx(19.08e6)


def test_bad_presets_are_refused():
    with pytest.raises(ValueError, match="scs_hz"):
        Numerology("FR1", 20e6, 20e3, 10)
    with pytest.raises(ValueError, match="do not fit"):
        Numerology("FR1", 20e6, 15e3, 112)  # 112 * 180 kHz = 20.16 MHz > 20 MHz
    with pytest.raises(ValueError, match="frequency_range"):
        Numerology("FR3", 20e6, 15e3, 10)


def test_config_preset_sets_the_uplink():
    cfg = parse_config({"wireless": {"uplink": {"numerology": "fr2-100mhz-120khz"}}})
    assert cfg.wireless.uplink.num_resource_blocks == 66
    assert cfg.wireless.uplink.resource_block_hz == 1.44e6
    fr1 = parse_config({"wireless": {"channel": {"carrier_ghz": 3.5},
                                     "uplink": {"numerology": "fr1-100mhz-30khz"}}})
    assert fr1.wireless.uplink.num_resource_blocks == 273
    # a dumped config (preset plus its values) loads again
    again = FedMoEConfig.model_validate(fr1.model_dump())
    assert again.wireless.uplink == fr1.wireless.uplink


@pytest.mark.parametrize(("wireless", "fragments"), [
    ({"uplink": {"numerology": "fr3-1ghz"}}, ["wireless.uplink", "unknown numerology 'fr3-1ghz'", "fr2-100mhz-120khz"]),
    ({"uplink": {"numerology": "fr2-100mhz-120khz", "resource_block_hz": 2e5}},
     ["wireless.uplink", "resource_block_hz"]),
    ({"uplink": {"numerology": "fr1-20mhz-15khz"}}, ["wireless", "uplink.numerology", "FR1", "carrier_ghz=28"]),
    ({"channel": {"bs_array_gain": "mrc"}}, ["wireless.channel.bs_array_gain"]),
    ({"interference": {"model": "hex"}}, ["wireless.interference.model"]),
    ({"interference": {"num_cells": 7}}, ["wireless.interference.num_cells"]),
])
def test_bad_wireless_config_is_one_line_naming_the_field(wireless, fragments):
    with pytest.raises(ConfigError) as err:
        parse_config({"wireless": wireless})
    msg = str(err.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
