"""Pruning: a job of an Optuna search reports its monitored metric every epoch and stops early
when the study's pruner says the trial is hopeless.

The job finds its trial through the storage and ``hydra.sweeper.trial`` (set by pricenet's
sweeper), so this works in the sweeper's process (basic launcher) and in any other (joblib,
submitit). optuna is imported only for such a job: plain runs do not need it installed.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from pricenet.engine.callbacks import RunContext

if TYPE_CHECKING:
    import optuna


class OptunaPruning:
    """Trainer callback: report ``monitor_value()`` at each epoch, raise ``TrialPruned`` if told.

    After pruning, :attr:`pruned` holds the job's record for ``metrics.json``.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.started = time.perf_counter()
        self.pruned: dict[str, Any] | None = None

    def on_epoch_end(self, trainer: Any) -> None:
        import optuna

        epoch, value = trainer.state.epoch, trainer.monitor_value()
        self.trial.report(value, step=epoch)
        if not self.trial.should_prune():
            return
        reason = f"pruned at epoch {epoch} ({self.monitor} {value:.4f})"
        self.pruned = {
            "status": "pruned",
            "epochs_run": epoch,
            "monitor": self.monitor,
            "last_value": value if math.isfinite(value) else None,
            "error": reason,
            "wall_time_s": round(time.perf_counter() - self.started, 3),
        }
        pruned = optuna.TrialPruned(reason)
        pruned.record = self.pruned  # metrics.json's record, for the job that catches it
        raise pruned


def optuna_pruning(run: RunContext) -> OptunaPruning | None:
    """The pruning callback when this job is a trial of pricenet's Optuna sweeper, else None."""
    if run.hydra is None:
        return None
    sweeper = run.hydra.sweeper
    if OmegaConf.select(sweeper, "trial", default=None) is None:
        return None
    from hydra_plugins.pricenet_optuna_sweeper._study import open_trial

    return OptunaPruning(open_trial(sweeper, run.hydra.sweep.dir), run.monitor.name)
