"""The training loop: in-memory mini-batches, validation every epoch, early stopping, resume."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from pricenet.data import Splits
from pricenet.errors import DivergenceError
from pricenet.heads import Head

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


@dataclass
class FitState:
    """Everything about progress that a resumed run needs besides the weights."""

    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_score: list[float] = field(default_factory=lambda: [-math.inf])
    bad_epochs: int = 0
    stopped_early: bool = False
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CURVES})

    def last(self, key: str) -> float:
        values = self.history[key]
        return values[-1] if values else math.nan


class Callback(Protocol):
    """Hooks the trainer calls; every method is optional."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Fits ``model`` on ``splits`` with ``optimizer``/``scheduler``; see :meth:`fit`.

    Batches are slices of a per-epoch permutation of the training tensors, which already
    live on the device: no DataLoader, no per-sample collation, no host sync per batch.
    """

    def __init__(
        self,
        model: nn.Module,
        head: Head,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        splits: Splits,
        *,
        epochs: int,
        batch_size: int,
        patience: int | None = None,
        grad_clip: float | None = None,
        l1: float = 0.0,
        monitor: str = "val_acc",
        seed: int = 0,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.model = model
        self.head = head
        self.criterion = criterion
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.splits = splits
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.grad_clip = grad_clip
        self.l1 = l1
        self.monitor = monitor
        self.callbacks = list(callbacks or [])
        self.state = FitState()
        self.best_model_state: dict[str, torch.Tensor] = copy.deepcopy(model.state_dict())
        self.generator = torch.Generator().manual_seed(seed)
        self.device = splits.x_train.device
        self.targets = head.encode(splits.y_train)
        self.val_split = "val" if len(splits.y_val) else "train"
        self._l1_params = [p for n, p in model.named_parameters() if n.endswith("weight")]
        self._skip_single = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """Loss, accuracy and predicted classes of the model in eval mode on ``(x, y)``."""
        was_training = self.model.training
        self.model.eval()
        out = self.model(x)
        loss = self.criterion(out, self.head.encode(y))
        pred = self.head.decode(out)
        acc = (pred == y).float().mean()
        self.model.train(was_training)
        loss_v, acc_v = torch.stack([loss.float(), acc]).tolist()
        return loss_v, acc_v, pred

    def monitor_value(self) -> float:
        """The latest value of the monitored validation metric (what a sweeper optimizes)."""
        return self.state.history[self.monitor][-1]

    def _score(self, loss: float, acc: float) -> list[float]:
        """Higher is better; accuracy ties are broken by the lower loss."""
        return [acc, -loss] if self.monitor.endswith("acc") else [-loss]

    # ------------------------------------------------------------------ training

    def _train_epoch(self) -> float:
        """One pass over the shuffled training rows; returns the mean training loss."""
        self.model.train()
        n = len(self.targets)
        perm = torch.randperm(n, generator=self.generator).to(self.device, non_blocking=True)
        # Two gathers per epoch; the batches are then views, not per-step index copies.
        x_batches = torch.split(self.splits.x_train[perm], self.batch_size)
        t_batches = torch.split(self.targets[perm], self.batch_size)
        if self._skip_single and len(x_batches[-1]) < 2:  # BatchNorm needs 2 rows
            x_batches, t_batches = x_batches[:-1], t_batches[:-1]
        losses = []
        for xb, tb in zip(x_batches, t_batches, strict=True):
            loss = self.criterion(self.model(xb), tb)
            if self.l1:
                loss = loss + self.l1 * sum(p.abs().sum() for p in self._l1_params)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            losses.append(loss.detach())
        sizes = torch.tensor([len(b) for b in x_batches], dtype=torch.float32, device=self.device)
        return float(torch.stack(losses).float() @ sizes / sizes.sum())

    def _emit(self, hook: str) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    def fit(self) -> FitState:
        """Train until ``epochs`` or early stopping; keeps the best weights in memory.

        Raises :class:`DivergenceError` when a loss stops being finite; the last good epoch's
        checkpoint (written by a callback) is left untouched.
        """
        state = self.state
        self._emit("on_fit_start")
        while state.epoch < self.epochs and not state.stopped_early:
            epoch = state.epoch + 1
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss = self._train_epoch()
            if not math.isfinite(train_loss):
                raise DivergenceError(
                    f"training diverged at epoch {epoch}: train loss is {train_loss} "
                    f"(lr={lr:g}); try a lower optim.lr or trainer.grad_clip"
                )
            _, train_acc, _ = self.evaluate(self.splits.x_train, self.splits.y_train)
            if self.val_split == "val":
                val_loss, val_acc, _ = self.evaluate(self.splits.x_val, self.splits.y_val)
            else:
                val_loss, val_acc = train_loss, train_acc
            if not math.isfinite(val_loss):
                raise DivergenceError(f"training diverged at epoch {epoch}: val loss is {val_loss}")
            for key, value in zip(
                CURVES, (train_loss, train_acc, val_loss, val_acc, lr), strict=True
            ):
                state.history[key].append(value)
            state.epoch = epoch

            score = self._score(val_loss, val_acc)
            # Without a validation split nothing is selected: the last epoch is kept.
            if score > state.best_score or self.val_split == "train":
                state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
                self.best_model_state = copy.deepcopy(self.model.state_dict())
            else:
                state.bad_epochs += 1
                if self.patience is not None and state.bad_epochs >= self.patience:
                    state.stopped_early = True
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(score[0])
            else:
                self.scheduler.step()
            self._emit("on_epoch_end")
        self._emit("on_fit_end")
        return state

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, scheduler, progress and RNG: enough to resume exactly."""
        s = self.state
        state = {
            "model": self.model.state_dict(),
            "best_model": self.best_model_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "fit": {
                "epoch": s.epoch,
                "best_epoch": s.best_epoch,
                "best_score": list(s.best_score),
                "bad_epochs": s.bad_epochs,
                "stopped_early": s.stopped_early,
                "history": {k: list(v) for k, v in s.history.items()},
            },
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (tensors may come on any device)."""
        self.model.load_state_dict(state["model"])
        self.best_model_state = {k: v.to(self.device) for k, v in state["best_model"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = FitState(**state["fit"])
        # RNG states are byte tensors that torch only accepts on the CPU
        self.generator.set_state(state["rng"]["generator"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
