"""Training policy as callbacks that keep their own state (skorch style).

Every member of a packed fit is judged on its own: its own best score, patience count and best
weights. The trainer calls ``on_fit_start``, ``on_epoch_end`` and ``on_fit_end``; after an
epoch, ``trainer.trained`` lists the members that trained in it. Callbacks with state for an
exact resume expose ``state_dict()`` / ``load_state_dict()``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from pricenet.checkpoint import LAST, save_checkpoint


def score(monitor: str, loss: float, acc: float) -> list[float]:
    """Higher is better; accuracy ties are broken by the lower loss."""
    return [acc, -loss] if monitor.endswith("acc") else [-loss]


def _member_score(trainer: Any, monitor: str, m: int) -> list[float]:
    member = trainer.state.members[m]
    return score(monitor, member.last("val_loss"), member.last("val_acc"))


class BestWeights:
    """Keeps each member's weights from its best epoch (its last one without a validation split)."""

    def __init__(self, model: torch.nn.Module, monitor: str, has_val: list[bool]) -> None:
        self.monitor = monitor
        self.has_val = has_val
        self.best_score: list[list[float]] = [[-math.inf] for _ in has_val]
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_epoch_end(self, trainer: Any) -> None:
        improved = []
        for m in trainer.trained:
            current = _member_score(trainer, self.monitor, m)
            if current > self.best_score[m] or not self.has_val[m]:
                self.best_score[m] = current
                trainer.state.members[m].best_epoch = trainer.state.members[m].epoch
                improved.append(m)
        if not improved:
            return
        everyone = len(improved) == len(self.has_val)
        with torch.no_grad():
            for key, value in trainer.model.state_dict().items():
                if everyone:
                    self.weights[key].copy_(value)
                else:
                    self.weights[key][improved] = value[improved]

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": [list(s) for s in self.best_score], "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = [list(s) for s in state["best_score"]]
        for key, value in state["weights"].items():
            self.weights[key].copy_(value)


class EarlyStopping:
    """Stops a member after ``patience`` epochs without improving its own monitored score."""

    def __init__(self, patience: int | None, monitor: str, has_val: list[bool]) -> None:
        self.patience = patience
        self.monitor = monitor
        self.has_val = has_val
        self.best_score: list[list[float]] = [[-math.inf] for _ in has_val]
        self.bad_epochs = [0 for _ in has_val]

    def on_epoch_end(self, trainer: Any) -> None:
        for m in trainer.trained:
            current = _member_score(trainer, self.monitor, m)
            # Without a validation split nothing is selected, so nothing stops early either.
            if current > self.best_score[m] or not self.has_val[m]:
                self.best_score[m], self.bad_epochs[m] = current, 0
                continue
            self.bad_epochs[m] += 1
            if self.patience is not None and self.bad_epochs[m] >= self.patience:
                trainer.state.members[m].stopped_early = True

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": [list(s) for s in self.best_score],
            "bad_epochs": list(self.bad_epochs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = [list(s) for s in state["best_score"]]
        self.bad_epochs = list(state["bad_epochs"])


class SchedulerStep:
    """Steps the lr scheduler once per epoch; ReduceLROnPlateau gets the (single) model's score."""

    def __init__(self, scheduler: Any, monitor: str, members: int) -> None:
        self.scheduler = scheduler
        self.monitor = monitor
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and members > 1:
            raise ValueError(
                "ReduceLROnPlateau follows one model's own metric: fit the members sequentially"
            )

    def on_epoch_end(self, trainer: Any) -> None:
        if self.plateau:
            self.scheduler.step(_member_score(trainer, self.monitor, 0)[0])
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


class Checkpointer:
    """``last.pt`` at most every ``interval_s`` seconds of wall time, at the end of the fit and
    when the process is asked to stop (``interval_s=0``: after every epoch).

    ``last.pt`` holds ``meta`` (network, schema, preprocessors, settings) and the full trainer
    state, so it can resume the run or, if the run never finished, predict with its last
    weights. The run's model to predict with, ``best.pt``, is written once the fit is
    evaluated, by the pipeline.
    """

    def __init__(self, run_dir: str | Path, meta: dict[str, Any], interval_s: float = 30.0) -> None:
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.interval_s = interval_s
        self.saved_epoch = -1
        self.saved_at = -math.inf

    def _save(self, trainer: Any) -> None:
        state = trainer.state
        payload = {"epoch": state.epoch, "trainer": trainer.state_dict()}
        save_checkpoint(self.run_dir / LAST, {**self.meta, **payload})
        self.saved_epoch = state.epoch
        self.saved_at = time.monotonic()

    def on_fit_start(self, trainer: Any) -> None:
        """A resumed run's own folder holds its state from the start."""
        if trainer.state.epoch > 0:
            self._save(trainer)
        self.saved_at = time.monotonic()

    def on_epoch_end(self, trainer: Any) -> None:
        if time.monotonic() - self.saved_at >= self.interval_s:
            self._save(trainer)

    def on_fit_end(self, trainer: Any) -> None:
        if trainer.state.epoch != self.saved_epoch:
            self._save(trainer)
