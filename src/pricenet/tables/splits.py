"""Stratified row splits: one train/val/test split, or repeated stratified k folds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pricenet.errors import ConfigError, DataError


def _class_name(cls: int, classes: Sequence[int | str] | None) -> str:
    return str(int(cls)) if classes is None else repr(classes[int(cls)])


def stratified_split(
    labels: np.ndarray,
    val_size: float,
    test_size: float,
    seed: int,
    *,
    source: str = "data",
    label: str = "price_range",
    classes: Sequence[int | str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split: every class keeps its share in each part.

    ``labels`` are class indices. ``source`` (the file) and ``label`` (the column) prefix the
    :class:`DataError` raised when the labels cannot be split; ``classes`` (the schema's
    values) name the classes in it. Same seed, same split as the loader this replaced.
    """
    classes_present, counts = np.unique(labels, return_counts=True)
    if len(classes_present) == 0:
        raise DataError(f"{source}: no rows to split")
    if len(classes_present) < 2:
        raise DataError(
            f"{source}: column {label!r}: every row has class "
            f"{_class_name(classes_present[0], classes)}; at least two classes are needed to train"
        )
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


def stratified_kfold(
    labels: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    source: str = "data",
    *,
    classes: Sequence[int | str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds * repeats`` (train_idx, test_idx) pairs, repeat-major, sorted indices.

    Within a repeat the test parts are disjoint and cover every row once; each class is dealt
    round-robin over the folds after a seeded shuffle, continuing where the previous class
    stopped, so fold sizes differ by at most one and class shares by at most one row.
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
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    rows = np.arange(len(labels))
    for _ in range(repeats):
        fold_of = np.empty(len(labels), dtype=np.int64)
        offset = 0
        for cls in classes_present:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            fold_of[idx] = (np.arange(len(idx)) + offset) % folds
            offset = (offset + len(idx)) % folds
        for fold in range(folds):
            test = rows[fold_of == fold]
            out.append((rows[fold_of != fold], test))
    return out
