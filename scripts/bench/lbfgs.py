"""The recommended recipe: L-BFGS against many full-batch Adam epochs, and scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np

from pricenet.run.fits import build_trainer, plan_for, prepare
from pricenet.run.recipe import Recipe

from .common import CPU, Context, check_same_folds, compose_cfg, fold_accuracies, spread, whole_run
from .harness import alternate, timed
from .render import Table

TABLES = {
    "lbfgs": Table(
        "The recommended recipe: L-BFGS vs Adam",
        "`experiment=recommended` (linear model, CORAL head) fitted with L-BFGS vs "
        "{adam_epochs} full-batch Adam epochs. One fit: median of {repeats} alternated fits on "
        "the first fold's {rows} training rows after a warm-up. CV: one {folds}x{cv_repeats} "
        "`cv=kfold` run, run.json's wall time. scikit-learn's LogisticRegression: the same "
        "rows, standardized with their own statistics, and the same folds.",
        (
            ("recipe", "{name}"),
            ("one fit s", "{fit_s:.3f}"),
            ("CV s", "{cv_s:.2f}"),
            ("CV accuracy %", "{acc_mean:.2f} ± {acc_std:.2f}"),
        ),
    ),
}


def _standardized(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[rows].mean(0), x[rows].std(0) + 1e-12


def measure(ctx: Context) -> dict[str, Any]:
    """One-fit and whole-CV seconds and CV accuracy of each recipe."""
    from sklearn.linear_model import LogisticRegression

    adam_epochs, repeats = (300, 1) if ctx.quick else (3000, 3)
    recipes = {
        "L-BFGS (`experiment=recommended`)": [],
        f"Adam, {adam_epochs} epochs (`optim=adam optim.lr=0.1 scheduler=cosine`)": [
            "optim=adam",
            "optim.lr=0.1",
            "scheduler=cosine",
            f"trainer.epochs={adam_epochs}",
        ],
    }
    folds = ctx.folds()
    fits, rows = {}, []
    for name, overrides in recipes.items():
        cfg = compose_cfg(*ctx.data, "experiment=recommended", *overrides, *ctx.cv_overrides)
        check_same_folds(cfg, ctx.table, folds)
        recipe = Recipe.of(cfg)
        prepared = prepare(recipe, ctx.table, plan_for(recipe, ctx.table)[:1], CPU)
        build_trainer(recipe, prepared).fit()  # warm-up
        fits[name] = lambda r=recipe, p=prepared: build_trainer(r, p).fit()
        metrics = whole_run(cfg)
        rows.append(
            {"name": name, "cv_s": metrics["wall_time_s"], **spread(fold_accuracies(metrics))}
        )
    x, y = ctx.table.numeric_array(np.float64), ctx.table.labels
    train = folds[0][0]
    mean, std = _standardized(x, train)
    name = "scikit-learn LogisticRegression (C=1, lbfgs, standardized)"
    fits[name] = lambda: LogisticRegression(max_iter=5000).fit((x[train] - mean) / std, y[train])
    fits[name]()  # warm-up
    fit_s = alternate(fits, repeats)
    accuracies = []

    def sklearn_cv() -> None:
        for train_rows, test_rows in folds:
            mu, sd = _standardized(x, train_rows)
            model = LogisticRegression(max_iter=5000).fit((x[train_rows] - mu) / sd, y[train_rows])
            accuracies.append(
                float((model.predict((x[test_rows] - mu) / sd) == y[test_rows]).mean())
            )

    rows.append({"name": name, "cv_s": timed(sklearn_cv), **spread(accuracies)})
    for row in rows:
        row["fit_s"] = fit_s[row["name"]]
    folds_n, cv_repeats = ctx.cv
    facts = {
        "adam_epochs": adam_epochs,
        "repeats": repeats,
        "rows": len(train),
        "folds": folds_n,
        "cv_repeats": cv_repeats,
    }
    return {"lbfgs": {"facts": facts, "rows": rows}}
