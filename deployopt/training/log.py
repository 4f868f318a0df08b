"""What a training run shows and records: a progress bar, a metrics CSV, optional TensorBoard logs.

The CSV is rewritten whole (atomically) from the run's history after each epoch, so after a crash and
``--resume`` it holds exactly the epochs the resumed state has — never a duplicated or half-written row.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from deployopt.errors import BackendUnavailableError
from deployopt.fsutil import atomic_path

CSV_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_accuracy", "val_accuracy", "seconds")
BAR_WIDTH = 24


class TrainLog:
    """Progress on ``stream`` (a live bar on a terminal, a line per ``every`` epochs otherwise) plus files."""

    def __init__(
        self,
        *,
        csv_path: Path | None = None,
        tensorboard_dir: Path | None = None,
        stream: TextIO | None = None,
        message: Callable[[str], None] | None = None,
        every: int = 10,
    ) -> None:
        self.csv_path = csv_path
        self.stream = stream or sys.stderr
        self.message = message or (lambda text: print(text, file=self.stream))
        self.every = every
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise BackendUnavailableError(
                    f"--tensorboard needs the tensorboard package ({exc}); "
                    "install it with: pip install 'deployopt[train]'"
                ) from exc
            self._writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def batch(self, epoch: int, epochs: int, done: int, total: int, loss: float, accuracy: float) -> None:
        if not self.live:
            return
        filled = BAR_WIDTH * done // max(1, total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(f"\r  epoch {epoch}/{epochs} [{bar}] {done}/{total}  loss {loss:.3f}  acc {accuracy:.1f}%")
        self.stream.flush()

    def epoch(self, row: dict, history: list[dict], epochs: int, note: str = "") -> None:
        """Report one finished epoch; ``history`` (this row included) is what the CSV must hold."""
        line = (
            f"  epoch {row['epoch']:3d}/{epochs}  loss {row['train_loss']:.3f}  train {row['train_accuracy']:.2f}%"
            f"  val {row['val_accuracy']:.2f}%  lr {row['lr']:.2g}{note}"
        )
        if self.live:
            self.stream.write("\r\033[K")
        if self.live or note or row["epoch"] % self.every == 0 or row["epoch"] == epochs:
            self.message(line)
        self.write_csv(history)
        if self._writer is not None:
            for key in ("train_loss", "train_accuracy", "val_accuracy", "lr"):
                self._writer.add_scalar(key, row[key], row["step"])
            self._writer.flush()

    def write_csv(self, history: list[dict]) -> None:
        if self.csv_path is None:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in CSV_COLUMNS} for row in history)
        with atomic_path(self.csv_path) as tmp:
            tmp.write_text(text.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def quiet_log() -> TrainLog:
    """No output and no files (tests, nested fine-tunes that report through their caller)."""
    return TrainLog(stream=io.StringIO(), message=lambda text: None)
