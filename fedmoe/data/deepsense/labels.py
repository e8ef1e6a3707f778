"""The beam label of each row: the NaN-aware argmax of its power vector, checked against the CSV's
label column (whose base, 0 or 1, is detected), or that column alone when there is no power file."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from fedmoe.data.deepsense.cells import CellReader
from fedmoe.data.deepsense.errors import DeepSenseFormatError


def beam_labels(reader: CellReader, powers: list[np.ndarray | None], column: str | None, num_beams: int,
                base: int | None, mismatch: Literal["warn", "raise", "ignore"]) -> np.ndarray:
    """(N,) int64 0-based beam of each row, -1 where the row has neither powers nor a label.

    Parameters
    ----------
    reader
        The CSV's cell reader (for the label cells and the error messages).
    powers
        Each row's power vector, None without one.
    column
        The label column, None without one.
    num_beams
        Codebook size.
    base
        0 or 1: the label column's base; None detects it (the base under which the labels
        agree best with the power argmax; 1, DeepSense's convention, on a tie).
    mismatch
        What to do when a label disagrees with the power argmax (the argmax is used).
    """
    n = reader.n
    csv_path = reader.table.path
    from_power = np.array([-1 if p is None else int(np.nanargmax(p)) for p in powers], dtype=np.int64)
    raw = reader.integers(column)
    known = [i for i in range(n) if raw[i] is not None]
    label_base = base
    if label_base is None and known:
        paired = [i for i in known if from_power[i] >= 0]
        if paired:
            agree = {b: sum(raw[i] - b == from_power[i] for i in paired) for b in (1, 0)}  # type: ignore[operator]
            label_base = 1 if agree[1] >= agree[0] else 0
        else:
            label_base = 1 if min(raw[i] for i in known) >= 1 else 0  # type: ignore[type-var]
    from_column = np.full(n, -1, dtype=np.int64)
    for i in known:
        b = raw[i] - label_base  # type: ignore[operator]
        if not 0 <= b < num_beams:
            span = f"{label_base}..{num_beams - 1 + label_base}"
            raise reader.cell_error(i, column, f"beam label {raw[i]} outside {span}")  # type: ignore[arg-type]
        from_column[i] = b
    both = (from_power >= 0) & (from_column >= 0)
    wrong = np.flatnonzero(both & (from_power != from_column))
    if len(wrong) and mismatch != "ignore":
        first = int(wrong[0])
        msg = (f"{csv_path}: {len(wrong)} of {int(both.sum())} rows have a beam label (column {column!r}, "
               f"{label_base}-based) that is not the argmax of the power vector; first: data row {first + 1} "
               f"(index {reader.index_cells[first] or 'n/a'}): label {raw[first]} "
               f"vs argmax {from_power[first] + label_base}. "  # type: ignore[operator]
               "The power argmax is used.")
        if mismatch == "raise":
            raise DeepSenseFormatError(msg)
        warnings.warn(msg, stacklevel=3)
    return np.where(from_power >= 0, from_power, from_column)
