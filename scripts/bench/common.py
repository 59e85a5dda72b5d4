"""The pricenet side every section shares: configs, the data, folds and whole runs."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import pricenet.config.config  # noqa: F401  (registers the schemas)
from pricenet.run.fits import Prepared, load_data, plan_for, prepare
from pricenet.run.pipeline import run
from pricenet.run.plan import PlannedFit
from pricenet.run.recipe import Recipe
from pricenet.tables import Table, stratified_kfold

CPU = torch.device("cpu")
QUIET = ["trainer.device=cpu", "report.plots=false", "report.tensorboard=false"]


def compose_cfg(*overrides: str) -> DictConfig:
    """A pricenet config as the CLI composes it, quiet (no plots, bars or TensorBoard)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        return compose("config", overrides=[*QUIET, "report.progress=none", *overrides])


@dataclass
class Context:
    """What every section reads: the mode, the data (as overrides and as a table), the CV."""

    quick: bool
    data: list[str]
    table: Table
    cv: tuple[int, int]  # folds, repeats
    work: Path  # a scratch folder, removed after the run
    csv: Path | None = None

    @classmethod
    def create(cls, quick: bool, csv: Path | None, work: Path) -> Context:
        data = ["data.n_rows=600", "data.seed=1"] if quick else ["data=csv", f"data.path={csv}"]
        table = load_data(Recipe.of(compose_cfg(*data)).data)
        return cls(quick, data, table, (3, 1) if quick else (5, 3), work, csv)

    def csv_file(self) -> Path:
        """The data as a CSV: the real file, or the synthetic table written once."""
        if self.csv is None:
            self.csv = self.work / "synthetic.csv"
            self.table.to_frame().to_csv(self.csv, index=False)
        return self.csv

    @property
    def cv_overrides(self) -> list[str]:
        folds, repeats = self.cv
        return ["cv=kfold", f"cv.folds={folds}", f"cv.repeats={repeats}", "cv.keep=none"]

    def folds(self, table: Table | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The folds a ``cv=kfold`` run with seed 0 uses (same function, same seed)."""
        return stratified_kfold((table or self.table).labels, *self.cv, 0)

    def shrink(self, epochs: int) -> list[str]:
        """``trainer.epochs=epochs`` in quick mode, nothing otherwise."""
        return [f"trainer.epochs={epochs}"] if self.quick else []


def single(cfg: DictConfig, table: Table, rows: tuple[np.ndarray, ...], seed: int = 0) -> Prepared:
    """One member's tensors (train, val, test rows), prepared as the pipeline does."""
    return prepare(Recipe.of(cfg), table, [PlannedFit(*rows, seed)], CPU)


def whole_run(cfg: DictConfig) -> dict[str, Any]:
    """A whole ``run()`` in a scratch folder: its metrics, with run.json's wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics, _ = run(cfg, Path(tmp) / "run")
        metrics["wall_time_s"] = json.loads((Path(tmp) / "run" / "run.json").read_text())[
            "wall_time_s"
        ]
        return metrics


def fold_accuracies(metrics: dict[str, Any]) -> list[float]:
    """Held-out accuracy per member, in plan order (diverged members left out)."""
    return [r["test_acc"] for r in metrics["members"] if r.get("test_acc") is not None]


def spread(accuracies: list[float]) -> dict[str, float | int | None]:
    """Mean and population std in percent, and how many figures they summarize."""
    if not accuracies:
        return {"acc_mean": None, "acc_std": None, "n": 0}
    return {
        "acc_mean": 100 * statistics.mean(accuracies),
        "acc_std": 100 * statistics.pstdev(accuracies),
        "n": len(accuracies),
    }


def check_same_folds(cfg: DictConfig, table: Table, folds: list[tuple[np.ndarray, np.ndarray]]):
    """The run's plan holds exactly ``folds``' held-out rows (scikit-learn sees the same)."""
    plan = plan_for(Recipe.of(cfg), table)
    assert len(plan) == len(folds), (len(plan), len(folds))
    for member, (_, test) in zip(plan, folds, strict=True):
        assert np.array_equal(np.sort(member.test), np.sort(test)), "different folds"


def sklearn_cv(model: Any, table: Table, folds: list) -> tuple[list[float], float]:
    """A scikit-learn model fitted on each fold: held-out accuracies and seconds in all."""

    from sklearn.base import clone

    x, y = table.numeric_array(np.float64), table.labels
    accuracies, started = [], time.perf_counter()
    for train, test in folds:
        fitted = clone(model).fit(x[train], y[train])
        accuracies.append(float((fitted.predict(x[test]) == y[test]).mean()))
    return accuracies, time.perf_counter() - started
