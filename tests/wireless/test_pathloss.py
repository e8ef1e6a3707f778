"""TR 38.901 path loss, LoS probability and shadowing against hand-derived numbers.

Every expected value is written out from the formulas of TR 38.901 Table 7.4.1-1 (path
loss, shadowing std) and Table 7.4.2-1 (LoS probability); the logarithms and exponentials
are given as literals (7 significant digits), never computed by the code under test.
Breakpoint: d'_BP = 4 (h_BS - 1)(h_UT - 1) f_c / c with c = 299 792 458 m/s (note 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.wireless import pathloss as pl

TOL = 1e-4  # dB; the literals below carry 7 digits


class TestBreakpoint:
    def test_umi_3p5ghz(self):
        # 4 * 9 * 0.5 * 3.5e9 / 299792458 = 6.3e10 / 299792458
        assert pl.breakpoint_distance(10.0, 1.5, 3.5) == pytest.approx(210.1454, abs=1e-3)

    def test_uma_3p5ghz(self):
        # 4 * 24 * 0.5 * 3.5e9 / 299792458
        assert pl.breakpoint_distance(25.0, 1.5, 3.5) == pytest.approx(560.3877, abs=1e-3)


# (function, scenario, d2D, h_BS, h_UT, fc, expected dB). Derivations (Table 7.4.1-1):
PATHLOSS_CASES = [
    # UMi LoS before the breakpoint: d2D = 100 < d'BP = 210.15; d3D = sqrt(100^2 + 8.5^2) = 100.3606,
    # log10 = 2.0015632; PL1 = 32.4 + 21 log10 d3D + 20 log10 fc, log10(3.5) = 0.5440680 -> 85.31419
    ("los", "umi", 100.0, 10.0, 1.5, 3.5, 32.4 + 21 * 2.0015632 + 20 * 0.5440680),
    # UMi LoS after the breakpoint: d2D = 400; d3D = 400.0903, log10 = 2.6021580;
    # PL2 = 32.4 + 40 log10 d3D + 20 log10 fc - 9.5 log10(d'BP^2 + 8.5^2), log10(44233.33) = 4.6457496 -> 103.23306
    ("los", "umi", 400.0, 10.0, 1.5, 3.5, 32.4 + 40 * 2.6021580 + 20 * 0.5440680 - 9.5 * 4.6457496),
    # UMi NLoS at 28 GHz: d2D = 150, d3D = 150.2406, log10 = 2.1767874; log10(28) = 1.4471580;
    # PL' = 35.3 log10 d3D + 22.4 + 21.3 log10 fc - 0.3 (h_UT - 1.5) = 130.06506 > PL_LoS = 107.05570
    ("nlos", "umi", 150.0, 10.0, 1.5, 28.0, 35.3 * 2.1767874 + 22.4 + 21.3 * 1.4471580),
    # Same with h_UT = 4.5: -0.3 * 3 = -0.9 dB; d3D = sqrt(150^2 + 5.5^2) = 150.1008, log10 = 2.1763829
    ("nlos", "umi", 150.0, 10.0, 4.5, 28.0, 35.3 * 2.1763829 + 22.4 + 21.3 * 1.4471580 - 0.9),
    # UMa LoS before the breakpoint: d2D = 200 < d'BP = 560.39; d3D = sqrt(200^2 + 23.5^2) = 201.3759,
    # log10 = 2.3040075; PL1 = 28 + 22 log10 d3D + 20 log10 fc -> 89.56953
    ("los", "uma", 200.0, 25.0, 1.5, 3.5, 28.0 + 22 * 2.3040075 + 20 * 0.5440680),
    # UMa LoS after: d2D = 800, d3D = 800.3451, log10 = 2.9032773; log10(560.3877^2 + 23.5^2) = 5.4977402
    # PL2 = 28 + 40 log10 d3D + 20 log10 fc - 9 log10(...) -> 105.53279
    ("los", "uma", 800.0, 25.0, 1.5, 3.5, 28.0 + 40 * 2.9032773 + 20 * 0.5440680 - 9 * 5.4977402),
    # UMa NLoS: d2D = 300, d3D = 300.9190, log10 = 2.4784496; PL' = 13.54 + 39.08 log10 d3D + 20 log10 fc -> 121.27917
    ("nlos", "uma", 300.0, 25.0, 1.5, 3.5, 13.54 + 39.08 * 2.4784496 + 20 * 0.5440680),
    # UMa NLoS where the LoS formula is larger: h_UT = 22.5, d2D = 20, d3D = 20.15564, log10 = 1.3043967,
    # d'BP = 24097 m; PL_LoS = 28 + 22 * 1.3043967 + 20 * 0.5440680 = 67.57809 >
    # PL' = 13.54 + 39.08 * 1.3043967 + 20 * 0.5440680 - 0.6 * 21 = 62.79718, so max() returns PL_LoS
    ("nlos", "uma", 20.0, 25.0, 22.5, 3.5, 28.0 + 22 * 1.3043967 + 20 * 0.5440680),
]


@pytest.mark.parametrize("kind,scenario,d2d,h_bs,h_ut,fc,expected", PATHLOSS_CASES)
def test_pathloss_hand_values(kind, scenario, d2d, h_bs, h_ut, fc, expected):
    fn = pl.pathloss_los_db if kind == "los" else pl.pathloss_nlos_db
    assert fn(scenario, d2d, h_bs, h_ut, fc) == pytest.approx(expected, abs=TOL)


def test_pathloss_db_selects_by_los_flag():
    los = np.array([True, False])
    got = pl.pathloss_db("umi", np.array([100.0, 100.0]), 10.0, 1.5, 3.5, los)
    assert got[0] == pytest.approx(32.4 + 21 * 2.0015632 + 20 * 0.5440680, abs=TOL)
    # NLoS at 100 m: 35.3 * 2.0015632 + 22.4 + 21.3 * 0.5440680 = 104.64383
    assert got[1] == pytest.approx(35.3 * 2.0015632 + 22.4 + 21.3 * 0.5440680, abs=TOL)


def test_unknown_scenario():
    with pytest.raises(ValueError, match="scenario"):
        pl.pathloss_db("rma", 100.0, 10.0, 1.5, 3.5, True)
    with pytest.raises(ValueError, match="scenario"):
        pl.los_probability("indoor", 100.0)


class TestLoSProbability:
    def test_within_18m_is_one(self):
        # Table 7.4.2-1: Pr_LOS = 1 for d2D_out <= 18 m, both scenarios
        assert np.all(pl.los_probability("umi", np.array([1.0, 10.0, 18.0])) == 1.0)
        assert np.all(pl.los_probability("uma", np.array([1.0, 10.0, 18.0]), 20.0) == 1.0)

    def test_umi(self):
        # 18/50 + exp(-50/36)(1 - 18/50) = 0.36 + 0.2493522 * 0.64
        assert pl.los_probability("umi", 50.0) == pytest.approx(0.36 + 0.2493522 * 0.64, abs=1e-6)
        # 18/200 + exp(-200/36)(1 - 0.09) = 0.09 + 0.003865920 * 0.91
        assert pl.los_probability("umi", 200.0) == pytest.approx(0.09 + 0.003865920 * 0.91, abs=1e-6)

    def test_uma_low_terminal(self):
        # h_UT <= 13: C' = 0; 18/100 + exp(-100/63)(1 - 0.18) = 0.18 + 0.2044766 * 0.82
        assert pl.los_probability("uma", 100.0, 1.5) == pytest.approx(0.18 + 0.2044766 * 0.82, abs=1e-6)

    def test_uma_high_terminal(self):
        # h_UT = 20: C' = (7/10)^1.5 = 0.5856620; factor 1 + C' * 5/4 * (100/100)^3 * exp(-100/150)
        # exp(-2/3) = 0.5134171
        expected = (0.18 + 0.2044766 * 0.82) * (1 + 0.5856620 * 1.25 * 1.0 * 0.5134171)  # 0.4783468
        assert pl.los_probability("uma", 100.0, 20.0) == pytest.approx(expected, abs=1e-6)
        # h_UT = 22.5, d = 300: C' = 0.95^1.5 = 0.9259455; (300/100)^3 = 27; exp(-2) = 0.1353353
        # exp(-300/63) = 0.008549309
        expected = (0.06 + 0.008549309 * 0.94) * (1 + 0.9259455 * 1.25 * 27 * 0.1353353)  # 0.3557836
        assert pl.los_probability("uma", 300.0, 22.5) == pytest.approx(expected, abs=1e-6)

    def test_decreasing_in_distance(self):
        d = np.linspace(18.0, 1000.0, 200)
        for scenario in pl.SCENARIOS:
            p = pl.los_probability(scenario, d)
            assert np.all(np.diff(p) < 0) and np.all((p > 0) & (p <= 1))


class TestShadowing:
    def test_std_values(self):
        # Table 7.4.1-1: sigma_SF = 4 dB (UMi and UMa LoS), 7.82 dB (UMi NLoS), 6 dB (UMa NLoS)
        assert pl.shadowing_std_db("umi", True) == 4.0
        assert pl.shadowing_std_db("umi", False) == 7.82
        assert pl.shadowing_std_db("uma", True) == 4.0
        assert pl.shadowing_std_db("uma", False) == 6.0

    @pytest.mark.parametrize("scenario,los,std", [("umi", False, 7.82), ("uma", False, 6.0), ("umi", True, 4.0)])
    def test_sample_statistics(self, scenario, los, std):
        n = 200_000
        s = pl.sample_shadowing_db(np.random.default_rng(1), scenario, np.full(n, los))
        assert s.shape == (n,)
        # standard errors: mean std/sqrt(n) ~ 0.017 dB, std ~ std/sqrt(2n) ~ 0.012 dB
        assert abs(s.mean()) < 5 * std / np.sqrt(n)
        assert s.std() == pytest.approx(std, abs=5 * std / np.sqrt(2 * n))
        # Gaussian in dB: about 68.27 % within one sigma
        assert np.mean(np.abs(s) < std) == pytest.approx(0.6827, abs=0.005)

    def test_mixed_flags(self):
        los = np.array([True, False] * 50_000)
        s = pl.sample_shadowing_db(np.random.default_rng(2), "uma", los)
        assert s[los].std() == pytest.approx(4.0, rel=0.02)
        assert s[~los].std() == pytest.approx(6.0, rel=0.02)
