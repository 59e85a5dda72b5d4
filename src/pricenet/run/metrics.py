"""Classification metrics from a confusion matrix (numpy only, no scikit-learn import).

Macro-F1 comes two ways. ``macro_f1`` averages over the classes present in the labels
(``y_true`` or ``y_pred``), like scikit-learn's default: a test split holding classes 0 and 3
only, all predicted right but one, reads 0.99, not 0.50. ``macro_f1_all_classes`` averages over
all ``num_classes``, counting an absent class as F1 = 0 (scikit-learn's ``labels=range(K)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _labels(y: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """``y`` as int64 class indices, each in ``0..num_classes-1`` (ValueError otherwise)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of class indices, got shape {y.shape}")
    labels = y.astype(np.int64)
    if y.size and (
        not np.array_equal(labels, y) or labels.min() < 0 or labels.max() >= num_classes
    ):
        raise ValueError(f"{name} holds values outside the classes 0..{num_classes - 1}")
    return labels


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    true = _labels(y_true, num_classes, "y_true")
    pred = _labels(y_pred, num_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} != {pred.size}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (true, pred), 1)
    return cm


def per_class_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of each class; 0 where a score divides by zero."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def present_classes(cm: np.ndarray) -> np.ndarray:
    """The classes that occur in the labels or the predictions (a row or column sum > 0)."""
    return np.flatnonzero((cm.sum(axis=0) + cm.sum(axis=1)) > 0)


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Accuracy, both macro-F1s, per-class precision/recall/F1/support and the confusion matrix.

    ``y_true``/``y_pred`` are class indices; ``labels`` (the schema's class values, e.g.
    ``[3, ..., 8]`` or ``["low", "high"]``) name the per-class entries, else the indices do.
    With no rows at all every score is 0.0 and ``classes_present`` is empty.
    """
    values = list(labels) if labels is not None else list(range(num_classes))
    names = [str(v) for v in values]
    cm = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1 = per_class_scores(cm)
    present = present_classes(cm)
    total = cm.sum()
    actual = cm.sum(axis=1)
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.size else 0.0,
        "macro_f1_all_classes": float(f1.mean()),
        "classes_present": [values[k] for k in present],
        "per_class": {
            names[k]: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(actual[k]),
            }
            for k in range(num_classes)
        },
        "confusion_matrix": cm.tolist(),
    }
