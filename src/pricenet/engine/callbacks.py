"""Training policy as callbacks that keep their own state (skorch style).

A run's callbacks come from the ``callbacks`` config group (``conf/callbacks/default.yaml``):
each node is a ``_partial_: true`` factory that the run completes with its
:class:`RunContext`, or a plain ``_target_`` built as it is. The trainer calls ``bind``
(once, before any state is loaded), ``on_fit_start``, ``on_epoch_end`` and ``on_fit_end``.
After an epoch, ``trainer.trained`` lists the members that trained in it and
``trainer.improved`` those whose monitored score improved (computed once, by the trainer).

Every member of a packed fit is judged on its own. Callbacks whose state an exact resume needs
set ``stateful = True`` and a ``name`` and expose ``state_dict()`` / ``check_state()`` /
``load_state_dict()``. ``per_fit = True`` marks policy that belongs to one fit: a run whose
members train one by one gives each its own instance; the others see the whole run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pricenet.checkpoints.checkpoint import LAST, save_checkpoint
from pricenet.checkpoints.state_checks import (
    check_int,
    check_list,
    check_mapping,
    check_number,
    check_tensor,
    differences,
    fail,
    replay,
)
from pricenet.config.monitor import Monitor
from pricenet.errors import shown


@dataclass
class RunContext:
    """What a run hands its callback factories (``conf/callbacks``: ``_partial_: true`` nodes,
    completed as ``factory(run)``): the run folder (None for a fit that writes no files, such
    as ``cv.keep=refit``'s), the checkpoint description, how the console reports, the run's
    name, its Hydra config (None outside a Hydra job) and its scheduler factory."""

    run_dir: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    multirun: bool = False
    name: str = "default"
    hydra: Any = None
    monitor: Monitor = Monitor("val_acc")
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None


class BestWeights:
    """Keeps each member's weights from its best epoch (the trainer's ``improved`` members)."""

    name = "best_weights"
    stateful = True
    per_fit = True

    def __init__(self, run: RunContext | None = None) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def bind(self, trainer: Any) -> None:
        self.weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def on_epoch_end(self, trainer: Any) -> None:
        improved = trainer.improved
        if not improved:
            return
        everyone = len(improved) == trainer.count
        with torch.no_grad():
            for key, value in trainer.model.state_dict().items():
                if everyone:
                    self.weights[key].copy_(value)
                else:
                    self.weights[key][improved] = value[improved]

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def check_state(self, state: Any, where: str, key: str, fit: Any = None) -> None:
        """Refuse a saved state that does not fit: this network's weights (shapes, dtypes,
        finite)."""
        state = check_mapping(state, ("weights",), where, key)
        weights = check_mapping(state["weights"], list(self.weights), where, f"{key}.weights")
        for name, reference in self.weights.items():
            check_tensor(weights[name], reference, where, f"{key}.weights.{name}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state["weights"].items():
            self.weights[key].copy_(value)


class EarlyStopping:
    """Stops a member after ``patience`` epochs without improving its own monitored score."""

    name = "early_stopping"
    stateful = True
    per_fit = True

    def __init__(self, run: RunContext | None = None, patience: int | None = None) -> None:
        self.patience = patience
        self.bad_epochs: list[int] = []

    def bind(self, trainer: Any) -> None:
        self.bad_epochs = [0] * trainer.count

    def on_epoch_end(self, trainer: Any) -> None:
        improved = set(trainer.improved)
        for m in trainer.trained:
            if m in improved:
                self.bad_epochs[m] = 0
                continue
            self.bad_epochs[m] += 1
            if self.patience is not None and self.bad_epochs[m] >= self.patience:
                trainer.state.members[m].stopped_early = True

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": list(self.bad_epochs)}

    def check_state(self, state: Any, where: str, key: str, fit: Any = None) -> None:
        """Refuse a saved state that does not fit: per member a count of epochs without
        improvement, ``0..patience`` and at most the member's epochs."""
        state = check_mapping(state, ("bad_epochs",), where, key)
        counts = check_list(state["bad_epochs"], len(self.bad_epochs), where, f"{key}.bad_epochs")
        for m, count in enumerate(counts):
            check_int(count, 0, self.patience, where, f"{key}.bad_epochs[{m}]")
            if fit is not None and count > fit.members[m].epoch:
                raise fail(
                    where,
                    f"{key}.bad_epochs[{m}]",
                    f"is {count}, more than the member's {fit.members[m].epoch} epoch(s)",
                )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = list(state["bad_epochs"])


