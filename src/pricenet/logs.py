"""Per-epoch reporting callbacks: console lines and ``metrics.csv``."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from pricenet.engine import CURVES

log = logging.getLogger("pricenet")


class ConsoleLogger:
    """One log line every ``every`` epochs (and the last), or none when ``every`` is 0."""

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_epoch_end(self, trainer: Any) -> None:
        s = trainer.state
        if not self.every or (s.epoch % self.every and s.epoch != trainer.epochs):
            return
        log.info(
            "epoch %3d/%d  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  lr %.3g",
            s.epoch,
            trainer.epochs,
            *(s.last(k) for k in CURVES),
        )


class CsvLogger:
    """Appends one row per epoch to ``metrics.csv`` (rewritten whole on resume)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Any) -> None:
        history = trainer.state.history
        with self.path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", *CURVES])
            for i in range(trainer.state.epoch):
                writer.writerow([i + 1, *(history[k][i] for k in CURVES)])

    def on_epoch_end(self, trainer: Any) -> None:
        s = trainer.state
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([s.epoch, *(s.last(k) for k in CURVES)])


def reporters(report: Any, run_dir: str | Path, multirun: bool = False) -> list[Any]:
    """The trainer callbacks that show progress, as ``cfg.report`` asks."""
    return [ConsoleLogger(every=0 if report.progress == "none" else 10)]
