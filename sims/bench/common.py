"""What every benchmark does at the end: write its JSON, draw its figures, print its table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def write_report(doc: dict[str, Any], out: Path, plot: Callable[[dict, Path], list[Path]],
                 print_table: Callable[[dict], None]) -> dict[str, Any]:
    """Write ``doc`` to ``out``, its figures beside it (``plot(doc, out.with_suffix(".png"))``),
    print the table, the targets and where everything went; returns ``doc``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    figures = plot(doc, out.with_suffix(".png"))
    print_table(doc)
    print(json.dumps(doc.get("targets", {}), indent=2))
    print(f"wrote {out} and {', '.join(str(f) for f in figures)} ({doc.get('wall_s', 0.0):.0f} s)")
    return doc
