"""pricenet's benchmarks -> BENCHMARKS.md.

    python -m scripts.bench [--quick] [--only SECTION ...] [--csv PATH] [--out PATH]

``harness`` times (wall, CPU, peak RSS), alternates contenders and records the machine;
each section module's ``measure(ctx)`` returns plain numbers, and its ``TABLES`` say how
``render`` shows them. A full run writes BENCHMARKS.md and the numbers as JSON beside it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Section name -> what it measures, in report order. Packed models come last: they measure
# the engine as it is at the end of the run.
SECTIONS = {
    "speed": "pricenet's loop vs the tutorial's, a step's phases, time to accuracy",
    "accuracy": "repeated stratified k-fold CV beside scikit-learn on the same folds",
    "e2e": "the default command vs `import torch`: wall, CPU, peak RSS",
    "ablation": "from the tutorial's recipe to the recommended one, under CV",
    "checkpoint": "last.pt by wall time vs at the end vs every epoch",
    "lbfgs": "the recommended recipe: L-BFGS vs Adam vs scikit-learn",
    "tables": "CSV and Parquet read + validation throughput and peak RSS",
    "external": "scikit-learn's wine and breast_cancer as CSVs",
    "tabular": "the tabular suite: pricenet recipes vs LightGBM, XGBoost, scikit-learn",
    "categories": "categorical features with many values: one-hot vs learned embeddings",
    "production": "ONNX parity, the HTTP service, the exported graph, calibration",
    "sweep": "a multirun vs separate runs, basic vs joblib launcher",
    "search": "Optuna search, pruning, one vs two workers",
    "packed": "k x r CV vs one fit: bare loops and whole runs, batch 8 and 64, early stopping",
    "tabm": "TabM's CPU cost: steps vs a plain MLP by k, width, arch, PLE; fits and 5-fold CV",
}


def section(name: str) -> ModuleType:
    """The module of section ``name`` (imported on demand: some pull heavy libraries)."""
    return importlib.import_module(f".{name}", __package__)
