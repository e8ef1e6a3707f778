"""What every benchmark shares: the machine it ran on, its targets, and writing its JSON, figures and table."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any, Callable


def machine(**extra: Any) -> dict[str, Any]:
    """Where a benchmark ran: CPU count, Python, numpy and torch versions (when importable), and ``extra``."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    for module in ("numpy", "torch"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:  # a benchmark without torch does not need it for this
            pass
    return {**info, **extra}


def uplink_hz(per_round: int) -> float:
    """Uplink bandwidth with a 200 kHz resource block for each device of a round at least (20 MHz, the default, for
    up to 100 devices; 200 MHz, a 28 GHz FR2 carrier's width, for 1,000)."""
    return max(20e6, per_round * 200e3)


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """Mean ± sample standard deviation (``ddof = 1``; 0 for one value) over seeds of the values that exist
    (``None``: a seed without one), with how many there are (``n``) and are missing."""
    got = [float(v) for v in values if v is not None]
    return {"mean": statistics.fmean(got) if got else None,
            "std": statistics.stdev(got) if len(got) > 1 else 0.0 if got else None, "n": len(got),
            "missing": len(values) - len(got)}


def target(value: Any, goal: str, met: bool, **extra: Any) -> dict[str, Any]:
    """One entry of a result's ``targets`` object: ``{"value", "goal", "met"}`` and any ``extra`` keys."""
    return {"value": value, "goal": goal, "met": bool(met), **extra}


def write_report(doc: dict[str, Any], out: Path, plot: Callable[[dict, Path], list[Path]],
                 print_table: Callable[[dict], None]) -> dict[str, Any]:
    """Write ``doc`` to ``out``, its figures beside it (``plot(doc, out.with_suffix(".png"))``),
    print the table, the targets and where everything went; returns ``doc``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    figures = plot(doc, out.with_suffix(".png"))
    print_table(doc)
    print(json.dumps(doc.get("targets", {}), indent=2))
    also = f" and {', '.join(str(f) for f in figures)}" if figures else ""
    print(f"wrote {out}{also} ({doc.get('wall_s', 0.0):.0f} s)")
    return doc
