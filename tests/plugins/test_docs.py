"""docs/plugins.md: its deadline table is what fedmoe.plugins.selection.deadline_table() computes, and the
example's line count is the real one."""

from __future__ import annotations

import re
from pathlib import Path

from fedmoe.plugins.selection import deadline_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _rows() -> list[str]:
    text = DOC.read_text()
    block = re.search(r"<!-- deadline-table:.*?-->\n(.*?)<!-- /deadline-table -->", text, re.S)
    assert block, "docs/plugins.md lost its deadline table"
    return [ln for ln in block.group(1).splitlines() if ln.startswith("|")][2:]


def test_the_deadline_table_in_the_docs_is_the_computed_one():
    computed = []
    for row in deadline_table():
        shares = " | ".join(f"{100 * s:.1f} %" for s in row["share"].values())
        computed.append(f"| {row['size_mb']:g} MB | {row['median_s']:.3g} s | {shares} |")
    assert _rows() == computed
