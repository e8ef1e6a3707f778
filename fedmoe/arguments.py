"""Parsers of option values (argparse ``type=`` functions), shared by the ``fedmoe`` command
line (:mod:`fedmoe.cli`) and the benchmark scripts (:mod:`sims.bench`). A value they refuse is
an :class:`argparse.ArgumentTypeError`: argparse's usage line and one error line, status 2.
"""

from __future__ import annotations

import argparse
import math


def int_at_least(minimum: int):
    """An argparse ``type``: an integer ``>= minimum`` (the error names the value and the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def parse_lambdas(text: str) -> list[float]:
    """``"0,0.1,1"`` -> ``[0.0, 0.1, 1.0]`` (comma-separated, each finite and >= 0)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(x) or x < 0 for x in values):
        raise argparse.ArgumentTypeError(f"expected one or more finite numbers >= 0, got {text!r}")
    return values


def parse_assignment_pair(text: str) -> tuple[str, str]:
    """``"ROLE=NAME"`` -> ``("ROLE", "NAME")`` (both non-empty)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected ROLE=COLUMN, got {text!r}")
    return key.strip(), value.strip()


def parse_latlon(text: str) -> tuple[float, float]:
    """``"33.42,-111.93"`` -> ``(33.42, -111.93)``: latitude in [-90, 90], longitude in [-180, 360]."""
    parts = text.split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 360.0):
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}")
    return lat, lon


def parse_modalities(text: str) -> tuple[str, ...]:
    """``"gps,rf"`` -> ``("gps", "rf")``: known modality names (:data:`fedmoe.config.MODALITIES`)."""
    from fedmoe.config import MODALITIES

    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [m for m in names if m not in MODALITIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated modalities among {', '.join(MODALITIES)}, "
                                         f"got {text!r}")
    return names
