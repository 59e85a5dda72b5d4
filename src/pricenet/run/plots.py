"""PNG figures of a finished run: learning curves (raw and EMA), confusion matrix, lr per epoch.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg canvas, no pyplot
state, no GUI backend), and matplotlib is imported only inside the functions that draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pricenet.atomic import atomic_write

CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion_matrix.png"
LR_PNG = "lr.png"
DPI = 120


def ema(values: Sequence[float], beta: float, bias_correction: bool = True) -> np.ndarray:
    """The exponentially weighted average ``v_t = beta * v_{t-1} + (1 - beta) * x_t``.

    With ``bias_correction`` each ``v_t`` is divided by ``1 - beta**t``, so the first values
    are not pulled towards the ``v_0 = 0`` start.
    """
    out = np.empty(len(values), dtype=np.float64)
    v = 0.0
    for t, x in enumerate(values, start=1):
        v = beta * v + (1 - beta) * float(x)
        out[t - 1] = v / (1 - beta**t) if bias_correction else v
    return out


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, columns)
    return fig, axes


def plot_curves(
    history: dict[str, list[float]],
    beta: float,
    path: str | Path,
    best_epoch: int | None = None,
    has_val: bool = True,
) -> Path:
    """Train and validation loss and accuracy per epoch: faint raw values, solid EMA.

    Without a validation split (``has_val`` False) the "val" curves are the training ones, so
    only train is drawn. A loss spanning more than two decades gets a log axis.
    """
    fig, axes = _figure(11, 4.2, columns=2)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    marker = "o" if len(epochs) <= 30 else None
    splits = [("train", "tab:blue")] + ([("val", "tab:orange")] if has_val else [])
    for ax, metric, title in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        for split, color in splits:
            raw = history[f"{split}_{metric}"]
            ax.plot(epochs, raw, color=color, alpha=0.35, lw=1, marker=marker, ms=3)
            ax.plot(epochs, ema(raw, beta), color=color, lw=2, label=f"{split} (EMA β={beta:g})")
        ax.plot([], [], color="gray", alpha=0.35, lw=1, label="raw per epoch")
        if best_epoch:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch {best_epoch}")
        values = np.asarray(history[f"train_{metric}"], dtype=np.float64)
        if metric == "loss" and values.min() > 0 and values.max() / values.min() > 100:
            ax.set_yscale("log")
        _epoch_axis(ax)
        ax.set_ylabel(title)
        ax.set_title(f"{title} per epoch" + ("" if has_val else " (no validation split)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"learning curves: raw and bias-corrected EMA (β = {beta:g})")
    return save_png(fig, path)


def plot_confusion(
    matrix: Sequence[Sequence[int]],
    path: str | Path,
    classes: Sequence[Any] | None = None,
    label: str = "price_range",
    title: str = "test confusion matrix",
) -> Path:
    """The confusion matrix: counts, true class by row, predicted class by column, the axes
    labelled with the label column and its class values."""
    cm = np.asarray(matrix, dtype=np.int64)
    k = len(cm)
    total = int(cm.sum())
    accuracy = np.trace(cm) / total if total else 0.0
    fig, ax = _figure(5.6, 4.8)
    image = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="test rows")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            color = "white" if cm[i, j] > threshold else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=11)
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel(f"predicted {label}")
    ax.set_ylabel(f"true {label}")
    ax.set_title(f"{title} (accuracy {accuracy:.3f}, n = {total})")
    return save_png(fig, path)


def plot_lr(lrs: Sequence[float], path: str | Path) -> Path:
    """The learning rate each epoch trained with (as the scheduler actually set it)."""
    fig, ax = _figure(6.4, 4)
    epochs = np.arange(1, len(lrs) + 1)
    ax.plot(epochs, lrs, drawstyle="steps-post", marker="o" if len(lrs) <= 30 else None, ms=3)
    positive = [v for v in lrs if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate per epoch (as applied)")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_run(
    run_dir: str | Path, metrics: dict[str, Any], beta: float, label: str = "price_range"
) -> dict[str, Path]:
    """All figures of a finished run (``metrics`` as in its ``metrics.json``), saved in it.

    With several fits the curves are their means and the confusion matrix pools every fit's
    held-out rows; with no held-out rows there is no confusion matrix.
    """
    run_dir = Path(run_dir)
    history = metrics["history"]
    figures = {
        CURVES_PNG: plot_curves(
            history,
            beta,
            run_dir / CURVES_PNG,
            metrics.get("best_epoch") if not metrics.get("members") else None,
            has_val=metrics.get("selection_split", "val") == "val",
        ),
        LR_PNG: plot_lr(history["lr"], run_dir / LR_PNG),
    }
    summary = metrics.get("cv") or metrics.get("seeds") or {}
    matrix = (metrics.get("test") or {}).get("confusion_matrix") or summary.get("confusion_matrix")
    if matrix:
        title = "held-out folds, pooled" if metrics.get("cv") else "test confusion matrix"
        figures[CONFUSION_PNG] = plot_confusion(
            matrix, run_dir / CONFUSION_PNG, metrics.get("classes"), label, title
        )
    return figures


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_png(fig: Any, path: str | Path, dpi: float | None = None) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically: a reader (or a crash) never sees half a
    picture, and a full disk is one :class:`~pricenet.atomic.WriteError` line. Every figure
    pricenet draws is written here."""
    return atomic_write(Path(path), lambda handle: fig.savefig(handle, format="png", dpi=dpi))
