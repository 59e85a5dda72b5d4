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

**Groups.** Rows that share a ``data.group`` value, and (under ``data.duplicates=group``, the
default) rows with identical feature values, form one group: :func:`split_groups` joins both
into integer codes, and every split above (the outer folds, the single split, each fit's
inner validation split, the refit's) keeps a group's rows on one side. Without any group of
two or more rows the splits are exactly the ungrouped ones.

The plan deals in *fits*: rows and a seed each. What a fit trains (one network, or an
ensemble of k submodels inside one network) is the model's business, so a model whose fits
hold several submodels packs fits x submodels without a change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pricenet.config.config import check_plan
from pricenet.errors import DataError
from pricenet.tables import Schema, Table, stratified_kfold, stratified_split


@dataclass(frozen=True)
class PlannedFit:
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
    groups: np.ndarray | None = None,
) -> list[PlannedFit]:
    """The fits of a run, in member order (repeat, fold, seed); ``groups`` (integer codes, one
    per row, from :func:`split_groups`) stay on one side of every split."""
    check_plan(cv, seeds)
    split = {"source": source, "label": schema.label, "classes": schema.classes}
    if cv.get("folds") is None:
        train, val, test = stratified_split(
            labels, val_size, test_size, seed, groups=groups, **split
        )
        return [PlannedFit(train, val, test, seed + s) for s in range(seeds)]
    folds = stratified_kfold(
        labels,
        cv["folds"],
        cv.get("repeats", 1),
        seed,
        source,
        groups=groups,
        classes=schema.classes,
    )
    members = []
    for index, (train, test) in enumerate(folds):
        inner = None if groups is None else groups[train]
        inner_train, inner_val, _ = stratified_split(
            labels[train], val_size, 0.0, seed, groups=inner, **split
        )
        for _ in range(seeds):
            members.append(
                PlannedFit(
                    np.sort(train[inner_train]),
                    np.sort(train[inner_val]),
                    np.sort(test),
                    seed + len(members),
                    fold=index % cv["folds"],
                    repeat=index // cv["folds"],
                )
            )
    return members


def refit_member(
    labels: np.ndarray,
    schema: Schema,
    val_size: float,
    seed: int,
    source: str,
    groups: np.ndarray | None = None,
) -> PlannedFit:
    """``cv.keep=refit``: one more fit on every labelled row (its validation rows carved out)."""
    split = {"source": source, "label": schema.label, "classes": schema.classes}
    train, val, _ = stratified_split(labels, val_size, 0.0, seed, groups=groups, **split)
    return PlannedFit(train, val, np.array([], dtype=np.int64), seed)


def split_groups(table: Table, column: str | None = None) -> np.ndarray | None:
    """Integer group codes for the splits, one per row, or None when every row stands alone.

    ``table.groups`` (the ``data.group`` column) and, under ``data.duplicates=group``, the
    sets of identical feature rows are joined: rows linked through either share a code (the
    connected components of groups and sets). Refuses a group that holds every row of a
    class, naming ``column`` and the class: no split could both train on it and hold it out.
    """
    user = None if table.groups is None else pd.factorize(table.groups)[0]
    found = table.duplicates
    same = found.codes if found is not None and found.policy == "group" and found.rows else None
    if user is None and same is None:
        return None
    if user is None or same is None:
        codes = user if same is None else same
    else:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n_user, n_same = int(user.max()) + 1, int(same.max()) + 1
        edges = coo_matrix(
            (np.ones(len(user)), (user, same + n_user)), shape=(n_user + n_same,) * 2
        )
        codes = connected_components(edges, directed=False)[1][user]
    codes = np.asarray(codes, dtype=np.int64)
    _check_classes(table, codes, column)
    return None if len(np.unique(codes)) == len(codes) else codes


def _check_classes(table: Table, codes: np.ndarray, column: str | None) -> None:
    assert table.labels is not None
    for cls in np.unique(table.labels):
        rows = np.flatnonzero(table.labels == cls)
        if len(rows) < 2 or len(np.unique(codes[rows])) > 1:
            continue
        name = repr(table.schema.classes[int(cls)])
        values = None if table.groups is None else np.unique(table.groups[rows])
        if column is not None and values is not None and len(values) == 1:
            who, hint = f"column {column!r} (data.group): group {values[0]!r}", ""
        elif column is not None:
            who = (
                f"column {column!r} (data.group), joined through identical feature rows "
                "(data.duplicates=group), makes one group that"
            )
            hint = f" (data.duplicates=keep groups by {column!r} alone)"
        else:
            who = "one set of identical feature rows (data.duplicates=group)"
            hint = " (data.duplicates=keep splits them)"
        raise DataError(
            f"{table.source}: {who} holds every row of class {name} ({len(rows)} rows) in "
            f"column {table.schema.label!r}; no split can both train on that class and hold "
            f"it out{hint}"
        )
