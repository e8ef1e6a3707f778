"""The per-round files of a federated run, written as the run goes so that an operator can watch it.

After every complete round the ServerApp (:func:`fedmoe.strategies.federated_learning.serve`, the
same code in ``fedmoe run`` and in a deployment) appends that round's rows and flushes them:

::

    <run>/config.json      the resolved configuration (written when the run starts)
    <run>/rounds.csv       one row per round (:data:`fedmoe.federated.report.CSV_COLUMNS`; round 0: the initial model)
    <run>/devices.csv      one row per device that took part in a round (:data:`DEVICE_COLUMNS`)
    <run>/tensorboard/     TensorBoard event files, with ``report.tensorboard = true``: one scalar per round
                           and numeric column of rounds.csv, tag ``round/<column>``

A round's rows are written after the server saved its resume state for that round
(:mod:`fedmoe.federated.resume`). A resumed run rewrites both CSV files from that saved state
(the rounds up to the last complete one, whatever the stopped run had appended after it) and
continues appending, so no row is lost or written twice; its TensorBoard writer purges the
events of the rounds it repeats (``purge_step``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from fedmoe.errors import UsageError
from fedmoe.federated.report import CSV_COLUMNS, csv_text
from fedmoe.federated.rounds import RoundRecord
from fedmoe.files import write_atomic

ROUNDS_CSV = "rounds.csv"
DEVICES_CSV = "devices.csv"
TENSORBOARD_DIR = "tensorboard"

DEVICE_COLUMNS = ("round", "stage", "device", "link_class", "latency_s", "energy_j", "upload_bits", "samples",
                  "train_loss")
"""Columns of ``devices.csv``: a device's own round latency ``T_k`` (s), energy ``E_k`` (J) and upload bits as the
server computed them (:mod:`fedmoe.federated.rounds`), the samples it trained on and its training loss."""

TENSORBOARD_HINT = "pip install 'fedmoe[tensorboard]' (or pip install -e '.[tensorboard]' in a checkout)"


class TensorBoardMissing(UsageError):
    """``report.tensorboard = true`` without the ``tensorboard`` package (one line saying how to install it)."""


def check_tensorboard(enabled: bool) -> None:
    """A :class:`TensorBoardMissing` if ``enabled`` and TensorBoard's writer cannot be imported."""
    if not enabled:
        return
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise TensorBoardMissing("report.tensorboard=true needs the tensorboard package, which is not installed: "
                                 f"{TENSORBOARD_HINT}") from None


def device_rows(record: RoundRecord, device_class: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """One ``devices.csv`` row per accepted device of the round ``record`` (:data:`DEVICE_COLUMNS`)."""
    rows = []
    for i, dev in enumerate(record.devices):
        def own(values: list[float]) -> float | str:
            return values[i] if i < len(values) else ""
        rows.append({"round": record.round, "stage": record.stage, "device": dev,
                     "link_class": "" if device_class is None else str(device_class[dev]),
                     "latency_s": own(record.device_latency_s), "energy_j": own(record.device_energy_j),
                     "upload_bits": own(record.device_upload_bits), "samples": own(record.device_samples),
                     "train_loss": own(record.device_loss)})
    return rows


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a ``rounds.csv`` row (its ``round`` left out): the TensorBoard scalars."""
    return {k: float(row[k]) for k in CSV_COLUMNS if k != "round" and isinstance(row.get(k), (int, float))
            and not isinstance(row.get(k), bool) and math.isfinite(row[k])}


class LiveLog:
    """Appends each complete round to ``rounds.csv``, ``devices.csv`` (and TensorBoard) of ``run_dir``.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    config : dict
        The resolved configuration (``config.json``).
    device_class : Sequence or None
        Each device's link class (``devices.csv``'s ``link_class``).
    tensorboard : bool
        Also write TensorBoard event files (:func:`check_tensorboard` first).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], device_class: Sequence[Any] | None = None,
                 tensorboard: bool = False) -> None:
        check_tensorboard(tensorboard)
        self.run_dir = Path(run_dir)
        self.config = config
        self.device_class = device_class
        self.tensorboard = tensorboard
        self.last_round = -1
        self._writer = None

    def start(self, rows: Sequence[dict[str, Any]], history: Sequence[RoundRecord], resumed: bool) -> None:
        """Write ``config.json`` and both CSV files afresh with the rounds so far: none for a new run, the saved
        state's ``rows`` (:func:`fedmoe.federated.report.round_rows`) and round ``history`` for a resumed one."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.run_dir / "config.json", json.dumps(self.config, indent=2).encode())
        write_atomic(self.run_dir / ROUNDS_CSV, csv_text(CSV_COLUMNS, rows, header=True).encode())
        devices = [d for rec in history for d in device_rows(rec, self.device_class)]
        write_atomic(self.run_dir / DEVICES_CSV, csv_text(DEVICE_COLUMNS, devices, header=True).encode())
        self.last_round = max((int(r["round"]) for r in rows), default=-1)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run hides the events its stopped run wrote for the rounds it runs again
            self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR),
                                         purge_step=self.last_round + 1 if resumed else None)

    def append(self, rows: Sequence[dict[str, Any]], history: Sequence[RoundRecord]) -> None:
        """Append the rows of the rounds after the last one written (``rows`` and ``history`` may hold all rounds
        so far) and flush them."""
        new = [r for r in rows if int(r["round"]) > self.last_round]
        if not new:
            return
        with open(self.run_dir / ROUNDS_CSV, "a", newline="") as f:
            f.write(csv_text(CSV_COLUMNS, new, header=False))
            f.flush()
        devices = [d for rec in history if rec.round > self.last_round for d in device_rows(rec, self.device_class)]
        with open(self.run_dir / DEVICES_CSV, "a", newline="") as f:
            f.write(csv_text(DEVICE_COLUMNS, devices, header=False))
            f.flush()
        if self._writer is not None:
            for r in new:
                for tag, value in scalars(r).items():
                    self._writer.add_scalar(f"round/{tag}", value, global_step=int(r["round"]))
            self._writer.flush()
        self.last_round = max(int(r["round"]) for r in new)

    def close(self) -> None:
        """Close the TensorBoard writer (the CSV files are closed after every round)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
