"""A fit's progress (:class:`FitState`) and the checks a saved trainer state must pass.

A resumed run loads ``last.pt``'s ``trainer`` state; :func:`check_trainer_state` refuses one
that the trainer this config builds could not continue exactly, before anything is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pricenet.checkpoints.checkpoint import check_tensors
from pricenet.checkpoints.state_checks import (
    check_int,
    check_list,
    check_mapping,
    check_number,
    check_optimizer_state,
    check_rng_state,
    check_scores,
    fail,
)
from pricenet.config.monitor import Monitor
from pricenet.engine.epochs import batches_per_epoch
from pricenet.errors import shown
from pricenet.nn.packed import PackedBatchNorm1d, PackedMLP

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def _empty_history() -> dict[str, list[float]]:
    return {k: [] for k in CURVES}


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


TRAINER_KEYS = ("model", "optimizer", "fit", "steps", "best_score", "callbacks", "rng")
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


def _check_fit(value: Any, members: int, where: str, key: str = "trainer.fit") -> FitState:
    """A saved :class:`FitState`: one record per member, epochs and best epochs in range,
    histories as long as the epochs, members still training at the run's epoch."""
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
    policy: Mapping[str, Any],
    monitor: Monitor,
    where: str,
    train_sizes: Sequence[int] | None = None,
    batch_size: int | None = None,
    key: str = "trainer",
) -> None:
    """Refuse a saved trainer state (``last.pt``'s ``trainer``) that the trainer built from
    this run's config could not continue exactly, before anything of it is loaded.

    ``model`` and ``optimizer`` are freshly built from the config (nothing stepped yet), and
    ``policy`` the run's stateful callbacks by name, bound to them: the state's weights must
    fit the model; it must hold a state for exactly those callbacks, each accepted by the
    callback's ``check_state`` (the scheduler's gives the param groups as they must be at the
    saved epoch); its optimizer's hyper-parameters must equal the config's and its state
    tensors the parameters' shapes; epochs, best epochs, best scores and step counts must lie
    in range, with one entry per member; RNG states must be what torch accepts. With
    ``train_sizes`` (each member's training rows) and ``batch_size``, each member's step count
    must be the one its epochs took.
    Raises :class:`~pricenet.errors.CheckpointError` naming ``where`` and the key.
    """
    members = model.members
    state = check_mapping(state, TRAINER_KEYS, where, key)
    check_tensors(state["model"], model.state_dict(), f"{where}: {key}.model")
    fit = _check_fit(state["fit"], members, where, f"{key}.fit")
    steps = check_list(state["steps"], members, where, f"{key}.steps")
    batch_norm = any(isinstance(m, PackedBatchNorm1d) for m in model.modules())
    for m, count in enumerate(steps):
        check_int(count, 0, None, where, f"{key}.steps[{m}]")
        if train_sizes is None or batch_size is None:
            continue
        member = fit.members[m]
        epochs = member.epoch + (member.error is not None)  # a diverged member's last epoch
        expected = epochs * batches_per_epoch(train_sizes[m], batch_size, batch_norm)
        if count != expected:
            raise fail(
                where,
                f"{key}.steps[{m}]",
                f"is {count}, but {member.epoch} epoch(s) of this member take {expected} steps",
            )
    width = len(monitor.epoch_score(0.0, 0.0))
    check_scores(state["best_score"], members, width, where, f"{key}.best_score")
    saved = check_mapping(state["callbacks"], list(policy), where, f"{key}.callbacks")
    groups = [dict(g) for g in optimizer.param_groups]
    for name, callback in policy.items():
        found = callback.check_state(saved[name], where, f"{key}.callbacks.{name}", fit)
        if found is not None:
            groups = found
    check_optimizer_state(
        state["optimizer"], optimizer, groups, fit.epoch, max(steps, default=0), where
    )
    rng = state["rng"]
    keys = [
        "generators",
        "torch",
        *(["cuda"] if isinstance(rng, Mapping) and "cuda" in rng else []),
    ]
    rng = check_mapping(rng, keys, where, f"{key}.rng")
    reference = torch.Generator().get_state()
    for m, saved_rng in enumerate(
        check_list(rng["generators"], members, where, f"{key}.rng.generators")
    ):
        check_rng_state(saved_rng, reference, where, f"{key}.rng.generators[{m}]")
    check_rng_state(rng["torch"], reference, where, f"{key}.rng.torch")
    if "cuda" in rng:
        cuda = rng["cuda"]
        if not isinstance(cuda, torch.Tensor) or cuda.dtype != torch.uint8 or cuda.dim() != 1:
            raise fail(where, f"{key}.rng.cuda", "is not a generator state (a byte tensor)")


SEQUENTIAL_KEYS = ("model", "fit", "trainers")


def check_sequential_state(state: Any, checks: Sequence[Any], where: str) -> None:
    """Refuse a saved state of members fitted one by one (:class:`~pricenet.engine.loop.Sequential`)
    unless every member's trainer state passes its ``checks[m](state, where, key)`` and the
    run's progress agrees with them (its records are theirs)."""
    state = check_mapping(state, SEQUENTIAL_KEYS, where, "trainer")
    _check_fit(state["fit"], len(checks), where)
    trainers = check_list(state["trainers"], len(checks), where, "trainer.trainers")
    for m, (check, saved) in enumerate(zip(checks, trainers, strict=True)):
        key = f"trainer.trainers[{m}]"
        check(saved, where, key)
        if saved["fit"]["members"][0] != state["fit"]["members"][m]:
            raise fail(where, f"trainer.fit.members[{m}]", f"differs from {key}.fit.members[0]")
