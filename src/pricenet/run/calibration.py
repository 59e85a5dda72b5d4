"""Calibrated probabilities: temperature scaling, ECE, NLL and a reliability diagram.

Temperature scaling (Guo et al., 2017) divides a model's raw outputs by one scalar T > 0
fitted on the validation split, ``probabilities = head.probabilities(outputs / T)``: T > 1
softens an over-confident model, T < 1 sharpens an under-confident one, and the predicted
class never changes (argmax of logits, or the count of positive ordinal logits, is the same
for any T > 0).

* categorical head: the K logits are divided by T (the original method);
* ordinal and CORAL heads: the K-1 threshold logits ``P(y > k) = sigmoid(logit_k / T)``,
  the same scaling applied to each binary sub-problem (for CORAL: score and biases alike);
* regression heads: their probabilities are one-hot on the rounded output, no temperature
  changes them, so :func:`fit_temperature` returns 1.0 ("not applicable").

Pure functions on tensors/arrays; the pipeline decides where to call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pricenet.nn.heads import CategoricalHead, Head, OrdinalHead
from pricenet.run.plots import DPI, save_png

EPS = 1e-12
BINS = 15
LOG_T_RANGE = (-math.log(100.0), math.log(100.0))  # T in [0.01, 100]


def calibratable(head: Head) -> bool:
    """True for the heads whose probabilities a temperature changes."""
    return isinstance(head, CategoricalHead | OrdinalHead)


def fit_temperature(
    outputs: torch.Tensor, y: torch.Tensor, head: Head, max_iter: int = 100
) -> float:
    """The T > 0 minimising the NLL of ``head.probabilities(outputs / T)`` at labels ``y``.

    LBFGS on log T (so T stays positive), from T = 1. Returns 1.0 for heads a temperature
    does not change, for no rows, or when no T beats T = 1.
    """
    return fit_temperatures([outputs], [y], head, max_iter)[0]


def fit_temperatures(
    outputs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], head: Head, max_iter: int = 100
) -> list[float]:
    """:func:`fit_temperature` for many models at once, model ``m`` on its own ``outputs[m]``
    and labels ``ys[m]``: one LBFGS over the vector of their log T minimising the sum of their
    NLLs (each term depends on its own T only, so the minimum is each model's own), in one
    batched pass over every model's rows per evaluation instead of one LBFGS run per model.
    """
    fitted = [1.0] * len(outputs)
    used = [m for m, y in enumerate(ys) if len(y)]
    if not calibratable(head) or not used:
        return fitted
    rows = max(len(ys[m]) for m in used)
    z = torch.zeros(len(used), rows, outputs[used[0]].shape[-1])
    labels = torch.zeros(len(used), rows, 1, dtype=torch.long)
    mask = torch.zeros(len(used), rows)
    for j, m in enumerate(used):
        n = len(ys[m])
        z[j, :n] = outputs[m].detach().float().cpu()
        labels[j, :n, 0] = ys[m].detach().long().cpu()
        mask[j, :n] = 1.0
    counts = mask.sum(1)

    def nll(log_t: torch.Tensor) -> torch.Tensor:
        """Each model's mean ``-log p(label)`` at ``T = exp(log_t)``: ``[models]``."""
        probs = head.probabilities(z / log_t.exp().view(-1, 1, 1))
        picked = probs.gather(-1, labels).squeeze(-1).clamp_min(EPS).log()
        return -(picked * mask).sum(1) / counts

    log_t = torch.zeros(len(used), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(log_t).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperatures = log_t.detach().clamp(*LOG_T_RANGE).exp()
    with torch.no_grad():
        before, after = nll(torch.zeros(len(used))), nll(temperatures.log())
    for j, m in enumerate(used):
        t = float(temperatures[j])
        fitted[m] = t if math.isfinite(t) and after[j] < before[j] else 1.0
    return fitted


def _arrays(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    probs = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return probs.astype(np.float64), y.astype(np.int64)


def reliability_bins(probs: Any, y: Any, bins: int = BINS) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin ``((b-1)/bins, b/bins]``: rows, mean confidence, accuracy.

    Confidence is the top class probability, a row is correct when that class is the label.
    Empty bins have NaN confidence and accuracy.
    """
    probs, y = _arrays(probs, y)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        accuracy = np.bincount(index, correct, bins) / counts
    return {"counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probs: Any, y: Any, bins: int = BINS) -> float:
    """ECE: the row-weighted mean of |accuracy - confidence| over the confidence bins."""
    table = reliability_bins(probs, y, bins)
    counts = table["counts"]
    if counts.sum() == 0:
        return 0.0
    used = counts > 0
    gaps = np.abs(table["accuracy"][used] - table["confidence"][used])
    return float((gaps * counts[used]).sum() / counts.sum())


def negative_log_likelihood(probs: Any, y: Any) -> float:
    """Mean ``-log p(label)``; probabilities below 1e-12 count as 1e-12 (finite, strict JSON)."""
    probs, y = _arrays(probs, y)
    picked = probs[np.arange(len(y)), y]
    return float(-np.log(np.clip(picked, EPS, None)).mean())


def calibration_report(
    outputs: torch.Tensor, y: torch.Tensor, head: Head, temperature: float, bins: int = BINS
) -> dict[str, Any]:
    """ECE and NLL of ``head``'s probabilities before (T = 1) and after ``temperature``."""
    with torch.no_grad():
        before = head.probabilities(outputs.detach().float())
        after = head.probabilities(outputs.detach().float() / temperature)
    return {
        "temperature": float(temperature),
        "applicable": calibratable(head),
        "bins": bins,
        "rows": len(y),
        "ece_before": expected_calibration_error(before, y, bins),
        "ece_after": expected_calibration_error(after, y, bins),
        "nll_before": negative_log_likelihood(before, y),
        "nll_after": negative_log_likelihood(after, y),
    }


def plot_reliability(
    probs_before: Any, probs_after: Any, y: Any, path: str | Path, bins: int = BINS
) -> Path:
    """``reliability.png``: accuracy against confidence per bin, before and after scaling,
    with the diagonal of perfect calibration, and how many rows fall in each bin."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=DPI, layout="constrained")
    diagram, histogram = fig.subplots(1, 2)
    centers = (np.arange(bins) + 0.5) / bins
    diagram.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
    width = 0.9 / bins / 2
    for shift, (name, probs, color) in zip(
        (-width / 2, width / 2),
        (("before", probs_before, "tab:red"), ("after", probs_after, "tab:blue")),
        strict=True,
    ):
        table = reliability_bins(probs, y, bins)
        ece = expected_calibration_error(probs, y, bins)
        used = table["counts"] > 0
        diagram.plot(
            table["confidence"][used],
            table["accuracy"][used],
            marker="o",
            color=color,
            lw=2,
            label=f"{name} (ECE {ece:.4f})",
        )
        histogram.bar(centers + shift, table["counts"], width=width, color=color, label=name)
    diagram.set_xlim(0, 1)
    diagram.set_ylim(0, 1.02)
    diagram.set_xlabel("confidence (top class probability)")
    diagram.set_ylabel("accuracy")
    diagram.set_title(f"reliability diagram ({bins} bins)")
    diagram.grid(alpha=0.3)
    diagram.legend(fontsize=9, loc="upper left")
    histogram.set_xlim(0, 1)
    histogram.set_xlabel("confidence (top class probability)")
    histogram.set_ylabel("rows")
    histogram.set_yscale("log")
    histogram.set_title("rows per confidence bin")
    histogram.grid(alpha=0.3)
    histogram.legend(fontsize=9, loc="upper left")
    fig.suptitle("calibration before and after temperature scaling")
    return save_png(fig, path)
