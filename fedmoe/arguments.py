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
