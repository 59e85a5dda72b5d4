"""Stratified row splits: one train/val/test split, or repeated stratified k folds; with groups,
every group's rows stay on one side of each split.

Folds come from scikit-learn: ``StratifiedKFold``, or ``StratifiedGroupKFold`` when some group
holds more than one row (``data.group`` and/or repeated feature rows), each shuffled and seeded
per repeat. ``groups`` are integer codes, one per row (equal code, same group); None, or all
distinct, means every row is its own group.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pricenet.errors import ConfigError, DataError


def _class_name(cls: int, classes: Sequence[int | str] | None) -> str:
    return str(int(cls)) if classes is None else repr(classes[int(cls)])


def _real_groups(groups: np.ndarray | None) -> np.ndarray | None:
    """``groups`` as codes 0..n_groups-1 when some group holds two or more rows, else None."""
    if groups is None:
        return None
    codes = pd.factorize(np.asarray(groups))[0]
    return None if len(codes) == 0 or codes.max() + 1 == len(codes) else codes


def _seeds(seed: int, count: int) -> list[int]:
    """``count`` scikit-learn random states (< 2**32) drawn from pricenet's seed."""
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**32 - 1, size=count)]


def _group_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int, random_state: int, source: str = "data"
):
    """(train, test) pairs that keep groups whole, stratified as the groups allow.

    ``StratifiedGroupKFold`` deals groups one at a time, a cost that grows with their number
    (0.2 to 1 ms a group per split here), so when enough rows stand alone they are dealt by
    ``StratifiedKFold`` and only the groups of two or more rows by ``StratifiedGroupKFold``;
    fold ``i`` joins the ``i``-th largest of one with the ``i``-th smallest of the other. Each
    part is stratified, so their union is too.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    sizes = np.bincount(groups)
    together = sizes[groups] > 1
    rows = np.arange(len(labels))
    parts: list[list[np.ndarray]] = []
    alone = np.bincount(labels[~together]) if (~together).any() else np.zeros(1, dtype=int)
    joined = np.bincount(labels[together]) if together.any() else np.zeros(1, dtype=int)
    # each splitter needs `folds` groups and some class with `folds` rows in its part
    split_alone = min(alone.max(), joined.max(), (sizes > 1).sum()) >= folds
    for chosen, grouped in (
        ((together, True), (~together, False)) if split_alone else ((rows >= 0, True),)
    ):
        subset = rows[chosen]
        if grouped:
            splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=random_state)
        else:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
        with warnings.catch_warnings():  # a class smaller than the folds: ours to report
            warnings.simplefilter("ignore", UserWarning)
            try:
                split = splitter.split(subset, labels[subset], groups[subset])
                tests = [subset[t] for _, t in split]
            except ValueError as err:  # too few groups, or rows per class, for the folds
                raise DataError(
                    f"{source}: cannot deal {folds} folds of whole groups ({err}); lower the "
                    "fold count or the held-out share, or data.duplicates=keep"
                ) from None
        parts.append(sorted(tests, key=len, reverse=grouped))
    fold_of = np.empty(len(labels), dtype=np.int64)
    for index, fold in enumerate(zip(*parts, strict=True)):
        fold_of[np.concatenate(fold)] = index
    return [(rows[fold_of != index], rows[fold_of == index]) for index in range(folds)]


def stratified_split(
    labels: np.ndarray,
    val_size: float,
    test_size: float,
    seed: int,
    *,
    groups: np.ndarray | None = None,
    source: str = "data",
    label: str = "price_range",
    classes: Sequence[int | str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split: every class keeps its share in each part.

    ``labels`` are class indices. ``source`` (the file) and ``label`` (the column) prefix the
    :class:`DataError` raised when the labels cannot be split; ``classes`` (the schema's
    values) name the classes in it. Without groups: same seed, same split as ever. With
    groups, see :func:`grouped_split`.
    """
    classes_present, counts = np.unique(labels, return_counts=True)
    if len(classes_present) == 0:
        raise DataError(f"{source}: no rows to split")
    if len(classes_present) < 2:
        raise DataError(
            f"{source}: column {label!r}: every row has class "
            f"{_class_name(classes_present[0], classes)}; at least two classes are needed to train"
        )
    grouped = _real_groups(groups)
    if grouped is not None:
        return grouped_split(labels, grouped, val_size, test_size, seed, source=source)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls, count in zip(classes_present, counts, strict=True):
        n_test = int(round(count * test_size))
        n_val = int(round(count * val_size))
        need = [
            test_size > 0 and n_test < 1,
            val_size > 0 and n_val < 1,
            count - n_test - n_val < 1,
        ]
        if any(need):
            raise DataError(
                f"{source}: column {label!r}: too few rows to split stratified: class "
                f"{_class_name(cls, classes)} has {count} row(s), which cannot be shared between "
                f"train, val (data.val_size={val_size}) and test (data.test_size={test_size})"
            )
        idx = rng.permutation(np.flatnonzero(labels == cls))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def grouped_split(
    labels: np.ndarray,
    groups: np.ndarray,
    val_size: float,
    test_size: float,
    seed: int,
    *,
    source: str = "data",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A train/val/test split that keeps each group on one side, stratified as groups allow.

    The test part is one fold of ``StratifiedGroupKFold(round(1 / test_size))``, the val part
    one fold of the rest, with ``round((1 - test_size) / val_size)`` folds: shares are those
    fractions (0.15 gives 1/7 ≈ 14.3%), as groups allow.
    """
    rows = np.arange(len(labels))
    random_states = _seeds(seed, 2)
    parts = []
    for share, random_state in zip((test_size, val_size), random_states, strict=True):
        relative = share / (1.0 - test_size) if parts else share
        if share <= 0:
            parts.append(rows[:0])
            continue
        folds = max(2, int(round(1.0 / relative)))
        left = rows[~np.isin(rows, parts[0])] if parts else rows
        codes = pd.factorize(groups[left])[0]
        if codes.max() + 1 < folds:
            raise DataError(
                f"{source}: only {codes.max() + 1} group(s) of rows to split; "
                f"too few to hold out {share:.0%} of them as whole groups"
            )
        _, held = _group_folds(labels[left], codes, folds, random_state, source)[0]
        parts.append(left[held])
    test, val = (np.sort(p) for p in parts)
    return rows[~np.isin(rows, np.concatenate([test, val]))], val, test


def stratified_kfold(
    labels: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    source: str = "data",
    *,
    groups: np.ndarray | None = None,
    classes: Sequence[int | str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds * repeats`` (train_idx, test_idx) pairs, repeat-major, sorted indices.

    Within a repeat the test parts are disjoint and cover every row once. Each repeat is
    scikit-learn's ``StratifiedKFold`` (or ``StratifiedGroupKFold`` with ``groups``),
    shuffled with its own random state drawn from ``seed``.
    """
    for key, value, least in (("cv.folds", folds, 2), ("cv.repeats", repeats, 1)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{key}={value!r}: must be an integer of at least {least}")
    labels = np.asarray(labels)
    classes_present, counts = np.unique(labels, return_counts=True)
    if len(classes_present) == 0:
        raise DataError(f"{source}: no rows to split")
    smallest = int(np.argmin(counts))
    if folds > counts[smallest]:
        raise ConfigError(
            f"cv.folds={folds}: {source}: class {_class_name(classes_present[smallest], classes)} "
            f"has only {counts[smallest]} row(s); every fold needs one (lower cv.folds)"
        )
    grouped = _real_groups(groups)
    if grouped is not None and grouped.max() + 1 < folds:
        raise ConfigError(
            f"cv.folds={folds}: {source}: the rows form only {grouped.max() + 1} "
            "group(s); every fold needs one (lower cv.folds)"
        )
    from sklearn.model_selection import StratifiedKFold

    out: list[tuple[np.ndarray, np.ndarray]] = []
    for random_state in _seeds(seed, repeats):
        if grouped is None:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
            pairs = splitter.split(np.zeros(len(labels)), labels)
        else:
            pairs = _group_folds(labels, grouped, folds, random_state, source)
        out.extend((np.sort(train), np.sort(test)) for train, test in pairs)
    return out
