"""The training loop: M >= 1 packed models, each with its own rows, in one loop.

Interface (what the pipeline builds on)::

    members = [MemberData(x_train, y_train, x_val, y_val), ...]   # one per model, on the device
    trainer = Trainer(model, head, criterion, optimizer, members,
                      generators=[torch.Generator().manual_seed(s), ...],
                      epochs=..., batch_size=..., grad_clip=..., l1=..., monitor=Monitor("val_acc"),
                      callbacks=[BestWeights(), EarlyStopping(10), SchedulerStep(scheduler), ...])
    state = trainer.fit()          # FitState: .members[m] holds epoch, best_epoch, history,
                                   # stopped_early, error (set when that member diverged)
    trainer.monitor_value()        # latest monitored value, mean over non-diverged members
    trainer.state_dict() / load_state_dict(state)   # exact resume; every value checked first

The loop is skorch's: :meth:`Trainer.fit` runs :meth:`~Trainer.run_epoch` until every member is
done, which runs :meth:`~Trainer.train_step` per batch; after each epoch it records, once per
member, whether the monitored score improved (``trainer.improved``), which best weights,
early stopping and the checkpointer read, and calls every callback's ``on_epoch_end``. Which
rows each member sees is :mod:`pricenet.engine.epochs`; stepping members on their own is
:mod:`pricenet.engine.memberwise`; policy and reporting are callbacks
(:mod:`pricenet.engine.callbacks`).

How members stay independent:

- ``model`` is a :class:`~pricenet.nn.packed.PackedMLP`: weights ``[M, ...]``. Rows are padded to
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
  one that diverged are not updated: their parameter and optimizer-state slices are kept
  through the step, and each member keeps its own step count
  (:class:`~pricenet.engine.memberwise.MemberwiseOptimizer`). A plain step is one
  ``optimizer.step()``. Once members are done (stopped early, diverged), the live ones train
  and are measured alone for the epoch: their slices of the weights, buffers and optimizer
  state are taken out and written back after it (the packed layers' results do not depend on
  how many members they hold), so a done member costs nothing per step nor per epoch.
- Per-step work is what a plain loop does: the epoch's batches, masks and noise are made and
  split into per-step views once per epoch; a step where every member has a full batch skips
  the mask in its loss (the same sum and division, so the same bits); the layers are called
  without torch's hook dispatch (``PackedMLP(..., direct=True)``); grads are cleared by
  setting them to None. M = 1 runs the same loop and pays nothing for packing.
- Divergence (a non-finite train or val loss) freezes that member and records the error; the
  others go on. When every member has diverged, :class:`~pricenet.errors.DivergenceError`.

What cannot be packed exactly (:func:`~pricenet.engine.memberwise.packable`: ReduceLROnPlateau,
L-BFGS, any optimizer not known to be elementwise) is fitted as M trainers of one member each,
driven epoch by epoch by :class:`Sequential`, which gives the run's callbacks the same view
as one packed trainer.

SIGTERM/SIGINT during :meth:`Trainer.fit` finish the current epoch, run ``on_fit_end`` (the
checkpointer writes ``last.pt``) and raise :class:`FitInterrupted`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pricenet.config.monitor import Monitor
from pricenet.engine.epochs import plan_epoch
from pricenet.engine.fit_state import (
    CURVES,
    FitState,
    MemberState,
    check_sequential_state,
    check_trainer_state,
)
from pricenet.engine.memberwise import MemberwiseOptimizer
from pricenet.errors import DivergenceError
from pricenet.nn.heads import Head
from pricenet.nn.network import repeat_rows
from pricenet.nn.packed import PackedBatchNorm1d, PackedMLP, stack_members

log = logging.getLogger("pricenet")

__all__ = ["CURVES", "FitInterrupted", "FitState", "MemberData", "Sequential", "Trainer"]


@dataclass
class MemberData:
    """One member's rows: preprocessed float32 features and int64 class indices, on the device.

    ``x_val`` may have 0 rows: nothing is selected then, the last epoch is kept.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor


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

    def select(self, index: Tensor, members: list[int]) -> _Padded:
        """The rows of ``members`` only (``index``: the same members, as a tensor)."""
        return _Padded(
            *(t.index_select(0, index) for t in (self.x, self.y, self.target, self.mask)),
            self.count.index_select(0, index),
            [self.sizes[m] for m in members],
        )


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


