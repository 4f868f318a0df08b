"""The training log: a live bar on a terminal, sparse lines otherwise, and a CSV that mirrors the history."""

from __future__ import annotations

import csv
import io

from deployopt.training.log import CSV_COLUMNS, TrainLog


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _row(epoch: int) -> dict:
    return {
        "epoch": epoch, "step": 10 * epoch, "lr": 0.01, "train_loss": 1.0 / epoch, "train_accuracy": 50.0 + epoch,
        "val_accuracy": 60.0 + epoch, "seconds": 0.5 * epoch,
    }  # fmt: skip


def test_terminal_gets_a_live_bar_with_loss_and_accuracy():
    stream = _Terminal()
    log = TrainLog(stream=stream)
    log.batch(epoch=2, epochs=5, done=6, total=12, loss=0.4321, accuracy=87.5)
    text = stream.getvalue()
    assert text.startswith("\r  epoch 2/5 [" + "#" * 12 + "-" * 12 + "] 6/12") and "loss 0.432  acc 87.5%" in text


def test_a_pipe_gets_every_tenth_epoch_the_last_and_notes_only():
    lines: list[str] = []
    log = TrainLog(stream=io.StringIO(), message=lines.append)
    history = []
    for epoch in range(1, 13):
        history.append(_row(epoch))
        log.epoch(history[-1], history, epochs=12, note=" (early stop)" if epoch == 3 else "")
    assert [line.split("/")[0].split()[-1] for line in lines] == ["3", "10", "12"]


def test_csv_is_rewritten_from_the_history(tmp_path):
    path = tmp_path / "metrics.csv"
    log = TrainLog(csv_path=path, stream=io.StringIO(), message=lambda text: None)
    history = [_row(1), _row(2), _row(3)]
    log.epoch(history[-1], history, epochs=3)
    log.epoch(history[1], history[:2], epochs=3)  # a resumed run that saved after epoch 2 rewrites, not appends
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and [row["epoch"] for row in rows] == ["1", "2"]
