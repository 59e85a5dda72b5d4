"""The training loop: M >= 1 packed models, each with its own rows, in one loop.

Interface (what the pipeline builds on)::

    members = [MemberData(x_train, y_train, x_val, y_val), ...]   # one per model, on the device
    trainer = Trainer(model, head, criterion, optimizer, scheduler, members,
                      epochs=..., batch_size=..., patience=..., grad_clip=..., l1=...,
                      monitor="val_acc", generators=[torch.Generator().manual_seed(s), ...],
                      callbacks=[...])
    state = trainer.fit()          # FitState: .members[m] holds epoch, best_epoch, history,
                                   # stopped_early, error (set when that member diverged)
    trainer.state.epoch            # epochs completed (max over members)
    trainer.state.history          # mean curves over the members that trained each epoch
    trainer.monitor_value()        # latest monitored value, mean over non-diverged members
    trainer.best_model()           # a PackedMLP: every member with its own best weights
    trainer.evaluate(xs, ys)       # per member (loss, acc, pred) with the current weights
    trainer.state_dict() / load_state_dict(state)   # exact resume; every value checked first

How members stay independent:

- ``model`` is a :class:`~pricenet.packed.PackedMLP`: weights ``[M, ...]``. Rows are padded to
  the longest member and masked; member ``m``'s loss is the masked mean over its rows and the
  loss that is backpropagated is the SUM over members, so each member's gradient is its own.
- Member ``m``'s generator draws, each epoch, its batch order (``randperm``) and then its noise
  (dropout masks, RReLU slopes) for the whole epoch; its init was drawn from it too
  (``model.build_model``). Nothing else draws from it, so member ``m`` sees exactly what it
  would see trained alone.
- Elementwise optimizers (SGD, momentum, Adagrad, RMSprop, Adam, AdamW) on packed tensors are
  M independent optimizers. Gradient clipping is per member (the norm of its slice), L1 is a
  per-member term, weight decay is elementwise.
- A member without a batch at a step (fewer rows than the others), one that stopped early and
  one that diverged are not updated: their parameter and optimizer-state slices are copied
  before the step and written back after it. Optimizers that count steps (Adam's bias
  correction) keep one counter per parameter tensor, so the trainer keeps each member's own
  step count, and when active members' counts differ it steps once per distinct count (with
  the other members' slices restored in between). Both paths run only at steps where they are
  needed; a plain step is one ``optimizer.step()``.
- Per-step work is what a plain loop does: the epoch's batches, masks and noise are made and
  split into per-step views once per epoch; a step where every member has a full batch skips
  the mask in its loss (the same sum and division, so the same bits); the layers are called
  without torch's hook dispatch (``PackedMLP(..., direct=True)``); grads are cleared by
  setting them to None. M = 1 runs the same loop and pays nothing for packing.
- Divergence (a non-finite train or val loss) freezes that member and records the error; the
  others go on. When every member has diverged, :class:`~pricenet.errors.DivergenceError`.

What cannot be packed exactly (:func:`can_pack`) is fitted as M separate M=1 trainers by the
caller: ReduceLROnPlateau (its lr follows one model's metric), L-BFGS (its line search couples
the members it steps; the trainer passes it a closure), any optimizer not known to be
elementwise.

SIGTERM/SIGINT during :meth:`Trainer.fit` finish the current epoch, run ``on_fit_end`` (the
checkpointer writes ``last.pt``) and raise :class:`FitInterrupted`.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pricenet.callbacks import BestWeights, EarlyStopping, SchedulerStep
from pricenet.checkpoint import check_tensors
from pricenet.errors import DivergenceError, shown
from pricenet.heads import Head
from pricenet.packed import PackedBatchNorm1d, PackedMLP
from pricenet.state_checks import (
    check_int,
    check_list,
    check_mapping,
    check_number,
    check_optimizer_state,
    check_rng_state,
    fail,
)

log = logging.getLogger("pricenet")

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")

# Optimizers whose step treats every element on its own: packed, they are M optimizers.
ELEMENTWISE_OPTIMIZERS = frozenset(
    f"torch.optim.{name}" for name in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")
)
# Optimizers whose step() needs a closure that re-evaluates the loss.
CLOSURE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.LBFGS,)


def can_pack(cfg: Mapping) -> tuple[bool, str]:
    """Whether the members of ``cfg`` can train packed exactly, and if not, why."""
    optimizer = str(cfg["optim"].get("_target_"))
    scheduler = str(cfg["scheduler"].get("_target_"))
    if scheduler.endswith("ReduceLROnPlateau"):
        return False, "scheduler=plateau: each model's lr follows its own validation metric"
    if optimizer not in ELEMENTWISE_OPTIMIZERS:
        if optimizer.endswith("LBFGS"):
            return False, "optim=lbfgs: its line search couples the models it steps"
        return False, f"optimizer {optimizer} is not known to update each weight on its own"
    return True, "elementwise optimizer and epoch-based schedule"


def member_groups(cfg: Mapping, members: int) -> list[list[int]]:
    """Which members train together: all in one packed fit, or one by one when ``cfg`` cannot
    be packed exactly (then one log line says why). Each group is one :class:`Trainer`."""
    packable, reason = can_pack(cfg)
    if packable or members == 1:
        return [list(range(members))]
    log.info("fitting %d models sequentially, not packed: %s", members, reason)
    return [[m] for m in range(members)]


def batches_per_epoch(rows: int, batch_size: int, batch_norm: bool) -> int:
    """How many optimizer steps a member with ``rows`` training rows takes per epoch."""
    k = math.ceil(rows / batch_size)
    if batch_norm and rows - (k - 1) * batch_size < 2:
        k -= 1  # BatchNorm needs 2 rows: drop a 1-row last batch, as torch would fail
    return k


def _empty_history() -> dict[str, list[float]]:
    return {k: [] for k in CURVES}


@dataclass
class MemberData:
    """One member's rows: preprocessed float32 features and int64 class indices, on the device.

    ``x_val`` may have 0 rows: nothing is selected then, the last epoch is kept.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor


