"""Accuracy under repeated stratified k-fold CV: pricenet beside scikit-learn, same folds."""

from __future__ import annotations

from typing import Any

from .common import (
    Context,
    check_same_folds,
    compose_cfg,
    fold_accuracies,
    sklearn_cv,
    spread,
    whole_run,
)
from .render import Table

TABLES = {
    "accuracy": Table(
        "Accuracy",
        "{folds}-fold stratified CV repeated {repeats} times. Each pricenet contender is one "
        "`cv=kfold` run (members packed where the optimizer allows); scikit-learn fits the "
        "same folds (checked against each run's plan). Held-out accuracy in %, mean ± std "
        "over the folds; pricenet's MLPs pick their epoch on an inner validation split, "
        "scikit-learn tunes C on inner folds. Time: the whole CV, preprocessing included.",
        (
            ("contender", "{name}"),
            ("accuracy %", "{acc_mean:.2f} ± {acc_std:.2f}"),
            ("folds", "{n}"),
            ("s for the whole CV", "{seconds:.2f}"),
        ),
    ),
}

PRICENET = {
    "pricenet experiment=recommended": ["experiment=recommended"],
    "pricenet default config": [],
    "pricenet MLP + loss=coral": ["loss=coral"],
    "pricenet MLP + loss=bce": ["loss=bce"],
}


def sklearn_models(quick: bool) -> dict[str, Any]:
    """scikit-learn's classic models, C tuned on inner folds where it has one."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    def tuned(model: Any, name: str, grid: list[float]) -> Any:
        return GridSearchCV(make_pipeline(StandardScaler(), model), {f"{name}__C": grid}, cv=3)

    return {
        "LogisticRegression (C tuned)": tuned(
            LogisticRegression(max_iter=5000), "logisticregression", [0.1, 1, 10, 100, 1000]
        ),
        "LinearSVC (C tuned)": tuned(
            LinearSVC(max_iter=50000, dual=False), "linearsvc", [0.01, 0.1, 1, 10, 100]
        ),
        "SVC rbf (C tuned)": tuned(SVC(), "svc", [1, 10, 100, 1000]),
        "RandomForest": RandomForestClassifier(n_estimators=100 if quick else 300, random_state=0),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
        "MLPClassifier": make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=0)
        ),
    }


def measure(ctx: Context) -> dict[str, Any]:
    """Held-out accuracy and whole-CV seconds of every contender, best first."""
    folds = ctx.folds()
    rows = []
    for name, overrides in PRICENET.items():
        cfg = compose_cfg(*ctx.data, *overrides, *ctx.cv_overrides, *ctx.shrink(5))
        check_same_folds(cfg, ctx.table, folds)
        metrics = whole_run(cfg)
        rows.append({"name": name, **spread(fold_accuracies(metrics))})
        rows[-1]["seconds"] = metrics["wall_time_s"]
    for name, model in sklearn_models(ctx.quick).items():
        accuracies, seconds = sklearn_cv(model, ctx.table, folds)
        rows.append({"name": name, **spread(accuracies), "seconds": seconds})
    rows.sort(key=lambda row: -row["acc_mean"])
    folds_n, repeats = ctx.cv
    return {"accuracy": {"facts": {"folds": folds_n, "repeats": repeats}, "rows": rows}}
