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
from pricenet.errors import shown
from pricenet.state_checks import (
    check_int,
    check_list,
    check_mapping,
    check_number,
    check_scores,
    check_tensor,
    differences,
    fail,
    replay,
)


def score(monitor: str, loss: float, acc: float) -> list[float]:
    """Higher is better; accuracy ties are broken by the lower loss."""
    return [acc, -loss] if monitor.endswith("acc") else [-loss]


def score_width(monitor: str) -> int:
    """How many numbers :func:`score` gives for ``monitor``."""
    return 2 if monitor.endswith("acc") else 1


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

    def check_state(self, state: Any, where: str, key: str = "best_weights") -> None:
        """Refuse a saved state that does not fit: one score per member, this network's
        weights (shapes, dtypes, finite)."""
        state = check_mapping(state, ("best_score", "weights"), where, key)
        members = len(self.has_val)
        check_scores(
            state["best_score"], members, score_width(self.monitor), where, f"{key}.best_score"
        )
        weights = check_mapping(state["weights"], list(self.weights), where, f"{key}.weights")
        for name, reference in self.weights.items():
            check_tensor(weights[name], reference, where, f"{key}.weights.{name}")

    def load_state_dict(self, state: dict[str, Any], where: str = "trainer state") -> None:
        self.check_state(state, where)
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

    def check_state(self, state: Any, where: str, key: str = "early_stopping") -> None:
        """Refuse a saved state that does not fit: one score and one count of epochs without
        improvement (``0..patience``) per member."""
        state = check_mapping(state, ("best_score", "bad_epochs"), where, key)
        members = len(self.has_val)
        check_scores(
            state["best_score"], members, score_width(self.monitor), where, f"{key}.best_score"
        )
        high = None if self.patience is None else self.patience
        for m, count in enumerate(
            check_list(state["bad_epochs"], members, where, f"{key}.bad_epochs")
        ):
            check_int(count, 0, high, where, f"{key}.bad_epochs[{m}]")

    def load_state_dict(self, state: dict[str, Any], where: str = "trainer state") -> None:
        self.check_state(state, where)
        self.best_score = [list(s) for s in state["best_score"]]
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