@dataclass
class MemberState:
    """One member's progress."""

    epoch: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    error: str | None = None  # why it diverged
    history: dict[str, list[float]] = field(default_factory=_empty_history)

    @property
    def training(self) -> bool:
        return self.error is None and not self.stopped_early

    def last(self, key: str) -> float:
        values = self.history[key]
        return values[-1] if values else math.nan


@dataclass
class FitState:
    """Progress of a (packed) fit: per member, and mean curves for reporting."""

    epoch: int = 0  # epochs completed (max over members)
    history: dict[str, list[float]] = field(default_factory=_empty_history)
    members: list[MemberState] = field(default_factory=lambda: [MemberState()])

    @property
    def best_epoch(self) -> int:
        """Member 0's best epoch (the run's, when M = 1)."""
        return self.members[0].best_epoch

    @property
    def stopped_early(self) -> bool:
        """Every member is done before ``epochs``: stopped early (or diverged)."""
        return all(not m.training for m in self.members) and any(
            m.stopped_early for m in self.members
        )

    def last(self, key: str) -> float:
        values = self.history[key]
        return values[-1] if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "history": {k: list(v) for k, v in self.history.items()},
            "members": [
                {
                    "epoch": m.epoch,
                    "best_epoch": m.best_epoch,
                    "stopped_early": m.stopped_early,
                    "error": m.error,
                    "history": {k: list(v) for k, v in m.history.items()},
                }
                for m in self.members
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FitState:
        def history(saved: dict[str, list[float]]) -> dict[str, list[float]]:
            return {k: list(v) for k, v in saved.items()}  # the fit appends to its own lists

        members = [MemberState(**{**m, "history": history(m["history"])}) for m in state["members"]]
        return cls(epoch=state["epoch"], history=history(state["history"]), members=members)


class Callback(Protocol):
    """Hooks the trainer calls; every method is optional."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


class FitInterrupted(Exception):
    """The fit stopped at an epoch boundary because the process got SIGTERM or SIGINT."""

    def __init__(self, signum: int, epoch: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} after epoch {epoch}")
        self.signum, self.epoch = signum, epoch


@dataclass
class _Padded:
    """Members' rows padded to the longest: ``x [M, N, F]``, ``mask [M, N]``, ``count [M]``."""

    x: Tensor
    y: Tensor
    target: Tensor
    mask: Tensor
    count: Tensor
    sizes: list[int]


def _pad(xs: Sequence[Tensor], ys: Sequence[Tensor], head: Head) -> _Padded:
    sizes = [len(y) for y in ys]
    n = max(max(sizes), 1)
    x = xs[0].new_zeros((len(xs), n, *xs[0].shape[1:]))
    y = ys[0].new_zeros((len(ys), n))
    for m, (xm, ym) in enumerate(zip(xs, ys, strict=True)):
        x[m, : len(ym)] = xm
        y[m, : len(ym)] = ym
    count = torch.tensor(sizes, device=x.device)
    mask = torch.arange(n, device=x.device) < count.unsqueeze(1)
    return _Padded(x, y, head.encode(y), mask, count.to(x.dtype), sizes)


class Trainer:
    """Fits the M members of a packed ``model`` on their own rows; see the module docstring."""

    def __init__(
        self,
        model: PackedMLP,
        head: Head,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        members: Sequence[MemberData],
        *,
        epochs: int,
        batch_size: int,
        patience: int | None = None,
        grad_clip: float | None = None,
        l1: float = 0.0,
        monitor: str = "val_acc",
        generators: Sequence[torch.Generator],
        callbacks: list[Any] | None = None,
    ) -> None:
        count = len(members)
        if model.members != count or len(generators) != count:
            raise ValueError(
                f"{model.members} model members, {count} data members, {len(generators)} generators"
            )
        self.model = model
        self.head = head
        self.criterion = _unreduced(criterion)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.members = list(members)
        self.epochs = epochs
        self.batch_size = batch_size
        self.grad_clip = grad_clip
        self.l1 = l1
        self.monitor = monitor
        self.generators = list(generators)
        self.callbacks = list(callbacks or [])
        self.count = count
        self.device = members[0].x_train.device
        self.train = _pad([d.x_train for d in members], [d.y_train for d in members], head)
        self.val = _pad([d.x_val for d in members], [d.y_val for d in members], head)
        self.has_val = [len(d.y_val) > 0 for d in members]
        self._no_val = torch.tensor([not v for v in self.has_val], device=self.device)
        self.state = FitState(members=[MemberState() for _ in range(count)])
        self.trained: list[int] = []  # members that trained in the last epoch
        self.stop_requested: int | None = None
        self.best = BestWeights(model, monitor, self.has_val)
        self.early_stopping = EarlyStopping(patience, monitor, self.has_val)
        self.scheduling = SchedulerStep(scheduler, monitor, count)
        self.policy = {
            "best_weights": self.best,
            "early_stopping": self.early_stopping,
            "scheduler": self.scheduling,
        }
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._l1_params = [p for n, p in model.named_parameters() if n.endswith("weight")]
        self._batch_norm = any(isinstance(m, PackedBatchNorm1d) for m in model.modules())
        self._noise_widths = model.noise_widths()
        self._closure = isinstance(optimizer, CLOSURE_OPTIMIZERS)
        if self._closure and count > 1:
            raise ValueError(f"{type(optimizer).__name__} couples the members it steps: fit M=1")
        self.member_steps = [0] * count  # optimizer steps each member has taken
        self._counts_written = True  # the optimizer's step counters hold member_steps

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def _evaluate(self, data: _Padded, loss: bool = True) -> tuple[Tensor | None, Tensor, Tensor]:
        """Per-member loss (None unless ``loss``) and accuracy ``[M]`` and predictions
        ``[M, N]``, in eval mode (the model's mode is restored)."""
        was_training = self.model.training
        if was_training:
            self.model.eval()
        out = self.model(data.x)
        if was_training:
            self.model.train()
        count = data.count.clamp_min(1)
        member_loss = self._member_loss(out, data.target, data.mask, count) if loss else None
        pred = self.head.decode(out)
        acc = ((pred == data.y) & data.mask).sum(1) / count
        return member_loss, acc, pred

    def evaluate(
        self, xs: Sequence[Tensor], ys: Sequence[Tensor]
    ) -> list[tuple[float, float, Tensor]]:
        """Per member: loss, accuracy, predicted classes on ``(xs[m], ys[m])`` (current weights)."""
        data = _pad(xs, ys, self.head)
        loss, acc, pred = self._evaluate(data)
        losses, accs = torch.stack([loss.float(), acc.float()]).tolist()
        return [(losses[m], accs[m], pred[m, : data.sizes[m]]) for m in range(self.count)]

    def _member_loss(
        self, out: Tensor, target: Tensor, mask: Tensor, count: Tensor, full: bool = False
    ) -> Tensor:
        """The criterion's mean over each member's real rows: ``[M]`` (``count`` >= 1).

        ``full``: every row is real (``mask`` all True), so nothing needs zeroing; the sum and
        the division stay the same ops, so the result is the same to the last bit."""
        # the unreduced copy is private: its forward is called without the per-call dispatch
        per_row = self.criterion.forward(out.flatten(0, 1), target.flatten(0, 1))
        if per_row.dim() == 1:  # one loss per row (cross entropy)
            per_row = per_row.view(mask.shape)
        else:  # one per output: their mean per row
            per_row = per_row.reshape(*mask.shape, -1).mean(-1)
        if not full:
            per_row = torch.where(mask, per_row, 0.0)
        return per_row.sum(1) / count

    def monitor_value(self) -> float:
        """The latest monitored value, mean over the members that have not diverged."""
        values = [m.last(self.monitor) for m in self.state.members if m.error is None]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def best_state(self) -> dict[str, Tensor]:
        """The packed state dict of every member's best weights."""
        return self.best.weights

    def best_model(self) -> PackedMLP:
        """A copy of the model holding every member's own best weights."""
        model = self.model.with_members(self.count).to(self.device)
        model.load_state_dict(self.best.weights)
        return model.eval()

    def use_best_weights(self) -> None:
        """Load every member's best weights into ``model`` (for testing after the fit)."""
        self.model.load_state_dict(self.best.weights)

    # ------------------------------------------------------------------ training

    def _epoch_plan(
        self, live: list[int]
    ) -> tuple[Tensor, Tensor, Tensor, list[int], list[bool], list[Tensor]]:
        """Flat row indices ``[S, M, W]`` into ``train.x`` viewed ``[M * N, F]``, masks, rows per
        batch ``[S, M]``, batches per member, whether each step's batches are all full (no
        padded row) and the epoch's noise per noisy layer (``[M, S, W, F_l]``), each member
        drawing from its own generator: its batch order, then its noise.

        Member ``m``'s batches are consecutive ``batch_size`` slices of its permutation, so its
        slot ``s * W + j`` holds its permutation's entry ``s * batch_size + j`` (``W`` is
        ``batch_size`` unless every member has fewer rows, and then there is one batch).
        """
        width = min(self.batch_size, max(self.train.sizes))
        n_max = self.train.x.shape[1]
        steps = [0] * self.count
        perms: dict[int, Tensor] = {}
        for m in live:
            n = self.train.sizes[m]
            steps[m] = batches_per_epoch(n, self.batch_size, self._batch_norm)
            perms[m] = torch.randperm(n, generator=self.generators[m])
        total = max(max(steps), 1)
        index = torch.zeros(self.count, total * width, dtype=torch.long)
        mask = torch.zeros(self.count, total * width, dtype=torch.bool)
        for m, perm in perms.items():
            used = min(len(perm), steps[m] * self.batch_size)
            index[m, :used] = perm[:used] + m * n_max
            mask[m, :used] = True
        index = index.view(self.count, total, width).transpose(0, 1).contiguous()
        mask = mask.view(self.count, total, width).transpose(0, 1).contiguous()
        rows = mask.sum(2).to(self.train.x.dtype)
        full = (rows == width).all(1).tolist()  # on the host: no device sync
        noise = []
        if self._noise_widths:
            features = sum(self._noise_widths)
            # every slot is drawn when every member draws ``total`` full batches: no zeroing
            covered = all(steps[m] == total for m in range(self.count)) and (
                min(self.train.sizes) >= width
            )
            shape = (self.count, total, width, features)
            buffer = torch.empty(shape) if covered else torch.zeros(shape)
            for m, perm in perms.items():
                k, drawn = steps[m], min(self.batch_size, len(perm))  # what it draws alone
                if drawn == width:  # draw straight into its slice: what torch.rand would draw
                    buffer[m, :k].uniform_(0.0, 1.0, generator=self.generators[m])
                else:
                    buffer[m, :k, :drawn] = torch.rand(
                        k, drawn, features, generator=self.generators[m]
                    )
            uniforms = (
                [buffer]
                if len(self._noise_widths) == 1
                else buffer.split(self._noise_widths, dim=-1)
            )
            noise = self.model.prepare_noise([u.to(self.device) for u in uniforms])
        return (
            index.to(self.device),
            mask.to(self.device),
            rows.to(self.device),
            steps,
            full,
            noise,
        )

    def _train_epoch(self, live: list[int]) -> Tensor:
        """One pass over each live member's shuffled rows; their mean training losses ``[M]``."""
        if not self.model.training:
            self.model.train()
        index, mask, rows, steps, full, noise = self._epoch_plan(live)
        x = self.train.x.flatten(0, 1)
        target = self.train.target.flatten(0, 1)
        x_batches = x.index_select(0, index.view(-1)).view(*index.shape, *x.shape[1:])
        t_batches = target.index_select(0, index.view(-1)).view(*index.shape, *target.shape[1:])
        # per-step views made once per epoch (one unbind each, not S indexings per tensor)
        batches = zip(
            x_batches.unbind(0),
            t_batches.unbind(0),
            mask.unbind(0),
            rows.clamp_min(1).unbind(0),
            strict=True,
        )
        step_noise = list(zip(*(n.unbind(1) for n in noise), strict=True))
        # every member steps together (one plain optimizer step) up to the shortest one's end
        together = min(steps) if len(live) == self.count else 0
        ones = torch.ones(self.count, device=self.device)  # d(sum of members' losses)/d(loss)
        params = self._params
        losses = []
        for s, (xb, tb, mb, nb) in enumerate(batches):
            if step_noise:
                self.model.set_noise(step_noise[s])
            if self._closure:
                loss = self._closure_step(xb, tb, mb, nb, full[s])
            else:
                loss = self._loss(xb, tb, mb, nb, full[s])
                for p in params:  # zero_grad(set_to_none=True), without its per-call overhead
                    p.grad = None
                loss.backward(ones)
                if self.grad_clip:
                    self._clip_gradients()
                if s < together:
                    self._step_all()
                else:
                    self._step([m for m in live if steps[m] > s])
            losses.append(loss.detach())
        self.model.set_noise(None)
        # member-major, so each member's sum runs over its own steps as it does alone
        rows = rows.T.contiguous()
        return (torch.stack(losses, 1) * rows).sum(1) / rows.sum(1).clamp_min(1)

    def _loss(self, xb: Tensor, tb: Tensor, mb: Tensor, nb: Tensor, full: bool) -> Tensor:
        """Members' losses ``[M]`` on one step's batches (``full``: no padded row in them)."""
        loss = self._member_loss(self.model(xb, mb, direct=True), tb, mb, nb, full)
        if self.l1:
            loss = loss + self.l1 * sum(p.abs().flatten(1).sum(1) for p in self._l1_params)
        return loss

    def _closure_step(self, xb: Tensor, tb: Tensor, mb: Tensor, nb: Tensor, full: bool) -> Tensor:
        """One step of an optimizer that re-evaluates the loss itself (L-BFGS; M = 1)."""
        last: list[Tensor] = []

        def closure() -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(xb, tb, mb, nb, full)
            loss.sum().backward()
            if self.grad_clip:
                self._clip_gradients()
            last.append(loss.detach())
            return loss.sum()

        self.optimizer.step(closure)
        self.member_steps[0] += 1
        return last[0]  # the loss at the step's starting point, as for the other optimizers

    def _clip_gradients(self) -> None:
        """``clip_grad_norm_`` for each member's slice of the gradients."""
        grads = [p.grad for p in self._params if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (self.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))

    def _member_tensors(self) -> tuple[list[Tensor], list[dict[str, Any]]]:
        """Parameters and per-member optimizer state tensors; the states holding a step count."""
        tensors: list[Tensor] = []
        counters = []
        for p in self._params:
            tensors.append(p.data)
            state = self.optimizer.state.get(p, {})
            for value in state.values():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == self.count:
                    tensors.append(value)
            if "step" in state:
                counters.append(state)
        return tensors, counters

    @staticmethod
    def _write_count(counters: list[dict[str, Any]], count: int) -> None:
        for state in counters:
            if torch.is_tensor(state["step"]):
                state["step"].fill_(count)
            else:
                state["step"] = count

    def _step_all(self) -> None:
        """``optimizer.step()`` for every member, all with the same step count (the step runs
        without grad by itself; ``_step`` has its own ``no_grad``)."""
        if not self._counts_written:
            self._step(list(range(self.count)))
            return
        self.optimizer.step()
        self.member_steps = [n + 1 for n in self.member_steps]

    @torch.no_grad()
    def _step(self, active: list[int]) -> None:
        """``optimizer.step()`` for the ``active`` members only; see the module docstring."""
        if not active:
            return
        counts = {self.member_steps[m] for m in active}
        if len(active) == self.count and len(counts) == 1:
            if not self._counts_written:
                self._write_count(self._member_tensors()[1], self.member_steps[active[0]])
                self._counts_written = True
            self.optimizer.step()
        else:
            tensors, counters = self._member_tensors()
            if not counters:  # no step counter (SGD): one step for every active member
                counts = {0}
            before = [t.clone() for t in tensors]
            after = [t.clone() for t in tensors]
            for count in sorted(counts):
                group = [m for m in active if not counters or self.member_steps[m] == count]
                for t, b in zip(tensors, before, strict=True):
                    t.copy_(b)
                self._write_count(counters, count)
                self.optimizer.step()
                for t, a in zip(tensors, after, strict=True):
                    a[group] = t[group]
            for t, a in zip(tensors, after, strict=True):
                t.copy_(a)
            self._counts_written = False
        for m in active:
            self.member_steps[m] += 1

    def _emit(self, hook: str) -> None:
        for cb in [*self.policy.values(), *self.callbacks]:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    def _epoch_metrics(self, train_loss: Tensor) -> list[list[float]]:
        """``[M][train_loss, train_acc, val_loss, val_acc]`` after an epoch (one host sync)."""
        self.model.eval()  # once for both passes: a mode switch walks every layer
        _, train_acc, _ = self._evaluate(self.train, loss=False)
        if any(self.has_val):
            val_loss, val_acc, _ = self._evaluate(self.val)
            no_val = self._no_val
            val_loss = torch.where(no_val, train_loss, val_loss)
            val_acc = torch.where(no_val, train_acc, val_acc)
        else:  # no validation rows anywhere: the training figures stand in, as below
            val_loss, val_acc = train_loss, train_acc
        self.model.train()
        rows = torch.stack([train_loss, train_acc, val_loss, val_acc]).float()
        return rows.T.tolist()

    def _diverged(self, m: int, epoch: int, values: list[float], lr: float) -> str | None:
        who = f"member {m}: " if self.count > 1 else ""
        if not math.isfinite(values[0]):
            return (
                f"{who}training diverged at epoch {epoch}: train loss is {values[0]} "
                f"(lr={lr:g}); try a lower optim.lr or trainer.grad_clip"
            )
        if not math.isfinite(values[2]):
            return f"{who}training diverged at epoch {epoch}: val loss is {values[2]}"
        return None

    def fit(self) -> FitState:
        """Train every member until ``epochs``, its early stop or its divergence.

        Raises :class:`DivergenceError` when every member has diverged (the last good epoch's
        checkpoint, written by a callback, is left untouched) and :class:`FitInterrupted` after
        a SIGTERM/SIGINT, once the current epoch is done and ``on_fit_end`` has run.
        """
        state = self.state
        restore = self._catch_signals()
        try:
            self._emit("on_fit_start")
            while self.stop_requested is None:
                live = [
                    m for m, s in enumerate(state.members) if s.training and s.epoch < self.epochs
                ]
                if not live:
                    break
                epoch = state.epoch + 1
                lr = self.optimizer.param_groups[0]["lr"]
                metrics = self._epoch_metrics(self._train_epoch(live))
                self.trained = []
                for m in live:
                    member = state.members[m]
                    error = self._diverged(m, epoch, metrics[m], lr)
                    if error is not None:
                        member.error = error
                        if self.count > 1:
                            log.warning("%s; the other members go on", error)
                        continue
                    for key, value in zip(CURVES, [*metrics[m], lr], strict=True):
                        member.history[key].append(value)
                    member.epoch = epoch
                    self.trained.append(m)
                if all(s.error is not None for s in state.members):
                    raise DivergenceError(state.members[0].error)
                if not self.trained:
                    break
                for i, key in enumerate(CURVES[:4]):
                    values = [metrics[m][i] for m in self.trained]
                    state.history[key].append(sum(values) / len(values))
                state.history["lr"].append(lr)
                state.epoch = epoch
                self._emit("on_epoch_end")
            self._emit("on_fit_end")
        finally:
            restore()
        if self.stop_requested is not None:
            raise FitInterrupted(self.stop_requested, state.epoch)
        return state

    def _catch_signals(self) -> Any:
        """SIGTERM/SIGINT ask the fit to stop after the current epoch (a second one: at once)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: Any) -> None:
            if self.stop_requested is not None:
                raise KeyboardInterrupt
            self.stop_requested = signum
            log.warning("%s: stopping after this epoch", signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, progress, callbacks and RNG: enough to resume exactly."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "fit": self.state.to_dict(),
            "steps": list(self.member_steps),
            "callbacks": {name: cb.state_dict() for name, cb in self.policy.items()},
            "rng": {
                "generators": [g.get_state() for g in self.generators],
                "torch": torch.get_rng_state(),
            },
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any], where: str = "trainer state") -> None:
        """Restore what :meth:`state_dict` saved (tensors may come on any device), once
        :func:`check_trainer_state` has accepted every value of it."""
        check_trainer_state(
            state,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            patience=self.early_stopping.patience,
            monitor=self.monitor,
            where=where,
            train_sizes=self.train.sizes,
            batch_size=self.batch_size,
        )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.state = FitState.from_dict(state["fit"])
        self.member_steps = list(state["steps"])
        self._counts_written = False
        for name, cb in self.policy.items():
            cb.load_state_dict(state["callbacks"][name])
        # RNG states are byte tensors that torch only accepts on the CPU
        for generator, saved in zip(self.generators, state["rng"]["generators"], strict=True):
            generator.set_state(saved.cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)


TRAINER_KEYS = ("model", "optimizer", "fit", "steps", "callbacks", "rng")
FIT_KEYS = ("epoch", "history", "members")
MEMBER_KEYS = ("epoch", "best_epoch", "stopped_early", "error", "history")
MAX_ERROR_CHARS = 1000  # a diverged member's reason is one short line; it is logged and reported


# What each curve's values may be: losses and lrs are >= 0, accuracies fractions.
CURVE_RANGES = {"loss": (0.0, math.inf), "acc": (0.0, 1.0), "lr": (0.0, math.inf)}


def _check_history(value: Any, length: int, where: str, key: str) -> None:
    """One finite number in its curve's range per epoch for every curve."""
    history = check_mapping(value, CURVES, where, key)
    for curve in CURVES:
        low, high = CURVE_RANGES[curve.rsplit("_", 1)[-1]]
        for e, number in enumerate(check_list(history[curve], length, where, f"{key}.{curve}")):
            if not low <= check_number(number, where, f"{key}.{curve}[{e}]") <= high:
                raise fail(where, f"{key}.{curve}[{e}]", f"is {number}, expected {low:g}..{high:g}")


def _check_fit(value: Any, members: int, where: str) -> FitState:
    """A saved :class:`FitState`: one record per member, epochs and best epochs in range,
    histories as long as the epochs, members still training at the run's epoch."""
    key = "trainer.fit"
    fit = check_mapping(value, FIT_KEYS, where, key)
    epoch = check_int(fit["epoch"], 0, None, where, f"{key}.epoch")
    _check_history(fit["history"], epoch, where, f"{key}.history")
    records = check_list(fit["members"], members, where, f"{key}.members")
    for m, record in enumerate(records):
        name = f"{key}.members[{m}]"
        record = check_mapping(record, MEMBER_KEYS, where, name)
        own = check_int(record["epoch"], 0, epoch, where, f"{name}.epoch")
        check_int(record["best_epoch"], 0, own, where, f"{name}.best_epoch")
        if not isinstance(record["stopped_early"], bool):
            raise fail(
                where,
                f"{name}.stopped_early",
                f"is {shown(record['stopped_early'])}, expected a bool",
            )
        error = record["error"]
        if error is not None and (
            not isinstance(error, str) or len(error) > MAX_ERROR_CHARS or "\n" in error
        ):
            raise fail(
                where,
                f"{name}.error",
                f"is {shown(error)}, expected none or one line of at most {MAX_ERROR_CHARS} "
                "characters",
            )
        _check_history(record["history"], own, where, f"{name}.history")
        if not record["stopped_early"] and record["error"] is None and own != epoch:
            raise fail(
                where, f"{name}.epoch", f"is {own}, but the member still trains at epoch {epoch}"
            )
    if records and epoch != max(r["epoch"] for r in records):
        raise fail(where, f"{key}.epoch", f"is {epoch}, but no member reached it")
    return FitState.from_dict(dict(fit))


def check_trainer_state(
    state: Any,
    *,
    model: PackedMLP,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    patience: int | None,
    monitor: str,
    where: str,
    train_sizes: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> None:
    """Refuse a saved trainer state (``last.pt``'s ``trainer``) that the trainer built from
    this run's config could not continue exactly, before anything of it is loaded.

    ``model``, ``optimizer`` and ``scheduler`` are freshly built from the config (nothing
    stepped yet): the state's weights must fit the model; its optimizer's hyper-parameters
    must equal the config's (the lr as the schedule gives it at the saved epoch) and its
    state tensors the parameters' shapes; epochs, best epochs, patience counts and step
    counts must lie in range, with one entry per member; the scheduler and RNG states must
    be what torch accepts. With ``train_sizes`` (each member's training rows) and
    ``batch_size``, each member's step count must be the one its epochs took.
    Raises :class:`~pricenet.errors.CheckpointError` naming ``where`` and the key.
    """
    members = model.members
    state = check_mapping(state, TRAINER_KEYS, where, "trainer")
    check_tensors(state["model"], model.state_dict(), f"{where}: trainer.model")
    fit = _check_fit(state["fit"], members, where)
    steps = check_list(state["steps"], members, where, "trainer.steps")
    batch_norm = any(isinstance(m, PackedBatchNorm1d) for m in model.modules())
    for m, count in enumerate(steps):
        check_int(count, 0, None, where, f"trainer.steps[{m}]")
        if train_sizes is None or batch_size is None:
            continue
        member = fit.members[m]
        epochs = member.epoch + (member.error is not None)  # a diverged member's last epoch
        expected = epochs * batches_per_epoch(train_sizes[m], batch_size, batch_norm)
        if count != expected:
            raise fail(
                where,
                f"trainer.steps[{m}]",
                f"is {count}, but {member.epoch} epoch(s) of this member take {expected} steps",
            )
    policy = check_mapping(
        state["callbacks"],
        ("best_weights", "early_stopping", "scheduler"),
        where,
        "trainer.callbacks",
    )
    has_val = [True] * members
    BestWeights(model, monitor, has_val).check_state(
        policy["best_weights"], where, "trainer.callbacks.best_weights"
    )
    stopping = EarlyStopping(patience, monitor, has_val)
    stopping.check_state(policy["early_stopping"], where, "trainer.callbacks.early_stopping")
    for m, count in enumerate(policy["early_stopping"]["bad_epochs"]):
        if count > fit.members[m].epoch:
            raise fail(
                where,
                f"trainer.callbacks.early_stopping.bad_epochs[{m}]",
                f"is {count}, more than the member's {fit.members[m].epoch} epoch(s)",
            )
    groups = SchedulerStep(scheduler, monitor, members).expected_groups(
        policy["scheduler"], fit.epoch, where, "trainer.callbacks.scheduler"
    )
    check_optimizer_state(
        state["optimizer"], optimizer, groups, fit.epoch, max(steps, default=0), where
    )
    rng = state["rng"]
    keys = [
        "generators",
        "torch",
        *(["cuda"] if isinstance(rng, Mapping) and "cuda" in rng else []),
    ]
    rng = check_mapping(rng, keys, where, "trainer.rng")
    reference = torch.Generator().get_state()
    for m, saved in enumerate(
        check_list(rng["generators"], members, where, "trainer.rng.generators")
    ):
        check_rng_state(saved, reference, where, f"trainer.rng.generators[{m}]")
    check_rng_state(rng["torch"], reference, where, "trainer.rng.torch")
    if "cuda" in rng:
        cuda = rng["cuda"]
        if not isinstance(cuda, torch.Tensor) or cuda.dtype != torch.uint8 or cuda.dim() != 1:
            raise fail(where, "trainer.rng.cuda", "is not a generator state (a byte tensor)")


def _unreduced(criterion: nn.Module) -> nn.Module:
    """A copy of a torch loss that returns one value per element (``reduction="none"``)."""
    import copy

    if not hasattr(criterion, "reduction"):
        raise ValueError(f"{type(criterion).__name__} has no reduction to switch off")
    unreduced = copy.copy(criterion)
    unreduced.reduction = "none"
    return unreduced
