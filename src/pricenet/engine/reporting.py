"""Per-epoch reporting callbacks: progress on the terminal, ``metrics.csv`` and TensorBoard.

The progress bar writes to the terminal only (stderr), never through ``logging``: Hydra sends
log records to the console *and* ``train.log``, so a bar drawn through logging would fill the
log file with frames and show every epoch twice next to the ``lines`` reporter.
"""

from __future__ import annotations

import csv
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from pricenet.atomic import reporting_write_errors
from pricenet.engine.callbacks import RunContext
from pricenet.engine.fit_state import CURVES

log = logging.getLogger("pricenet")

# metrics history key -> TensorBoard tag (grouped so loss and accuracy each get one card)
TENSORBOARD_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "acc/train",
    "val_acc": "acc/val",
    "lr": "lr",
}


def report_due(trainer: Any) -> bool:
    """True about ten times per run, whatever its length, and at its last epoch."""
    s = trainer.state
    last = s.epoch >= trainer.epochs or s.stopped_early
    return last or s.epoch % max(1, trainer.epochs // 10) == 0


def epoch_fields(trainer: Any) -> list[str]:
    """``["epoch 12/60", "train_loss 0.8123", "val_acc 0.7412", "lr 0.001"]`` (last epoch)."""
    s = trainer.state
    return [
        f"epoch {s.epoch:>{len(str(trainer.epochs))}}/{trainer.epochs}",
        f"train_loss {s.last('train_loss'):.4f}",
        f"val_acc {s.last('val_acc'):.4f}",
        f"lr {s.last('lr'):.3g}",
    ]


class ConsoleLogger:
    """Log records (console and ``train.log``) about ten times per run and at the last epoch."""

    def on_epoch_end(self, trainer: Any) -> None:
        s = trainer.state
        if report_due(trainer):
            log.info(
                "epoch %3d/%d  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  "
                "lr %.3g",
                s.epoch,
                trainer.epochs,
                *(s.last(k) for k in CURVES),
            )


class ProgressBar:
    """A tqdm bar redrawn in place on a terminal; a plain line every ~10% of the epochs
    otherwise (a log file or a pipe gets no carriage returns).

    Redraws are throttled to ``min_interval`` seconds (tqdm's ``mininterval``), so that fast
    epochs cost nothing.
    """

    width = 10  # characters of the bar itself: the whole line fits 80 columns

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.min_interval = min_interval
        self.bar: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        if not self.tty:
            return
        from tqdm import tqdm

        digits = len(str(trainer.epochs))
        self.bar = tqdm(
            total=trainer.epochs,
            initial=trainer.state.epoch,
            file=self.stream,
            ascii=".#",
            mininterval=self.min_interval,
            ncols=shutil.get_terminal_size().columns - 1,
            bar_format=(
                f"epoch {{n_fmt:>{digits}}}/{{total_fmt}} [{{bar:{self.width}}}] {{postfix}} "
                "{elapsed}<{remaining}"
            ),
        )

    def on_epoch_end(self, trainer: Any) -> None:
        s = trainer.state
        fields = epoch_fields(trainer) + (["(early stop)"] if s.stopped_early else [])
        if self.bar is None:
            if report_due(trainer):
                self.stream.write("  ".join(fields) + "\n")
                self.stream.flush()
            return
        self.bar.set_postfix_str("  ".join(fields[1:]), refresh=False)
        self.bar.update(s.epoch - self.bar.n)

    def close(self) -> None:
        """End the bar's line, so whatever is printed next (summary or error) starts clean."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CsvLogger:
    """Appends one row per epoch to ``metrics.csv`` (rewritten whole on resume)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Any) -> None:
        history = trainer.state.history
        with reporting_write_errors(self.path), self.path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", *CURVES])
            for i in range(trainer.state.epoch):
                writer.writerow([i + 1, *(history[k][i] for k in CURVES)])

    def on_epoch_end(self, trainer: Any) -> None:
        s = trainer.state
        with reporting_write_errors(self.path), self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([s.epoch, *(s.last(k) for k in CURVES)])


def tensorboard_name(overrides: str) -> str:
    """A run's folder name under ``tensorboard/``: its overrides (``optim=sgd,...``) or default.

    A ``/`` in a value would nest folders (or, leading, escape the run folder), and very long
    override lists would exceed the file system's 255-byte name limit.
    """
    name = overrides.replace("/", "_").replace("\\", "_").strip(". ") or "default"
    return name[:200]


class TensorBoardLogger:
    """Scalars per epoch (loss, accuracy, lr) into event files under ``log_dir``.

    ``torch.utils.tensorboard`` is imported here, at the start of the fit, so runs without it
    (``report.tensorboard=false``, ``~callbacks.tensorboard``, ``--help``) never pay for it.
    A resumed run writes the restored history first, so its event file holds every epoch once.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for epoch in range(1, trainer.state.epoch + 1):
            self._write(trainer.state.history, epoch)

    def on_epoch_end(self, trainer: Any) -> None:
        self._write(trainer.state.history, trainer.state.epoch)

    def _write(self, history: dict[str, list[float]], epoch: int) -> None:
        for key, tag in TENSORBOARD_TAGS.items():
            self.writer.add_scalar(tag, history[key][epoch - 1], global_step=epoch)

    def close(self) -> None:
        """Flush and close the event file (also after a diverged or interrupted fit)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def progress(run: RunContext, mode: str = "auto") -> ProgressBar | ConsoleLogger | None:
    """``report.progress``: ``auto`` is the bar in a single run and nothing per epoch in a
    multirun (the pipeline logs one summary line per job); ``bar`` and ``lines`` force one;
    ``none``."""
    if mode == "bar" or (mode == "auto" and not run.multirun):
        return ProgressBar()
    if mode == "lines":
        return ConsoleLogger()
    return None


def metrics_csv(run: RunContext) -> CsvLogger | None:
    """``metrics.csv`` in the run folder (none for a fit without one)."""
    return None if run.run_dir is None else CsvLogger(Path(run.run_dir) / "metrics.csv")


def tensorboard(run: RunContext, enabled: bool = True) -> TensorBoardLogger | None:
    """Event files in ``<run>/tensorboard/<the run's overrides>`` (``report.tensorboard``)."""
    if not enabled or run.run_dir is None:
        return None
    return TensorBoardLogger(Path(run.run_dir) / "tensorboard" / tensorboard_name(run.name))


def close_reporters(callbacks: list[Any]) -> None:
    """Finish every callback that holds a resource (the bar's line, TensorBoard's event
    file): its ``close()``, however the fit ended."""
    for callback in callbacks:
        close = getattr(callback, "close", None)
        if close is not None:
            close()
