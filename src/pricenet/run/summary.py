"""Summaries of repeated fits: the ``cv`` (and ``seeds``) block of metrics.json.

Each fit is scored on rows it never saw: its held-out fold in cross-validation, the shared
test split for seed repeats. The summary gives the mean, the standard deviation and a 95%
interval for the mean (Student's t over the fits). Folds of one repeat share training rows,
so the fits are not independent and the interval is, as usual for CV, somewhat optimistic;
repeats narrow it honestly by averaging over partitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided ``confidence`` interval of the mean of ``values`` (Student's t).

    The quantile comes from ``scipy.special.stdtrit`` (what ``scipy.stats.t.ppf`` computes),
    whose import costs a third of ``scipy.stats``'s.
    """
    from scipy.special import stdtrit

    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if len(data) < 2:
        return mean, mean
    half = float(
        stdtrit(len(data) - 1, 0.5 + confidence / 2) * data.std(ddof=1) / math.sqrt(len(data))
    )
    return mean - half, mean + half


def summarize(fits: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Mean, std (ddof=1) and 95% interval of each of ``keys`` over ``fits`` (None skipped)."""
    summary: dict[str, Any] = {}
    for key in keys:
        values = [f[key] for f in fits if f.get(key) is not None]
        if not values:
            summary[key] = None
            continue
        low, high = interval(values)
        summary[key] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "ci95": [low, high],
            "n": len(values),
        }
    return summary


def headline(label: str, summary: dict[str, Any], key: str = "acc") -> str:
    """``cv 5x3: acc 97.3 ± 1.0 (95% CI 96.8–97.8)`` (percent)."""
    stats = summary[key]
    if stats is None:
        return f"{label}: no {key}"
    low, high = stats["ci95"]
    return (
        f"{label}: {key} {100 * stats['mean']:.1f} ± {100 * stats['std']:.1f} "
        f"(95% CI {100 * low:.1f}–{100 * high:.1f})"
    )