def _unreduced(criterion: nn.Module) -> nn.Module:
    """A copy of a torch loss that returns one value per element (``reduction="none"``)."""
    if not hasattr(criterion, "reduction"):
        raise ValueError(f"{type(criterion).__name__} has no reduction to switch off")
    unreduced = copy.copy(criterion)
    unreduced.reduction = "none"
    return unreduced


class _Loop:
    """What :class:`Trainer` and :class:`Sequential` share: the epoch loop, callbacks, signals.

    A subclass provides ``state``, ``epochs``, ``count``, ``callbacks`` and
    :meth:`run_epoch`.
    """

    state: FitState
    epochs: int
    count: int
    callbacks: list[Any]
    monitor: Monitor
    stop_requested: int | None = None

    def run_epoch(self) -> bool:
        """Train every live member one epoch; False when none was left to train."""
        raise NotImplementedError

    def emit(self, hook: str) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    def callback(self, kind: type) -> Any:
        """The first callback of class ``kind``, or None."""
        return next((cb for cb in self.callbacks if isinstance(cb, kind)), None)

    def monitor_value(self) -> float:
        """The latest monitored value, mean over the members that have not diverged."""
        values = [m.last(self.monitor.name) for m in self.state.members if m.error is None]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def fit(self) -> FitState:
        """Train every member until ``epochs``, its early stop or its divergence.

        Raises :class:`DivergenceError` when every member has diverged (the last good epoch's
        checkpoint, written by a callback, is left untouched) and :class:`FitInterrupted` after
        a SIGTERM/SIGINT, once the current epoch is done and ``on_fit_end`` has run.
        """
        restore = self._catch_signals()
        try:
            self.emit("on_fit_start")
            while self.stop_requested is None:
                trained = self.run_epoch()
                if all(s.error is not None for s in self.state.members):
                    raise DivergenceError(self.state.members[0].error)
                if not trained:
                    break
                self.emit("on_epoch_end")
            self.emit("on_fit_end")
        finally:
            restore()
        if self.stop_requested is not None:
            raise FitInterrupted(self.stop_requested, self.state.epoch)
        return self.state

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

    def _record_mean(self, trained: list[int], epoch: int) -> None:
        """The run's curves: the mean over the members that trained this epoch."""
        members, history = self.state.members, self.state.history
        for key in CURVES[:4]:
            values = [members[m].history[key][-1] for m in trained]
            history[key].append(sum(values) / len(values))
        history["lr"].append(members[trained[0]].history["lr"][-1])
        self.state.epoch = epoch


