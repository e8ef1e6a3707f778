"""Reading the cells of a scenario CSV: the files they name, with every error naming the CSV,
the data row, the row's ``index``, the column and the file; and a tally of the missing files."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from fedmoe.data.deepsense.errors import DeepSenseFormatError, FileProblem
from fedmoe.data.deepsense.files import read_numbers
from fedmoe.data.deepsense.table import Table, parse_int, resolve_path

_TRUE_WORDS = {"true", "yes", "blocked"}
_FALSE_WORDS = {"false", "no", "not_blocked", "unblocked", "not blocked"}


class Progress:
    """What the reader reports its progress to (a ``tqdm`` bar fits): ``total`` grows as columns
    are read, ``update(k)`` after ``k`` cells."""

    total: int | float | None

    def update(self, n: int = 1) -> Any: ...  # pragma: no cover - protocol

    def refresh(self) -> Any: ...  # pragma: no cover - protocol


@dataclass
class MissingTally:
    """Per column: how many cells named a file, and the missing ones (row, path)."""

    referenced: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[tuple[int, Path]]] = field(default_factory=dict)

    def total(self) -> tuple[int, int]:
        """(files referenced, files missing) over every column."""
        return sum(self.referenced.values()), sum(len(v) for v in self.missing.values())


@dataclass
class CellReader:
    """Reads the files the cells of ``table`` name, relative to ``base`` (the scenario root)."""

    table: Table
    base: Path
    index_cells: list[str]
    missing_files: Literal["raise", "absent"] = "raise"
    progress: Progress | None = None
    tally: MissingTally = field(default_factory=MissingTally)

    @property
    def n(self) -> int:
        return len(self.table.rows)

    def where(self, i: int) -> str:
        idx = self.index_cells[i]
        return f"{self.table.path}: data row {i + 1} (index {idx if idx else 'n/a'})"

    def cell_error(self, i: int, column: str, msg: str) -> DeepSenseFormatError:
        return DeepSenseFormatError(f"{self.where(i)}: column {column!r}: {msg}")

    def files(self, column: str | None, reader: Callable[[Path], Any], rows: Sequence[int] | None = None,
              cache: bool = False) -> list[Any]:
        """``reader(path)`` for the rows (default all) of ``column``; None for empty cells (and
        missing files under ``missing_files="absent"``). ``cache`` reads each distinct file once
        (for small files shared by rows, like unit 1's position; those are left out of the tally
        of missing files, which counts per-sample files)."""
        out: list[Any] = [None] * self.n
        if column is None:
            return out
        cells = self.table.column(column)
        seen: dict[Path, Any] = {}
        todo = range(self.n) if rows is None else rows
        if self.progress is not None:
            self.progress.total = (self.progress.total or 0) + len(todo)
            self.progress.refresh()
        for i in todo:
            if self.progress is not None:
                self.progress.update(1)
            cell = cells[i]
            if cell == "" or cell.lower() == "nan":
                continue
            path = resolve_path(self.base, cell)
            if not cache:
                self.tally.referenced[column] = self.tally.referenced.get(column, 0) + 1
            if cache and path in seen:
                out[i] = seen[path]
                continue
            if not path.is_file():
                if not cache:
                    self.tally.missing.setdefault(column, []).append((i, path))
                if self.missing_files == "absent":
                    continue
                raise DeepSenseFormatError(f"{self.where(i)}: {path}: missing file (column {column!r})")
            try:
                out[i] = seen[path] = reader(path)
            except FileProblem as err:
                raise DeepSenseFormatError(f"{self.where(i)}: {path}: {err.kind} (column {column!r}): {err}") from None
            except OSError as err:
                raise DeepSenseFormatError(f"{self.where(i)}: {path}: unreadable file (column {column!r}): "
                                           f"{err}") from None
        return out

    def scalars(self, column: str | None) -> list[float | None]:
        """A number per row: the cell itself (``true``/``blocked`` -> 1, ``false``/``not_blocked``
        -> 0), or the single number in the file it names; None for empty, NaN or missing."""
        out: list[float | None] = [None] * self.n
        if column is None:
            return out
        cells = self.table.column(column)
        file_rows = []
        for i, cell in enumerate(cells):
            word = cell.lower()
            if word in _TRUE_WORDS or word in _FALSE_WORDS:
                out[i] = float(word in _TRUE_WORDS)
                continue
            try:
                out[i] = float(cell) if cell else None
            except ValueError:
                file_rows.append(i)
        if file_rows:
            values = self.files(column, read_numbers, rows=file_rows)
            for i in file_rows:
                v = values[i]
                if v is not None and v.size != 1:
                    raise DeepSenseFormatError(f"{self.where(i)}: {resolve_path(self.base, cells[i])}: malformed "
                                               f"file (column {column!r}): expected 1 value, found {v.size}")
                out[i] = None if v is None else float(v[0])
        return [None if v is None or math.isnan(v) else v for v in out]

    def integers(self, column: str | None) -> list[int | None]:
        """An integer per row from the cells of ``column`` (None for empty/NaN); a bad cell names the row."""
        out: list[int | None] = [None] * self.n
        if column is None:
            return out
        for i, cell in enumerate(self.table.column(column)):
            try:
                out[i] = parse_int(cell)
            except ValueError as err:
                raise self.cell_error(i, column, str(err)) from None
        return out
