"""A torch optimizer over packed ``[M, ...]`` parameters, stepped member by member.

An elementwise optimizer (SGD, momentum, Adagrad, RMSprop, Adam, AdamW) on packed tensors is M
independent optimizers, except for two things this wrapper hides:

- a member that takes no step (no batch left this epoch, stopped early, diverged) must keep
  its parameter and optimizer-state slices: they are saved before the step and written back;
- optimizers that count steps (Adam's bias correction) keep one counter per tensor, so the
  wrapper keeps each member's own count, and when the stepping members' counts differ it
  steps once per distinct count (the other members' slices restored in between).

Both paths run only where needed: a step of every member with one count is one
``optimizer.step()``. Whether an optimizer may be packed is decided by its class
(:data:`ELEMENTWISE`) or by a class attribute ``elementwise = True`` a user's optimizer
declares; never by its config's name.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Optimizers whose step treats every element on its own: packed, they are M optimizers.
ELEMENTWISE: frozenset[type[torch.optim.Optimizer]] = frozenset(
    {
        torch.optim.SGD,
        torch.optim.Adagrad,
        torch.optim.RMSprop,
        torch.optim.Adam,
        torch.optim.AdamW,
    }
)
# Optimizers whose step() needs a closure that re-evaluates the loss.
CLOSURE: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.LBFGS,)
# Schedulers whose lr follows a metric: each model's own, so they are not shared by members.
METRIC_SCHEDULERS: tuple[type, ...] = (torch.optim.lr_scheduler.ReduceLROnPlateau,)


def is_elementwise(optimizer: type) -> bool:
    """Whether ``optimizer`` (a class) updates each weight on its own."""
    return optimizer in ELEMENTWISE or getattr(optimizer, "elementwise", False) is True


def packable(optimizer: type, scheduler: type | None) -> tuple[bool, str]:
    """Whether members with this optimizer and scheduler (classes) train packed exactly, and if
    not, why."""
    if scheduler is not None and issubclass(scheduler, METRIC_SCHEDULERS):
        return False, (
            f"scheduler=plateau ({scheduler.__name__}): each model's lr follows its own "
            "validation metric"
        )
    if issubclass(optimizer, CLOSURE):
        return False, f"optim=lbfgs ({optimizer.__name__}): its line search couples the models"
    if not is_elementwise(optimizer):
        return False, (
            f"{optimizer.__module__}.{optimizer.__name__} is not known to update each weight "
            "on its own (declare `elementwise = True` on the class if it does)"
        )
    return True, "elementwise optimizer and epoch-based schedule"


class MemberwiseOptimizer:
    """``optimizer`` over the ``members``-packed ``params``, with one step count per member."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[Tensor], members: int):
        self.optimizer = optimizer
        self.params = params
        self.members = members
        self.closure = isinstance(optimizer, CLOSURE)
        if members > 1 and not is_elementwise(type(optimizer)):
            raise ValueError(f"{type(optimizer).__name__} couples the members it steps: fit M=1")
        self.steps = [0] * members  # optimizer steps each member has taken
        self._counts_written = True  # the optimizer's step counters hold ``steps``

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def load_steps(self, steps: list[int]) -> None:
        """Each member's step count, as a resumed state holds them."""
        self.steps = list(steps)
        self._counts_written = False

    def _tensors(self) -> tuple[list[Tensor], list[dict[str, Any]]]:
        """Parameters and per-member optimizer state tensors; the states holding a step count."""
        tensors: list[Tensor] = []
        counters = []
        for p in self.params:
            tensors.append(p.data)
            state = self.optimizer.state.get(p, {})
            for value in state.values():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == self.members:
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

    def step_all(self) -> None:
        """``optimizer.step()`` for every member, all with the same step count."""
        if not self._counts_written:
            self.step(list(range(self.members)))
            return
        self.optimizer.step()
        self.steps = [n + 1 for n in self.steps]

    def step_closure(self, closure: Any) -> None:
        """One step of an optimizer that re-evaluates the loss itself (L-BFGS; M = 1)."""
        self.optimizer.step(closure)
        self.steps[0] += 1

    @torch.no_grad()
    def step(self, active: list[int]) -> None:
        """``optimizer.step()`` for the ``active`` members only; the others keep their slices."""
        if not active:
            return
        counts = {self.steps[m] for m in active}
        if len(active) == self.members and len(counts) == 1:
            if not self._counts_written:
                self._write_count(self._tensors()[1], self.steps[active[0]])
                self._counts_written = True
            self.optimizer.step()
        else:
            tensors, counters = self._tensors()
            if not counters:  # no step counter (SGD): one step for every active member
                counts = {0}
            if len(counts) == 1:
                self._step_some(tensors, counters, active, counts.pop())
            else:
                self._step_per_count(tensors, counters, active, counts)
            self._counts_written = False
        for m in active:
            self.steps[m] += 1

    def _step_some(
        self, tensors: list[Tensor], counters: list[dict[str, Any]], active: list[int], count: int
    ) -> None:
        """One step with one count: only the idle members' slices are saved and restored."""
        stepping = set(active)
        idle = [m for m in range(self.members) if m not in stepping]
        if counters:
            self._write_count(counters, count)
        if not idle:
            self.optimizer.step()
            return
        rows = torch.tensor(idle, dtype=torch.long, device=tensors[0].device)
        saved = [t.index_select(0, rows) for t in tensors]
        self.optimizer.step()
        for t, s in zip(tensors, saved, strict=True):
            t.index_copy_(0, rows, s)

    def _step_per_count(
        self,
        tensors: list[Tensor],
        counters: list[dict[str, Any]],
        active: list[int],
        counts: set[int],
    ) -> None:
        """One step per distinct count, each from the same starting slices."""
        before = [t.clone() for t in tensors]
        after = [t.clone() for t in tensors]
        for count in sorted(counts):
            group = [m for m in active if self.steps[m] == count]
            for t, b in zip(tensors, before, strict=True):
                t.copy_(b)
            self._write_count(counters, count)
            self.optimizer.step()
            for t, a in zip(tensors, after, strict=True):
                a[group] = t[group]
        for t, a in zip(tensors, after, strict=True):
            t.copy_(a)