# What ReduceLROnPlateau learns from the metrics it sees: checked by range, not replayed.
PLATEAU_COUNTERS = ("last_epoch", "num_bad_epochs", "cooldown_counter", "best", "_last_lr")


def shown_value(value: Any) -> str:
    """A state value quoted in an error (a tensor by its shape, not its values)."""
    if isinstance(value, torch.Tensor):
        return f"a {tuple(value.shape)} tensor"
    return shown(value)


class SchedulerStep:
    """Steps the lr scheduler once per epoch; ReduceLROnPlateau gets the (single) model's score."""

    name = "scheduler"
    stateful = True
    per_fit = True

    def __init__(self, run: RunContext | None = None, scheduler: Any = None) -> None:
        self.factory = run.scheduler if run is not None else None
        self.scheduler = scheduler
        self.plateau = False

    def bind(self, trainer: Any) -> None:
        if self.scheduler is None:
            if self.factory is None:
                raise ValueError("SchedulerStep needs a scheduler or the run's scheduler factory")
            self.scheduler = self.factory(trainer.optimizer)
        self.plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and trainer.count > 1:
            raise ValueError(
                "ReduceLROnPlateau follows one model's own metric: fit the members sequentially"
            )

    def on_epoch_end(self, trainer: Any) -> None:
        if self.plateau:
            member = trainer.state.members[0]
            score = trainer.monitor.epoch_score(member.last("val_loss"), member.last("val_acc"))
            self.scheduler.step(score[0])
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def check_state(self, state: Any, where: str, key: str, fit: Any) -> list:
        """:meth:`expected_groups` at the saved fit's epoch."""
        return self.expected_groups(state, fit.epoch, where, key)

    def expected_groups(self, state: Any, epoch: int, where: str, key: str = "scheduler") -> list:
        """Check a saved scheduler state against this (freshly built) scheduler after ``epoch``
        steps, and return the optimizer's param groups as they must be then: the config's
        hyper-parameters and the lr the schedule gives at that epoch.

        A schedule of the epoch alone (step, cosine, ...) is replayed, and the saved state must
        equal the replay. ReduceLROnPlateau's depends on the metrics seen: its settings must
        equal the config's, its counters lie in range and its lr between min_lr and the
        config's lr.
        """
        optimizer, scheduler = replay(
            self.scheduler.optimizer, self.scheduler, 0 if self.plateau else epoch
        )
        expected = scheduler.state_dict()
        state = check_mapping(state, list(expected), where, key)
        groups = [dict(g) for g in optimizer.param_groups]
        dynamic = set(PLATEAU_COUNTERS) if self.plateau else set()
        differ = differences(state, expected, dynamic)
        if differ:
            k = differ[0]
            raise fail(
                where,
                f"{key}.{k}",
                f"is {shown_value(state[k])}, but the config's scheduler has "
                f"{shown_value(expected[k])} at epoch {epoch}",
            )
        if not self.plateau:
            return groups
        check_int(state["last_epoch"], epoch, epoch, where, f"{key}.last_epoch")
        check_int(state["num_bad_epochs"], 0, epoch, where, f"{key}.num_bad_epochs")
        check_int(
            state["cooldown_counter"], 0, expected["cooldown"], where, f"{key}.cooldown_counter"
        )
        best = check_number(state["best"], where, f"{key}.best", finite=False)
        if math.isinf(best) and best != expected["mode_worse"]:
            raise fail(where, f"{key}.best", f"is {best}, expected a finite number")
        lrs = check_list(state["_last_lr"], len(groups), where, f"{key}._last_lr")
        for g, (lr, group) in enumerate(zip(lrs, groups, strict=True)):
            low, high = expected["min_lrs"][g], group["lr"]
            if not low <= check_number(lr, where, f"{key}._last_lr[{g}]") <= high:
                raise fail(where, f"{key}._last_lr[{g}]", f"is {lr}, expected {low}..{high}")
            group["lr"] = lr
        return groups

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a state that :meth:`expected_groups` accepted."""
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


def checkpointer(run: RunContext, interval_s: float = 30.0) -> Checkpointer | None:
    """``last.pt`` in the run folder (none for a fit without one)."""
    return None if run.run_dir is None else Checkpointer(run.run_dir, run.meta, interval_s)
