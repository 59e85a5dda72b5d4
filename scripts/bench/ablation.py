"""From the tutorial's recipe to the recommended one, one change at a time, under CV."""

from __future__ import annotations

import re
from typing import Any

from pricenet.errors import DivergenceError

from .common import Context, compose_cfg, fold_accuracies, spread, whole_run
from .render import Table

TABLES = {
    "ablation": Table(
        "Why the tutorial scored so low",
        "Held-out accuracy (%, mean ± std over the folds of one {folds}x{repeats} `cv=kfold` "
        "run per step) as the tutorial's recipe turns into the recommended one, one change at "
        "a time. Folds whose loss diverged are left out and counted.",
        (
            ("step", "{name}"),
            ("test acc %", "{acc_mean:.2f} ± {acc_std:.2f}"),
            ("folds diverged", "{diverged}/{members}"),
            ("first divergence, epoch", "{diverged_epoch}"),
            ("why it matters", "{why}"),
        ),
    ),
}

_FROM_TUTORIAL = ["experiment=tutorial"]
_STEPS: list[tuple[str, list[str], str]] = [
    (
        "tutorial recipe (`experiment=tutorial`)",
        [],
        "Raw features: ram and battery_power dwarf the 0/1 columns and the first SGD steps "
        "kill the ReLUs.",
    ),
    (
        "+ standardize",
        ["data.standardize=true"],
        "Every feature on the same footing, but dropout 0.9 scales the survivors tenfold and "
        "lr 0.1 overflows.",
    ),
    (
        "+ dropout 0.9 -> 0.1",
        ["model.dropout=0.1"],
        "Light dropout regularizes without starving the network of signal.",
    ),
    (
        "+ adam lr 0.01",
        ["optim=adam", "optim.lr=0.01"],
        "Adaptive steps; the MLP, not the optimizer, now limits accuracy.",
    ),
    (
        "+ full batch",
        ["trainer.batch_size=2048"],
        "One exact gradient per epoch instead of many noisy ones, at a fraction of the cost.",
    ),
    (
        "+ 3000 epochs, cosine lr",
        ["trainer.epochs=3000", "scheduler=cosine"],
        "Training to convergence adds little: the MLP fits the noise as fast as the signal.",
    ),
]
_RECOMMENDED = (
    "`experiment=recommended`",
    "A linear model with the CORAL ordinal head: the classes are ordered cuts of one score.",
)


def _diverged_epoch(messages: list[str]) -> int | None:
    epochs = [int(e) for e in re.findall(r"diverged at epoch (\d+)", " ".join(messages))]
    return min(epochs) if epochs else None


def _step(ctx: Context, name: str, overrides: list[str], why: str) -> dict[str, Any]:
    folds, repeats = ctx.cv
    members = folds * repeats
    cfg = compose_cfg(*ctx.data, *overrides, *ctx.cv_overrides, *ctx.shrink(3))
    try:
        metrics = whole_run(cfg)
    except DivergenceError as err:
        return {
            "name": name,
            **spread([]),
            "diverged": members,
            "members": members,
            "diverged_epoch": _diverged_epoch([str(err)]),
            "why": why,
        }
    errors = [m["error"] for m in metrics["members"] if m["error"] is not None]
    return {
        "name": name,
        **spread(fold_accuracies(metrics)),
        "diverged": len(errors),
        "members": members,
        "diverged_epoch": _diverged_epoch(errors),
        "why": why,
    }


def measure(ctx: Context) -> dict[str, Any]:
    """One CV run per step, each step adding its overrides to the previous ones."""
    rows, overrides = [], list(_FROM_TUTORIAL)
    for name, change, why in _STEPS:
        overrides += change
        rows.append(_step(ctx, name, list(overrides), why))
    rows.append(_step(ctx, _RECOMMENDED[0], ["experiment=recommended"], _RECOMMENDED[1]))
    folds, repeats = ctx.cv
    return {"ablation": {"facts": {"folds": folds, "repeats": repeats}, "rows": rows}}
