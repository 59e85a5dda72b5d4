"""Which fits a run makes: one split, or cross-validation folds, each times ``trainer.seeds``.

Every fit (a *member* of the packed model) gets its own training, validation and held-out
rows and its own seed. The held-out rows of a fit never select anything: early stopping and
the best epoch use its validation rows, carved from its training rows.

- ``cv=none``: one stratified train/val/test split (``data.val_size``, ``data.test_size``,
  seeded by ``trainer.seed``), shared by ``trainer.seeds`` fits of seeds ``seed, seed+1, ...``.
  With one seed this is exactly the single run pricenet has always made.
- ``cv=kfold``: ``cv.repeats`` × ``cv.folds`` stratified folds of all labelled rows
  (``data.test_size`` is not used: each fold is held out once per repeat); each fold's
  validation rows are ``data.val_size`` of its training rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pricenet.errors import ConfigError
from pricenet.tables import Schema, stratified_kfold, stratified_split


@dataclass(frozen=True)
class Member:
    """One fit: its rows (indices into the table) and its seed."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    fold: int | None = None
    repeat: int | None = None

    @property
    def name(self) -> str:
        where = "" if self.fold is None else f"repeat {self.repeat} fold {self.fold} "
        return f"{where}seed {self.seed}"


def check_plan(cv: Mapping, seeds: int) -> None:
    """The plan's own settings, before any data is read."""
    folds, repeats, keep = cv.get("folds"), cv.get("repeats", 1), cv.get("keep", "ensemble")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"cv.folds={folds!r} is invalid: must be an integer >= 2 (or cv=none)")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"cv.repeats={repeats!r} is invalid: must be an integer >= 1")
    if keep not in ("ensemble", "refit", "none"):
        raise ConfigError(f"cv.keep={keep!r} is invalid: must be ensemble, refit or none")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"trainer.seeds={seeds!r} is invalid: must be an integer >= 1")


def make_plan(
    labels: np.ndarray,
    schema: Schema,
    *,
    cv: Mapping,
    val_size: float,
    test_size: float,
    seed: int,
    seeds: int,
    source: str,
) -> list[Member]:
    """The fits of a run, in member order (repeat, fold, seed)."""
    check_plan(cv, seeds)
    split = {"source": source, "label": schema.label, "classes": schema.classes}
    if cv.get("folds") is None:
        train, val, test = stratified_split(labels, val_size, test_size, seed, **split)
        return [Member(train, val, test, seed + s) for s in range(seeds)]
    folds = stratified_kfold(
        labels, cv["folds"], cv.get("repeats", 1), seed, source, classes=schema.classes
    )
    members = []
    for index, (train, test) in enumerate(folds):
        inner_train, inner_val, _ = stratified_split(labels[train], val_size, 0.0, seed, **split)
        for _ in range(seeds):
            members.append(
                Member(
                    np.sort(train[inner_train]),
                    np.sort(train[inner_val]),
                    np.sort(test),
                    seed + len(members),
                    fold=index % cv["folds"],
                    repeat=index // cv["folds"],
                )
            )
    return members


def refit_member(labels: np.ndarray, schema: Schema, val_size: float, seed: int, source: str):
    """``cv.keep=refit``: one more fit on every labelled row (its validation rows carved out)."""
    split = {"source": source, "label": schema.label, "classes": schema.classes}
    train, val, _ = stratified_split(labels, val_size, 0.0, seed, **split)
    return Member(train, val, np.array([], dtype=np.int64), seed)
