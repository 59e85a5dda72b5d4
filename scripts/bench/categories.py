"""Categorical features with many values: one-hot against pricenet's learned embeddings.

    python -m scripts.bench --only categories [--quick]

Real tables with a categorical feature of many values (a 51-valued US state, 38 car models:
:data:`scripts.bench.suite.MANY_CATEGORIES`), under the tabular benchmark's grouped CV
(:mod:`scripts.bench.tabular`: every contender on pricenet's own folds). pricenet's MLP and
``experiment=tabular`` run twice: every category one-hot (``data.category_embedding.above=
null``) and with the default (features with more than 16 categories embedded, 8 values each),
beside the trees and logistic regression.
"""

from __future__ import annotations

from typing import Any

from .common import Context
from .render import Table as Spec
from .suite import MANY_CATEGORIES
from .tabular import MODELS, bench

ONE_HOT = "data.category_embedding.above=null"
RECIPES = {
    "pricenet MLP one-hot": [ONE_HOT],
    "pricenet MLP embedded": [],
    "pricenet tabular one-hot": ["experiment=tabular", ONE_HOT],
    "pricenet tabular embedded": ["experiment=tabular"],
}
QUICK_CONTENDERS = ("RandomForest", "pricenet MLP one-hot", "pricenet MLP embedded")

TABLES = {
    "categories_suite": Spec(
        "Categorical features with many values: the tables",
        "Real tables with one categorical feature of many values (scripts/bench/suite.py, "
        "`MANY_CATEGORIES`), read with `data=csv data.missing=impute` and "
        "`data.max_categories=60` (so a 51-valued state is a category).",
        (
            ("table", "{name}"),
            ("source", "{source}"),
            ("rows", "{rows:,}"),
            ("distinct feature rows", "{distinct:,}"),
            ("numeric / categorical features", "{numeric} / {categorical}"),
            ("classes", "{classes}"),
        ),
    ),
    "categories_accuracy": Spec(
        "Categorical features with many values: held-out accuracy",
        "Mean held-out accuracy (%) ± std over the {fits} fits of grouped {folds}x{repeats} CV "
        "(pricenet's folds). 'one-hot': `data.category_embedding.above=null`; 'embedded': the "
        "default (a feature with more than 16 categories is looked up in a learned table of 8 "
        "values per category, per fit). Last rows: the mean over the tables and each "
        "contender's mean rank.",
        (),
    ),
    "categories_time": Spec(
        "Categorical features with many values: time",
        "Wall seconds for all {fits} fits of a table on one thread (pricenet: a whole run).",
        (),
    ),
}


def measure(ctx: Context) -> dict[str, Any]:
    """Every contender on every table (``--quick``: one table, 2 folds, 5 epochs, three
    contenders)."""
    tables = ["mpg"] if ctx.quick else list(MANY_CATEGORIES)
    contenders = list(QUICK_CONTENDERS) if ctx.quick else [*MODELS, *RECIPES]
    cv = (2, 1) if ctx.quick else (5, 3)
    folder = ctx.work / "categories"
    folder.mkdir(exist_ok=True)
    result = bench(tables, contenders, RECIPES, cv, ctx.quick, folder)
    return {
        "categories_suite": result["tabular_suite"],
        "categories_accuracy": result["tabular_accuracy"],
        "categories_time": result["tabular_time"],
    }