class Trainer(_Loop):
    """Fits the M members of a packed ``model`` on their own rows; see the module docstring."""

    def __init__(
        self,
        model: PackedMLP,
        head: Head,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        members: Sequence[MemberData],
        *,
        generators: Sequence[torch.Generator],
        epochs: int,
        batch_size: int,
        grad_clip: float | None = None,
        l1: float = 0.0,
        monitor: Monitor | str = "val_acc",
        callbacks: Sequence[Any] = (),
        class_weights: Tensor | None = None,
    ) -> None:
        count = len(members)
        if model.members != count or len(generators) != count:
            raise ValueError(
                f"{model.members} model members, {count} data members, {len(generators)} generators"
            )
        self.model, self.head, self.count = model, head, count
        self.criterion = _unreduced(criterion)
        self._ones = torch.ones(count, device=members[0].x_train.device)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.optim = MemberwiseOptimizer(optimizer, self._params, count)
        self.optimizer = optimizer
        self.members = list(members)
        self.generators = list(generators)
        self.epochs, self.batch_size, self.grad_clip, self.l1 = epochs, batch_size, grad_clip, l1
        self.monitor = monitor if isinstance(monitor, Monitor) else Monitor(monitor)
        self.device = members[0].x_train.device
        self.train = _pad([d.x_train for d in members], [d.y_train for d in members], head)
        self.val = _pad([d.x_val for d in members], [d.y_val for d in members], head)
        self.has_val = [len(d.y_val) > 0 for d in members]
        self._no_val = torch.tensor([not v for v in self.has_val], device=self.device)
        self.state = FitState(members=[MemberState() for _ in range(count)])
        self.best_score: list[list[float]] = [[-math.inf] for _ in range(count)]
        self.trained: list[int] = []  # members that trained in the last epoch
        self.improved: list[int] = []  # ... and whose monitored score improved in it
        self._l1_params = [p for n, p in model.named_parameters() if n.endswith("weight")]
        self._batch_norm = any(isinstance(m, PackedBatchNorm1d) for m in model.modules())
        self._noise_widths = model.noise_widths()
        self._submodels = int(getattr(model, "submodels", 1))  # TabM's k
        self.class_weights = class_weights  # [M, classes]: each row's loss weighs its class's
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            bind = getattr(cb, "bind", None)
            if bind is not None:
                bind(self)

    # ------------------------------------------------------------------ what callbacks read

    @property
    def member_steps(self) -> list[int]:
        return self.optim.steps

    @property
    def scheduler(self) -> Any:
        """The lr scheduler the scheduler callback steps (None without one)."""
        step = self.policy().get("scheduler")
        return None if step is None else step.scheduler

    @property
    def early_stopping(self) -> Any:
        return self.policy().get("early_stopping")

    def policy(self) -> dict[str, Any]:
        """The callbacks whose state a resume needs, by name."""
        return {cb.name: cb for cb in self.callbacks if getattr(cb, "stateful", False)}

    def best_state(self) -> dict[str, Tensor]:
        """The packed state dict of every member's best weights (the last weights when no
        best-weights callback runs)."""
        from pricenet.engine.callbacks import BestWeights

        best = self.callback(BestWeights)
        return best.weights if best is not None else self.model.state_dict()

    def use_best_weights(self) -> None:
        """Load every member's best weights into ``model`` (for testing after the fit)."""
        self.model.load_state_dict(self.best_state())

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def outputs(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """Each member's outputs ``(len(xs[m]), outputs)`` on its own rows ``xs[m]``, with the
        weights the model holds now, in eval mode: one batched pass for every member (the
        rows padded to the longest), not one pass per member."""
        if len(xs) != self.count:
            raise ValueError(f"{len(xs)} row sets for {self.count} members")
        model = self.model
        was_training = model.training
        model.eval()
        padded = xs[0].new_zeros((self.count, max(len(x) for x in xs), *xs[0].shape[1:]))
        for m, x in enumerate(xs):
            padded[m, : len(x)] = x
        out = model(padded)
        model.train(was_training)
        return [out[m, : len(x)] for m, x in enumerate(xs)]

    @torch.no_grad()
    def _evaluate(self, data: _Padded, loss: bool = True) -> tuple[Tensor | None, Tensor]:
        """Per-member loss (None unless ``loss``) and accuracy ``[M]`` (model in eval mode)."""
        out = self.model(data.x)
        count = data.count.clamp_min(1)
        member_loss = self._member_loss(out, data.target, data.mask, count) if loss else None
        pred = self.head.decode(out)
        return member_loss, ((pred == data.y) & data.mask).sum(1) / count

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
        if self.class_weights is not None:  # torch's weighted mean: sum(w * loss) / sum(w)
            classes = self.head.classes_of(target).view(mask.shape)
            weight = torch.where(mask, self.class_weights.gather(1, classes), 0.0)
            return (per_row * weight).sum(1) / weight.sum(1).clamp_min(1e-12)
        if not full:
            per_row = torch.where(mask, per_row, 0.0)
        return per_row.sum(1) / count

    def _epoch_metrics(
        self, train_loss: Tensor, train: _Padded, val: _Padded, no_val: Tensor
    ) -> list[list[float]]:
        """``[M][train_loss, train_acc, val_loss, val_acc]`` after an epoch (one host sync), for
        the members the model holds now (``train``, ``val``: their rows; ``no_val``: which of
        them have no validation rows)."""
        self.model.eval()  # once for both passes: a mode switch walks every layer
        _, train_acc = self._evaluate(train, loss=False)
        if any(val.sizes):
            val_loss, val_acc = self._evaluate(val)
            val_loss = torch.where(no_val, train_loss, val_loss)
            val_acc = torch.where(no_val, train_acc, val_acc)
        else:  # no validation rows anywhere: the training figures stand in
            val_loss, val_acc = train_loss, train_acc
        self.model.train()
        rows = torch.stack([train_loss, train_acc, val_loss, val_acc]).float()
        return rows.T.tolist()

    # ------------------------------------------------------------------ training

    def live(self) -> list[int]:
        return [m for m, s in enumerate(self.state.members) if s.training and s.epoch < self.epochs]

    def run_epoch(self) -> bool:
        """One epoch of every live member: train, measure, record; then who improved."""
        live = self.live()
        self.trained, self.improved = [], []
        if not live:
            return False
        epoch = self.state.epoch + 1
        lr = self.optim.lr
        metrics = self._train_epoch(live)
        for m in live:
            member = self.state.members[m]
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
            score = self.monitor.epoch_score(metrics[m][2], metrics[m][3])
            # without a validation split nothing is selected: every epoch is the best so far
            if score > self.best_score[m] or not self.has_val[m]:
                self.best_score[m] = score
                member.best_epoch = epoch
                self.improved.append(m)
        if self.trained:
            self._record_mean(self.trained, epoch)
        return bool(self.trained)

    def _train_epoch(self, live: list[int]) -> dict[int, list[float]]:
        """One pass over each live member's shuffled rows, then their figures:
        ``{m: [train_loss, train_acc, val_loss, val_acc]}`` for ``m`` in ``live``.

        Once some members are done (stopped early, diverged, out of epochs), the live ones
        train and are measured alone: their slices of the weights, buffers and optimizer state
        are taken out for the epoch and written back after it, so the done ones cost nothing
        per step, nor in the epoch's evaluation."""
        if not self.model.training:
            self.model.train()
        if len(live) == self.count or not self._compactable():
            losses = self._train_rows(self.train, live, self.generators)
            rows = self._epoch_metrics(losses, self.train, self.val, self._no_val)
            return {m: rows[m] for m in live}
        with self._only(live) as (train, val, no_val):
            losses = self._train_rows(train, list(range(len(live))), self._select(live))
            rows = self._epoch_metrics(losses, train, val, no_val)
        return dict(zip(live, rows, strict=True))

    def _select(self, live: list[int]) -> list[torch.Generator]:
        return [self.generators[m] for m in live]

    def _index(self, live: list[int]) -> Tensor:
        return torch.tensor(live, dtype=torch.long, device=self.device)

    def _compactable(self) -> bool:
        """Every parameter has its optimizer state (made at the first step), and the
        optimizer steps without a closure: the live members' slices can train apart."""
        return not self.optim.closure and all(p in self.optimizer.state for p in self._params)

    @contextlib.contextmanager
    def _only(self, live: list[int]) -> Iterator[tuple[_Padded, _Padded, Tensor]]:
        """The model, optimizer, training and validation rows (and which have none) of the
        ``live`` members only, for one epoch."""
        index = self._index(live)
        # the state's buffers (fit first); not a non-persistent one such as an embedding's
        # column positions, whose length may equal the fits' count by chance
        stored = self.model.state_dict(keep_vars=True)
        buffers = [b for name, b in self.model.named_buffers() if name in stored]
        tensors = [*self._params, *buffers]
        if self.class_weights is not None:
            tensors.append(self.class_weights)
        swapped = [(t, t.data) for t in tensors if t.dim() and t.shape[0] == self.count]
        for t, full in swapped:
            t.data = full.index_select(0, index)
        states = []
        for p in self._params:
            state = self.optimizer.state[p]
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() and value.shape[0] == self.count:
                    state[key] = value.index_select(0, index)
                    states.append((state, key, value))
        optim, steps = self.optim, self.optim.steps
        optim.members, optim.steps = len(live), [steps[m] for m in live]
        try:
            yield (
                self.train.select(index, live),
                self.val.select(index, live),
                self._no_val.index_select(0, index),
            )
        finally:
            for t, full in swapped:
                t.data = full.index_copy_(0, index, t.data)
            for state, key, full in states:
                state[key] = full.index_copy_(0, index, state[key])
            for j, m in enumerate(live):
                steps[m] = optim.steps[j]
            optim.members, optim.steps = self.count, steps

    def _train_rows(
        self, data: _Padded, live: list[int], generators: Sequence[torch.Generator]
    ) -> Tensor:
        """One epoch of the ``live`` members of ``data`` (all of the model's members)."""
        count = len(data.sizes)
        plan = plan_epoch(
            data.sizes,
            live,
            self.batch_size,
            generators,
            batch_norm=self._batch_norm,
            noise_widths=self._noise_widths,
            dtype=data.x.dtype,
            padded=data.x.shape[1],
        )
        index, mask = plan.index.to(self.device), plan.mask.to(self.device)
        rows = plan.rows.to(self.device)
        x = data.x.flatten(0, 1)
        target = data.target.flatten(0, 1)
        x_batches = x.index_select(0, index.view(-1)).view(*index.shape, *x.shape[1:])
        t_batches = target.index_select(0, index.view(-1)).view(*index.shape, *target.shape[1:])
        noise = self.model.prepare_noise([u.to(self.device) for u in plan.uniforms])
        step_noise = list(zip(*(n.unbind(1) for n in noise), strict=True))
        # per-step views made once per epoch (one unbind each, not S indexings per tensor)
        batches = zip(
            x_batches.unbind(0),
            t_batches.unbind(0),
            mask.unbind(0),
            rows.clamp_min(1).unbind(0),
            strict=True,
        )
        # every member steps together (one plain optimizer step) up to the shortest one's end
        steps = plan.steps
        together = min(steps) if len(live) == count else 0
        losses = []
        for s, (xb, tb, mb, nb) in enumerate(batches):
            if step_noise:
                self.model.set_noise(step_noise[s])
            active = None if s < together else [m for m in live if steps[m] > s]
            losses.append(self.train_step(xb, tb, mb, nb, plan.full[s], active))
        self.model.set_noise(None)
        # member-major, so each member's sum runs over its own steps as it does alone
        rows = rows.T.contiguous()
        return (torch.stack(losses, 1) * rows).sum(1) / rows.sum(1).clamp_min(1)

    def train_step(
        self, xb: Tensor, tb: Tensor, mb: Tensor, nb: Tensor, full: bool, active: list[int] | None
    ) -> Tensor:
        """One optimizer step on one batch per member (``active``: the members that step,
        None for all); the members' losses ``[M]`` at the step's starting point."""
        if self.optim.closure:
            return self._closure_step(xb, tb, mb, nb, full)
        loss = self._loss(xb, tb, mb, nb, full)
        for p in self._params:  # zero_grad(set_to_none=True), without its per-call overhead
            p.grad = None
        loss.backward(self._ones[: len(loss)])  # d(sum of members' losses)/d(loss)
        if self.grad_clip:
            self._clip_gradients()
        if active is None:
            self.optim.step_all()
        else:
            self.optim.step(active)
        return loss.detach()

    def _loss(self, xb: Tensor, tb: Tensor, mb: Tensor, nb: Tensor, full: bool) -> Tensor:
        """Members' losses ``[M]`` on one step's batches (``full``: no padded row in them).
        A TabM's k submodels each see the batch: its loss is the mean of theirs."""
        k = self._submodels
        if k == 1:
            loss = self._member_loss(self.model(xb, mb, direct=True), tb, mb, nb, full)
        else:
            out = self.model(xb, mb, direct=True, submodels=True).flatten(1, 2)
            loss = self._member_loss(out, repeat_rows(tb, k), repeat_rows(mb, k), nb * k, full)
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

        self.optim.step_closure(closure)
        return last[0]  # the loss at the step's starting point, as for the other optimizers

    def _clip_gradients(self) -> None:
        """``clip_grad_norm_`` for each member's slice of the gradients."""
        grads = [p.grad for p in self._params if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (self.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))

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

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, progress, callbacks and RNG: enough to resume exactly."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "fit": self.state.to_dict(),
            "steps": list(self.optim.steps),
            "best_score": [list(s) for s in self.best_score],
            "callbacks": {name: cb.state_dict() for name, cb in self.policy().items()},
            "rng": {
                "generators": [g.get_state() for g in self.generators],
                "torch": torch.get_rng_state(),
            },
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def check_state(self, state: Any, where: str, key: str = "trainer") -> None:
        """:func:`~pricenet.engine.fit_state.check_trainer_state` against this trainer."""
        check_trainer_state(
            state,
            model=self.model,
            optimizer=self.optimizer,
            policy=self.policy(),
            monitor=self.monitor,
            where=where,
            train_sizes=self.train.sizes,
            batch_size=self.batch_size,
            key=key,
        )

    def load_state_dict(self, state: dict[str, Any], where: str = "trainer state") -> None:
        """Restore what :meth:`state_dict` saved (tensors may come on any device), once
        :func:`~pricenet.engine.fit_state.check_trainer_state` has accepted every value of it."""
        self.check_state(state, where)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.state = FitState.from_dict(state["fit"])
        self.optim.load_steps(state["steps"])
        self.best_score = [list(s) for s in state["best_score"]]
        for name, cb in self.policy().items():
            cb.load_state_dict(state["callbacks"][name])
        # RNG states are byte tensors that torch only accepts on the CPU
        for generator, saved in zip(self.generators, state["rng"]["generators"], strict=True):
            generator.set_state(saved.cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)


class Sequential(_Loop):
    """Members that cannot be packed, one :class:`Trainer` each, driven epoch by epoch.

    Each trainer keeps its own policy callbacks (best weights, early stopping, its scheduler);
    ``callbacks`` (reporting, checkpointing, pruning) see this object as they would see one
    packed trainer: ``state`` holds every member's record and the mean curves.
    """

    def __init__(self, trainers: Sequence[Trainer], callbacks: Sequence[Any] = ()) -> None:
        self.trainers = list(trainers)
        first = self.trainers[0]
        self.epochs, self.monitor, self.count = first.epochs, first.monitor, len(self.trainers)
        self.callbacks = list(callbacks)
        self.state = FitState(members=[t.state.members[0] for t in self.trainers])
        self.improved: list[int] = []
        self.trained: list[int] = []

    def run_epoch(self) -> bool:
        self.trained, self.improved = [], []
        epoch = self.state.epoch + 1
        for m, trainer in enumerate(self.trainers):
            if trainer.run_epoch():
                trainer.emit("on_epoch_end")
                self.trained.append(m)
                self.improved += [m] if trainer.improved else []
            self.state.members[m] = trainer.state.members[0]
        if self.trained:
            self._record_mean(self.trained, epoch)
        return bool(self.trained)

    def best_state(self) -> dict[str, Tensor]:
        """Every member's best weights, as one packed state dict."""
        return stack_members([t.best_state() for t in self.trainers])

    def state_dict(self) -> dict[str, Any]:
        """The members' current weights packed (``last.pt`` predicts with them), the run's
        progress, and each member's own trainer state (what a resume loads)."""
        return {
            "model": stack_members([t.model.state_dict() for t in self.trainers]),
            "fit": self.state.to_dict(),
            "trainers": [t.state_dict() for t in self.trainers],
        }

    def load_state_dict(self, state: dict[str, Any], where: str = "trainer state") -> None:
        """Restore what :meth:`state_dict` saved, once every member's state and the run's
        progress are accepted (:func:`~pricenet.engine.fit_state.check_sequential_state`)."""
        check_sequential_state(state, [t.check_state for t in self.trainers], where)
        for trainer, saved in zip(self.trainers, state["trainers"], strict=True):
            trainer.load_state_dict(saved, where)
        fit = FitState.from_dict(state["fit"])
        fit.members = [t.state.members[0] for t in self.trainers]
        self.state = fit
