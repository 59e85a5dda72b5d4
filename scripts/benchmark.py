"""Side-by-side benchmarks for pricenet -> BENCHMARKS.md.

    python scripts/benchmark.py [--quick] [--csv PATH] [--out PATH] [--only a,b]

Sections (all in one process run; contenders alternate so machine noise hits them alike):
  speed       pricenet's loop vs the tutorial's DataLoader loop, the full-batch limit, and
              where a training step's time goes
  tta         wall time until validation accuracy first reaches 95%
  accuracy    repeated stratified k-fold CV (`cv=kfold cv.repeats=3`): pricenet's contenders
              beside scikit-learn's classic models on the SAME folds
  e2e         `python -m pricenet.train` vs `python -c "import torch"`, and peak RSS
  ablation    from experiment=tutorial to experiment=recommended, one change at a time, under CV
  checkpoint  the 3000-epoch full-batch run: checkpoint every 30 s (default) vs at the end only
  lbfgs       experiment=recommended with L-BFGS vs the former 3000 Adam epochs, and
              scikit-learn's LogisticRegression on the same rows
  tables      CSV read + validation throughput at 1M rows, peak RSS (scripts/table_benchmark.py)
  external    scikit-learn's wine and breast_cancer as CSVs: pricenet beside LR, RF, HGB
  production  ONNX parity, the HTTP service, the exported graph, calibration
              (scripts/production_benchmark.py)
  search      scripts/search_benchmark.py, when it exists
  packed      5x3 CV of the default MLP: packed vs 15 sequential fits vs one fit (batch 64
              and 8), and 15 seeds; last, so it measures the engine as it is at the end

--quick runs everything on small synthetic data in a few minutes (used by the tests).

Only a full run (every section, real data) writes the committed BENCHMARKS.md by default; a
--quick or --only run writes outputs/benchmarks/quick.md or partial.md instead, and quick-mode
figures are never written over BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import logging
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import pricenet.config  # noqa: F401  (registers the schemas)
from pricenet.errors import DivergenceError
from pricenet.members import Prepared, build_trainer, load_data, plan_for, prepare
from pricenet.pipeline import run
from pricenet.plan import Member
from pricenet.seed import set_seed
from pricenet.tables import Table, stratified_kfold, stratified_split

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
COMMITTED = REPO / "BENCHMARKS.md"
DEFAULT_CSV = REPO.parent / "shared" / "data" / "mobile_price.csv"
SECTIONS = (
    "speed",
    "tta",
    "accuracy",
    "e2e",
    "ablation",
    "checkpoint",
    "lbfgs",
    "tables",
    "external",
    "production",
    "search",
    "packed",
)
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- helpers


def compose_cfg(*overrides: str) -> DictConfig:
    """A pricenet config, as the CLI would compose it (quiet: no plots, bars or TensorBoard)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "trainer.device=cpu",
                "report.plots=false",
                "report.tensorboard=false",
                "report.progress=none",
                *overrides,
            ],
        )


def mean_std(values: list[float]) -> str:
    """Percent mean ± population std."""
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.pstdev(values):.2f}"


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Bench:
    """What every section needs: the mode, the data overrides and the table they describe."""

    quick: bool
    csv: Path | None
    data: list[str]
    table: Table
    cv: tuple[int, int]  # folds, repeats of the CV sections
    ablation_cv: tuple[int, int]  # the ablation's (its 3000-epoch MLP step is the costly one)

    def csv_file(self) -> Path:
        """The data as a CSV file: the real one, or (--quick) the synthetic table written once."""
        if self.csv is None:
            self.csv = Path(tempfile.mkdtemp(prefix="pricenet-bench-")) / "synthetic.csv"
            self.table.to_frame().to_csv(self.csv, index=False)
        return self.csv

    @property
    def cv_overrides(self) -> list[str]:
        folds, repeats = self.cv
        return ["cv=kfold", f"cv.folds={folds}", f"cv.repeats={repeats}", "cv.keep=none"]

    def folds(self, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """The folds a ``cv=kfold`` run with ``trainer.seed=seed`` uses (same function, seed)."""
        folds, repeats = self.cv
        return stratified_kfold(self.table.labels, folds, repeats, seed)


def single(
    cfg: DictConfig,
    table: Table,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    seed: int = 0,
) -> Prepared:
    """One member's tensors (preprocessor fitted on ``train``), as the pipeline prepares them."""
    return prepare(cfg, table, [Member(train, val, test, seed)], CPU)


def cv_run(cfg: DictConfig) -> tuple[dict[str, Any], float]:
    """A whole ``run()`` in a scratch folder: its metrics and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        metrics, _ = run(cfg, Path(tmp) / "run")
        return metrics, time.perf_counter() - started


def fold_accuracies(metrics: dict[str, Any]) -> list[float]:
    """Held-out accuracy per member, in plan order (diverged members left out)."""
    return [r["test_acc"] for r in metrics["members"] if r.get("test_acc") is not None]


def check_same_folds(cfg: DictConfig, table: Table, folds: list[tuple[np.ndarray, np.ndarray]]):
    """The run's plan holds exactly ``folds``' held-out rows (scikit-learn sees the same)."""
    plan = plan_for(cfg, table)
    assert len(plan) == len(folds), (len(plan), len(folds))
    for member, (_, test) in zip(plan, folds, strict=True):
        assert np.array_equal(np.sort(member.test), np.sort(test)), "different folds"


@dataclass
class Report:
    """Markdown sections collected as the benchmark runs."""

    quick: bool
    data: str
    parts: list[str] = field(default_factory=list)

    def section(self, title: str, intro: str, header: list[str], rows: list[list[Any]]) -> None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.text(title, intro, lines)

    def text(self, title: str, intro: str, lines: list[str]) -> None:
        self.parts.append("\n".join([f"## {title}", "", intro, "", *lines]) + "\n")
        print(self.parts[-1], flush=True)

    def markdown(self) -> str:
        import hydra
        import pandas
        import sklearn

        cpu = platform.processor() or "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
        head = [
            "# pricenet benchmarks",
            "",
            f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.machine()}"
            f"; load average at the end (1/5/15 min): {load}",
            f"- python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), hydra {hydra.__version__}, "
            f"scikit-learn {sklearn.__version__}, pandas {pandas.__version__}, "
            f"numpy {np.__version__}",
            f"- data: {self.data}"
            + ("  (--quick: small synthetic data, figures not meaningful)" if self.quick else ""),
            "",
        ]
        return "\n".join(head) + "\n" + "\n".join(self.parts)


# --------------------------------------------------------------------------- the tutorial's loop


class TutorialNet(torch.nn.Module):
    """The tutorial's hand-written network: 20 -> 64 -> 128 -> 4 with dropout."""

    def __init__(self, dropout: float = 0.9) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(20, 64)
        self.fc2 = torch.nn.Linear(64, 128)
        self.fc3 = torch.nn.Linear(128, 4)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


def tutorial_fit(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    dropout: float,
    on_epoch: Callable[[torch.nn.Module], bool] | None = None,
) -> torch.nn.Module:
    """The tutorial's loop: TensorDataset + DataLoader(shuffle) + `.item()` on every batch.

    ``on_epoch(model)`` may return True to stop (used for time-to-accuracy).
    """
    from torch.utils.data import DataLoader, TensorDataset

    model = TutorialNet(dropout)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = torch.nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        model.train()
        running = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        if on_epoch is not None and on_epoch(model):
            break
    return model


def tutorial_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- speed, tta


def speed(report: Report, bench: Bench) -> None:
    """pricenet's Trainer vs the tutorial loop, same model/optimizer/batch/epochs."""
    epochs, reps = (3, 2) if bench.quick else (10, 5)
    table = bench.table
    rows = []
    train, val, test = stratified_split(table.labels, 0.0, 0.2, 0)
    for batch in (8, 64):
        cfg = compose_cfg(
            *bench.data,
            "experiment=tutorial",
            f"trainer.batch_size={batch}",
            f"trainer.epochs={epochs}",
            "optim.lr=0.01",
            "data.standardize=true",
        )
        set_seed(0)
        prepared = single(cfg, table, train, val, test)
        x_train, y_train = prepared.members[0].x_train, prepared.members[0].y_train
        build_trainer(cfg, prepared).fit()  # warm-up
        times: dict[str, list[float]] = {"pricenet": [], "tutorial": [], "full-batch": []}
        for _ in range(reps):
            for name in times:  # alternate contenders
                t0 = time.perf_counter()
                if name == "pricenet":
                    build_trainer(cfg, prepared).fit()
                elif name == "tutorial":
                    tutorial_fit(
                        x_train, y_train, epochs=epochs, batch_size=batch, lr=0.01, dropout=0.9
                    )
                else:
                    full_batch_fit(x_train, y_train, epochs)
                times[name].append(time.perf_counter() - t0)
        eps = {k: epochs / statistics.median(v) for k, v in times.items()}
        rows.append(
            [
                batch,
                f"{eps['pricenet']:.1f}",
                f"{eps['tutorial']:.1f}",
                f"{eps['pricenet'] / eps['tutorial']:.2f}x",
                f"{eps['full-batch']:.1f}",
                f"{eps['full-batch'] / eps['pricenet']:.2f}x",
            ]
        )
    profile = {batch: step_profile(x_train, y_train, batch) for batch in (8, 64)}
    report.section(
        "Where a training step's time goes",
        "Median µs per phase of one step of the same model and optimizer (single thread). Both "
        "loops pay the same forward, backward and optimizer cost; what pricenet removes is the "
        "DataLoader's per-sample indexing and collation (and the per-batch `.item()`), so that "
        "share bounds its speed-up over the tutorial's loop.",
        ["phase", *(f"batch {b} µs" for b in profile)],
        [[k, *(f"{profile[b][k]:.0f}" for b in profile)] for k in profile[8]],
    )
    report.section(
        "Training speed",
        f"The tutorial's model (20-64-128-4, dropout 0.9), standardized features, SGD lr 0.01 "
        f"(the tutorial's lr 0.1 diverges at this dropout), {len(train)} training rows, "
        f"{epochs} epochs, median of {reps} alternated repetitions after a warm-up. pricenet: "
        "`pricenet.members.build_trainer(...).fit()` (the packed engine at M = 1); its epochs "
        "include its per-epoch validation pass (0 rows here) and bookkeeping; the tutorial loop "
        "has none. Full-batch limit: one forward and backward pass (and SGD step) over all "
        "training rows per epoch.",
        [
            "batch",
            "pricenet epochs/s",
            "tutorial epochs/s",
            "speed-up",
            "full-batch epochs/s",
            "pricenet vs limit",
        ],
        rows,
    )


def step_profile(
    x: torch.Tensor, y: torch.Tensor, batch: int, steps: int = 300
) -> dict[str, float]:
    """Median microseconds per phase of one training step: where a step's time goes."""
    from torch.utils.data import DataLoader, TensorDataset

    model = TutorialNet(0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    loader = iter(DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True))
    perm = torch.randperm(len(x))
    x_batches, y_batches = torch.split(x[perm], batch), torch.split(y[perm], batch)
    phases: dict[str, list[float]] = {
        k: []
        for k in (
            "DataLoader batch",
            "slice batch",
            "forward + loss",
            "backward",
            "optimizer step + zero_grad",
            ".item()",
        )
    }
    for i in range(steps):
        t0 = time.perf_counter()
        try:
            next(loader)
        except StopIteration:
            loader = iter(DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True))
            next(loader)
        t1 = time.perf_counter()
        xb, yb = x_batches[i % len(x_batches)], y_batches[i % len(y_batches)]
        t2 = time.perf_counter()
        loss = criterion(model(xb), yb)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t5 = time.perf_counter()
        loss.item()
        t6 = time.perf_counter()
        for key, (a, b) in zip(
            phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)), strict=True
        ):
            phases[key].append(1e6 * (b - a))
    return {k: statistics.median(v) for k, v in phases.items()}


def full_batch_fit(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    model = TutorialNet(0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


class FirstReach:
    """Wall time and epoch at which validation accuracy first reaches ``target``."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.start = time.perf_counter()
        self.epochs = 0
        self.seconds: float | None = None

    def hit(self, val_acc: float) -> bool:
        self.epochs += 1
        if self.seconds is None and val_acc >= self.target:
            self.seconds = time.perf_counter() - self.start
        return self.seconds is not None

    def on_epoch_end(self, trainer: Any) -> None:  # as a pricenet Trainer callback (M = 1)
        if self.hit(trainer.state.last("val_acc")):
            trainer.state.members[0].stopped_early = True


def time_to_accuracy(report: Report, bench: Bench) -> None:
    """Seconds until validation accuracy first reaches the target."""
    quick, table = bench.quick, bench.table
    target = 0.95 if not quick else 0.80
    max_epochs = 100 if not quick else 20
    train, val, test = stratified_split(table.labels, 0.15, 0.15, 0)
    results: dict[str, list[FirstReach]] = {"pricenet": [], "tutorial": []}
    for seed in range(1 if quick else 3):
        for name in results:  # alternate contenders
            set_seed(seed)
            watch = FirstReach(target)
            if name == "pricenet":
                cfg = compose_cfg(
                    *bench.data,
                    "experiment=recommended",
                    f"trainer.seed={seed}",
                    f"trainer.epochs={max_epochs}",
                )
                prepared = single(cfg, table, train, val, test, seed)
                build_trainer(cfg, prepared, callbacks=[watch]).fit()
            else:
                cfg = compose_cfg(*bench.data, "data.standardize=true")
                prepared = single(cfg, table, train, val, test, seed)
                data = prepared.members[0]
                tutorial_fit(
                    data.x_train,
                    data.y_train,
                    epochs=max_epochs,
                    batch_size=8,
                    lr=0.1,
                    dropout=0.2,
                    on_epoch=lambda m, w=watch, x=data.x_val, y=data.y_val: w.hit(
                        tutorial_accuracy(m, x, y)
                    ),
                )
            results[name].append(watch)
    rows, summary = [], {}
    for name, runs in results.items():
        times = [w.seconds for w in runs if w.seconds is not None]
        summary[name] = statistics.median(times) if len(times) == len(runs) else None
        shown = (
            f"{summary[name]:.2f} s"
            if summary[name] is not None
            else f"not reached in {max_epochs} epochs ({len(times)}/{len(runs)} runs)"
        )
        rows.append([name, shown, ", ".join(str(w.epochs) for w in runs)])
    if summary["pricenet"] and summary["tutorial"]:
        verdict = f"pricenet is **{summary['tutorial'] / summary['pricenet']:.1f}x** faster."
    elif summary["pricenet"]:
        verdict = (
            f"pricenet gets there in {summary['pricenet']:.2f} s; the tutorial's loop does not "
            f"within {max_epochs} epochs."
        )
    else:
        verdict = "pricenet did not reach the target in every run."
    report.section(
        "Time to accuracy",
        f"Wall time until validation accuracy first reaches {target:.0%} (median over seeds; "
        "per-epoch validation included for both; one 70/15/15 stratified split). pricenet: "
        "`experiment=recommended` (linear CORAL; an L-BFGS epoch is one step of up to 20 "
        "iterations), validated each epoch. Tutorial: its loop and model with standardization "
        f"added and dropout 0.2, SGD lr 0.1, batch 8. {verdict}",
        ["contender", "time to target", "epochs (per seed)"],
        rows,
    )


def sklearn_contenders(quick: bool) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    inner = 3
    return {
        "LogisticRegression (C tuned)": GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
            {"logisticregression__C": [0.1, 1, 10, 100, 1000]},
            cv=inner,
        ),
        "LinearSVC (C tuned)": GridSearchCV(
            make_pipeline(StandardScaler(), LinearSVC(max_iter=50000, dual=False)),
            {"linearsvc__C": [0.01, 0.1, 1, 10, 100]},
            cv=inner,
        ),
        "SVC rbf (C tuned)": GridSearchCV(
            make_pipeline(StandardScaler(), SVC()), {"svc__C": [1, 10, 100, 1000]}, cv=inner
        ),
        "RandomForest": RandomForestClassifier(n_estimators=100 if quick else 300, random_state=0),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
        "MLPClassifier": make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=0)
        ),
    }


# --------------------------------------------------------------------------- accuracy

# pricenet's contenders in the accuracy table: the overrides of each (cv overrides added).
PRICENET_CONTENDERS = {
    "pricenet experiment=recommended": ["experiment=recommended"],
    "pricenet default config": [],
    "pricenet MLP + loss=coral": ["loss=coral"],
    "pricenet MLP + loss=bce": ["loss=bce"],
}


def accuracy(report: Report, bench: Bench) -> None:
    from sklearn.base import clone

    table, quick = bench.table, bench.quick
    folds = bench.folds(seed=0)
    shrink = ["trainer.epochs=5"] if quick else []
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for name, overrides in PRICENET_CONTENDERS.items():
        cfg = compose_cfg(*bench.data, *overrides, *bench.cv_overrides, "trainer.seed=0", *shrink)
        check_same_folds(cfg, table, folds)
        metrics, wall = cv_run(cfg)
        scores[name] = fold_accuracies(metrics)
        seconds[name] = wall
    sk = sklearn_contenders(quick)
    x = table.numeric_array(np.float64)
    for name, model in sk.items():
        scores[name], seconds[name] = [], 0.0
        for train, test in folds:
            t0 = time.perf_counter()
            fitted = clone(model).fit(x[train], table.labels[train])
            score = float((fitted.predict(x[test]) == table.labels[test]).mean())
            seconds[name] += time.perf_counter() - t0
            scores[name].append(score)
    best_sk = max(sk, key=lambda n: statistics.mean(scores[n]))
    rows = [
        [name, mean_std(v), len(v), f"{seconds[name]:.2f}"]
        for name, v in sorted(scores.items(), key=lambda kv: -statistics.mean(kv[1]))
    ]
    k, r = bench.cv
    rec = statistics.mean(scores["pricenet experiment=recommended"])
    report.section(
        "Accuracy",
        f"{k}-fold stratified cross-validation repeated {r} times: pricenet's contenders are "
        f"each ONE run with `cv=kfold cv.folds={k} cv.repeats={r}` (all folds packed in one "
        "model where the optimizer allows; L-BFGS fits them one by one), and scikit-learn's "
        "models are fitted on the very same folds (`pricenet.tables.stratified_kfold`, seed 0, "
        "checked against each run's plan). Held-out-fold accuracy in %, mean ± std over the "
        "folds. pricenet's MLPs select their epoch on an inner validation split of the "
        "training folds (15%); `experiment=recommended` is a fixed recipe that trains on all "
        "training rows and selects nothing; scikit-learn models tune C on inner folds. Held-out "
        "folds never choose anything. The time is the whole CV (pricenet: the run, including "
        f"preprocessing, evaluation and metrics.json). Best scikit-learn: {best_sk} at "
        f"{100 * statistics.mean(scores[best_sk]):.2f}%; pricenet recommended: {100 * rec:.2f}%.",
        ["contender", "accuracy %", "folds", "s for the whole CV"],
        rows,
    )


# --------------------------------------------------------------------------- e2e, ablation


# Runs a module (or ``-c code``) and prints the process's own peak RSS (VmHWM) at exit. The
# rusage of a child would not do: its maxrss starts from the parent's size at fork.
PEAK_RSS = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print("peak_rss_kb", line.split()[1], file=sys.stderr)
atexit.register(report)
target, sys.argv = sys.argv[1], sys.argv[1:]
if target == "-c":
    exec(sys.argv[1])
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def _timed_child(args: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``python <args>`` in a fresh process."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed: {done.stderr[-2000:]}")
    peak = re.findall(r"^peak_rss_kb (\d+)$", done.stderr, re.M)
    return wall, int(peak[-1]) / 1024 if peak else math.nan


def end_to_end(report: Report, quick: bool) -> None:
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PRICENET_ROOT": tmp}
        cmds = {
            "python -m pricenet.train": ["pricenet.train"],
            'python -c "import torch"': ["-c", "import torch"],
        }
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(reps):
            for name, cmd in cmds.items():
                runs[name].append(_timed_child(cmd, tmp, env))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    rss = {k: max(r for _, r in v) for k, v in runs.items()}
    ratio = wall["python -m pricenet.train"] / wall['python -c "import torch"']
    rows = [[k, f"{wall[k]:.2f}", f"{rss[k]:.0f}"] for k in cmds]
    report.section(
        "End to end",
        f"Median of {reps} alternated runs of the default command (synthetic data, plots and "
        f"TensorBoard on) against importing torch alone: **{ratio:.2f}x** (target ≤ 2.5x). "
        "Peak RSS is each process's own high-water mark, VmHWM (target ≤ 600 MB). The wall "
        "time includes a wrapper that starts the module with runpy to read it.",
        ["command", "wall s", "peak RSS MB"],
        rows,
    )


ABLATION = [
    (
        "tutorial recipe (`experiment=tutorial`)",
        [],
        "Raw features, dropout 0.9, SGD lr 0.1, batch 8, 20 epochs: ram (256-3998) and "
        "battery_power dwarf the 0/1 columns, the first SGD steps blow the ReLUs dead and the "
        "network predicts one class.",
    ),
    (
        "+ standardize",
        ["data.standardize=true"],
        "Scaling (fitted on the training split) puts every feature on the same footing, but alone "
        "it is not enough: dropout 0.9 multiplies the surviving activations by 10, and with lr 0.1 "
        "the loss overflows.",
    ),
    (
        "+ dropout 0.9 -> 0.1",
        ["data.standardize=true", "model.dropout=0.1"],
        "Dropping 90% of the units starves a 64/128 network of signal; light dropout still "
        "regularizes without that noise.",
    ),
    (
        "+ adam lr 0.01",
        ["data.standardize=true", "model.dropout=0.1", "optim=adam", "optim.lr=0.01"],
        "Adam adapts each weight's step size, but at 20 epochs it changes little here (within "
        "seed noise): the 64/128 MLP itself, not the optimizer, now limits accuracy.",
    ),
    (
        "+ full batch",
        [
            "data.standardize=true",
            "model.dropout=0.1",
            "optim=adam",
            "optim.lr=0.01",
            "trainer.batch_size=2048",
        ],
        "One exact gradient per epoch instead of 160 noisy ones; with Adam's adaptive steps "
        "even 20 full-batch epochs hold the accuracy, at a fraction of the cost.",
    ),
    (
        "+ 3000 epochs, cosine lr",
        [
            "data.standardize=true",
            "model.dropout=0.1",
            "optim=adam",
            "optim.lr=0.01",
            "trainer.batch_size=2048",
            "trainer.epochs=3000",
            "scheduler=cosine",
        ],
        "Training to convergence, with the lr annealed to zero, adds little to this MLP: it "
        "fits the noise of the 1,280 training rows as fast as their signal.",
    ),
    (
        "`experiment=recommended`",
        ["RECOMMENDED"],
        "The big step: a linear model with the CORAL ordinal head. The price classes are "
        "ordered cuts of one score, so one shared weight vector and 3 thresholds (24 "
        "parameters instead of 10,180) fit the data and little else.",
    ),
]


def diverged_at(errors: list[str]) -> str:
    """'at epoch 1' (or 'at epochs 1-3') from the trainer's divergence messages."""
    epochs = sorted({int(e) for e in re.findall(r"diverged at epoch (\d+)", " ".join(errors))})
    if not epochs:
        return "diverged"
    if len(epochs) == 1:
        return f"at epoch {epochs[0]}"
    return f"at epochs {epochs[0]}–{epochs[-1]}"


def ablation(report: Report, bench: Bench) -> None:
    shrink = ["trainer.epochs=3"] if bench.quick else []
    k, r = bench.ablation_cv
    cv = ["cv=kfold", f"cv.folds={k}", f"cv.repeats={r}", "cv.keep=none"]
    rows = []
    for name, overrides, why in ABLATION:
        base = (
            ["experiment=recommended"]
            if overrides == ["RECOMMENDED"]
            else ["experiment=tutorial", *overrides]
        )
        cfg = compose_cfg(*bench.data, *base, *cv, "trainer.seed=0", *shrink)
        try:
            metrics, _ = cv_run(cfg)
        except DivergenceError as err:
            rows.append([name, f"– (every fold diverged, {diverged_at([str(err)])})", why])
            continue
        accs = fold_accuracies(metrics)
        errors = [m["error"] for m in metrics["members"] if m["error"] is not None]
        shown = mean_std(accs)
        if errors:
            shown += f" ({len(errors)}/{k * r} folds diverged, {diverged_at(errors)})"
        rows.append([name, shown, why])
    report.section(
        "Why the tutorial scored 27%",
        f"Held-out accuracy (%, mean ± std over the folds of one `cv=kfold cv.folds={k} "
        f"cv.repeats={r}` run per step) as the tutorial's recipe turns into the recommended "
        "one, one change at a time. A fold whose loss diverged is left out and counted.",
        ["step", "test acc %", "why it matters"],
        rows,
    )


# --------------------------------------------------------------------------- checkpointing


def checkpointing(report: Report, bench: Bench) -> None:
    """The 3000-epoch full-batch linear run: checkpoint every 30 s vs only at the end."""
    epochs, reps = (300, 1) if bench.quick else (3000, 2)
    adam = ["optim=adam", "optim.lr=0.1", "scheduler=cosine", f"trainer.epochs={epochs}"]
    variants = {
        "every 30 s (default, `trainer.checkpoint_interval_s=30`)": 30,
        "at the end only (`trainer.checkpoint_interval_s=1e9`)": 1e9,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    cv_run(compose_cfg(*bench.data, "experiment=recommended", *adam))  # warm-up
    for _ in range(reps):
        for name, interval in variants.items():  # alternate
            cfg = compose_cfg(
                *bench.data,
                "experiment=recommended",
                *adam,
                f"trainer.checkpoint_interval_s={interval}",
            )
            times[name].append(cv_run(cfg)[1])
    every = "every epoch (`trainer.checkpoint_interval_s=0`, the former behaviour; one run)"
    cfg = compose_cfg(
        *bench.data, "experiment=recommended", *adam, "trainer.checkpoint_interval_s=0"
    )
    times[every] = [cv_run(cfg)[1]]
    base = statistics.median(times[list(variants)[1]])
    rows = [
        [name, f"{statistics.median(v):.2f}", f"{statistics.median(v) / base:.2f}x"]
        for name, v in times.items()
    ]
    ratio = statistics.median(times[list(variants)[0]]) / base
    report.section(
        "Checkpoints by time",
        f"One run (`python -m pricenet.train`'s `run()`, in process) of the former recommended "
        f"recipe: linear CORAL, {epochs} full-batch Adam epochs (lr 0.1, cosine), on the data "
        f"above. Median wall seconds of {reps} alternated runs. `last.pt` is written at most "
        "every `trainer.checkpoint_interval_s` seconds, at the end and on SIGTERM/SIGINT (it "
        f"was written and fsynced every epoch before). Ratio: **{ratio:.2f}x** (target ≤ 1.1x).",
        ["checkpointing", "wall s", "vs end only"],
        rows,
    )


# --------------------------------------------------------------------------- L-BFGS vs Adam


def lbfgs_vs_adam(report: Report, bench: Bench) -> None:
    """experiment=recommended: L-BFGS (now) vs 3000 Adam epochs (before), and scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    adam_epochs = 300 if bench.quick else 3000
    recipes = {
        "L-BFGS (`experiment=recommended`)": [],
        f"Adam, {adam_epochs} epochs (`optim=adam optim.lr=0.1 scheduler=cosine`)": [
            "optim=adam",
            "optim.lr=0.1",
            "scheduler=cosine",
            f"trainer.epochs={adam_epochs}",
        ],
    }
    folds = bench.folds(seed=0)
    rows = []
    for name, overrides in recipes.items():
        cfg = compose_cfg(*bench.data, "experiment=recommended", *overrides, *bench.cv_overrides)
        check_same_folds(cfg, bench.table, folds)
        plan = plan_for(cfg, bench.table)
        prepared = prepare(cfg, bench.table, plan[:1], CPU)
        build_trainer(cfg, prepared).fit()  # warm-up
        fit_s = statistics.median(
            timed(lambda p=prepared, c=cfg: build_trainer(c, p).fit()) for _ in range(3)
        )
        metrics, wall = cv_run(cfg)
        rows.append([name, f"{fit_s:.3f}", f"{wall:.2f}", mean_std(fold_accuracies(metrics))])
    x = bench.table.numeric_array(np.float64)
    y = bench.table.labels
    train, test = folds[0]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-12
    model = LogisticRegression(max_iter=5000)
    model.fit((x[train] - mean) / std, y[train])  # warm-up
    fit_s = statistics.median(
        timed(lambda: LogisticRegression(max_iter=5000).fit((x[train] - mean) / std, y[train]))
        for _ in range(5)
    )
    t0 = time.perf_counter()
    accs = []
    for train_rows, test_rows in folds:
        mu, sd = x[train_rows].mean(0), x[train_rows].std(0) + 1e-12
        lr = LogisticRegression(max_iter=5000).fit((x[train_rows] - mu) / sd, y[train_rows])
        accs.append(float((lr.predict((x[test_rows] - mu) / sd) == y[test_rows]).mean()))
    rows.append(
        [
            "scikit-learn LogisticRegression (C=1, lbfgs, standardized)",
            f"{fit_s:.3f}",
            f"{time.perf_counter() - t0:.2f}",
            mean_std(accs),
        ]
    )
    k, r = bench.cv
    report.section(
        "The recommended recipe: L-BFGS vs Adam",
        f"`experiment=recommended` (linear model, CORAL head) fitted with L-BFGS (5 steps of up "
        f"to 20 strong-Wolfe iterations) vs the former recipe, {adam_epochs} full-batch Adam "
        f"epochs. Fit: median of 3 in-process fits on the first fold's {len(train)} training "
        "rows (after a warm-up). CV: one `cv=kfold` run, "
        f"{k}x{r} folds (Adam's folds train packed; L-BFGS's one by one), whole-run wall "
        "time and held-out accuracy. scikit-learn's LogisticRegression: the same rows, "
        "standardized with the training rows' statistics, median of 5 fits; its CV on the same "
        "folds. Target: one fit ≤ 0.5 s at the same CV accuracy.",
        ["recipe", "one fit s", f"{k}x{r} CV s", "CV accuracy %"],
        rows,
    )


# --------------------------------------------------------------------------- tables (issue 10)


def tables_throughput(report: Report, bench: Bench) -> None:
    """CSV read + validation at 1M rows with peak RSS (scripts/table_benchmark.py)."""
    tb = load_script("table_benchmark")
    rows_n = 20_000 if bench.quick else 1_000_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, holes in (("error", False), ("impute", True)):
            path = tb.write_csv(Path(tmp), rows_n, holes=holes)
            size = path.stat().st_size / 1e6
            got = tb.measure(path, case)
            rows.append(
                [
                    f"`read_csv(path, MOBILE_PRICE, missing={case!r})`"
                    + (" (1% empty cells in 2 columns)" if holes else ""),
                    f"{got['rows']:,}",
                    f"{size:.0f}",
                    f"{got['seconds']:.2f}",
                    f"{got['rows'] / got['seconds']:,.0f}",
                    f"{got['peak_mb']:.0f}",
                    f"{got['base_mb']:.0f}",
                ]
            )
            path.unlink()
    report.section(
        "Reading and validating a CSV",
        f"A synthetic phone-price CSV ({rows_n:,} rows: id, 20 features, label) read and "
        "validated against the schema by `pricenet.tables.read_csv`, each case in a fresh "
        "process (scripts/table_benchmark.py, one run each). Peak RSS is the process's VmHWM; "
        "'after imports' is its RSS before reading.",
        ["case", "rows", "file MB", "s", "rows/s", "peak RSS MB", "after imports MB"],
        rows,
    )


# --------------------------------------------------------------------------- outside tables

# The general-table recipes tried on the outside tables; one is chosen per table by the mean
# accuracy on the inner validation splits (never the held-out folds).
GENERAL_RECIPES = {
    "MLP default (40 epochs, batch 128)": [],
    "MLP, 300 epochs, batch 32, patience 30": [
        "trainer.epochs=300",
        "trainer.batch_size=32",
        "trainer.patience=30",
    ],
}


def write_sklearn_csv(name: str, folder: Path) -> tuple[Path, list[str]]:
    """A scikit-learn dataset as a CSV (column names made plain) and its loss overrides."""
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = loaded.frame.rename(columns=lambda c: re.sub(r"\W+", "_", c).strip("_"))
    loss: list[str] = []
    if name == "wine":  # cultivars: unordered classes, written as their names
        frame["target"] = np.asarray(loaded.target_names)[frame["target"]]
        loss = ["loss=cross_entropy"]
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path, loss


def external(report: Report, bench: Bench) -> None:
    """Wine and breast_cancer: pricenet beside LogisticRegression, RF and HGB, same folds."""
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds_n, repeats = bench.cv
    shrink = ["trainer.epochs=5"] if bench.quick else []
    sk = {
        "LogisticRegression (standardized, C=1)": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=5000)
        ),
        "RandomForest (300 trees)": RandomForestClassifier(n_estimators=300, random_state=0),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
    }
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in ("wine", "breast_cancer"):
            path, loss = write_sklearn_csv(dataset, Path(tmp))
            data = ["data=csv", f"data.path={path}", "data.label=target", *loss]
            cv = [*bench.cv_overrides, "trainer.seed=0", *shrink]
            table = load_data(compose_cfg(*data))
            folds = stratified_kfold(table.labels, folds_n, repeats, 0)
            results: list[tuple[str, list[float], float, float | None]] = []
            cfg = compose_cfg(*data, "experiment=recommended", *cv)
            check_same_folds(cfg, table, folds)
            metrics, wall = cv_run(cfg)
            results.append(
                ("pricenet experiment=recommended", fold_accuracies(metrics), wall, None)
            )
            general = []
            for name, overrides in GENERAL_RECIPES.items():
                metrics, wall = cv_run(compose_cfg(*data, *overrides, *cv))
                val = metrics["cv"]["val_acc"]["mean"]
                general.append((f"pricenet {name}", fold_accuracies(metrics), wall, val))
            chosen = max(general, key=lambda g: g[3])
            results += general
            x = table.numeric_array(np.float64)
            for name, model in sk.items():
                t0, accs = time.perf_counter(), []
                for train, test in folds:
                    fitted = clone(model).fit(x[train], table.labels[train])
                    accs.append(float((fitted.predict(x[test]) == table.labels[test]).mean()))
                results.append((name, accs, time.perf_counter() - t0, None))
            best = max(results, key=lambda r: statistics.mean(r[1]))
            for name, accs, wall, val in results:
                mark = " (chosen by inner val)" if name == chosen[0] else ""
                rows.append(
                    [
                        f"{dataset} ({len(table)} rows, {table.schema.num_classes} classes)",
                        name + mark,
                        mean_std(accs),
                        f"{100 * val:.2f}" if val is not None else "–",
                        f"{wall:.2f}",
                    ]
                )
            gap = statistics.mean(best[1]) - statistics.mean(chosen[1])
            rec = next(r for r in results if r[0].endswith("recommended"))
            notes.append(
                f"{dataset}: best {best[0]} {100 * statistics.mean(best[1]):.2f}%; pricenet's "
                f"chosen general recipe {100 * statistics.mean(chosen[1]):.2f}% ("
                + (f"{100 * gap:.2f} points behind" if gap > 0 else "the best")
                + "), experiment=recommended "
                f"{100 * statistics.mean(rec[1]):.2f}%"
            )
    report.section(
        "Tables from outside the project",
        f"scikit-learn's wine (178 rows, 13 features, 3 cultivars: unordered, written as their "
        f"names, so `loss=cross_entropy`) and breast_cancer (569 rows, 30 features, 0/1) written "
        f"to CSV and read with `data=csv data.label=target` (schema inferred). Every contender "
        f"under the same {folds_n}-fold x {repeats}-repeat stratified CV (the folds each "
        "pricenet run uses; scikit-learn fitted on them). `experiment=recommended` is the "
        "linear model fitted with L-BFGS (CORAL on breast_cancer, softmax on wine). The general "
        "recipe for a new table is chosen per table by the mean accuracy of its inner "
        "validation split (15% of each fold's training rows), never by the held-out folds; "
        "both candidates are shown. Accuracy in %, mean ± std over the folds; time for the "
        "whole CV. " + "; ".join(notes) + ".",
        ["table", "contender", "accuracy %", "inner val acc %", "s"],
        rows,
    )


# --------------------------------------------------------------------------- production


def production(report: Report, bench: Bench) -> None:
    """scripts/production_benchmark.py's sections (issue 11)."""
    pb = load_script("production_benchmark")
    csv = bench.csv_file()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if bench.quick:
            found = pb.sections(csv, work, requests=60, heads=["cross_entropy", "coral"], epochs=2)
        else:
            found = pb.sections(csv, work)
    intros = {
        "ONNX": "onnxruntime's probabilities vs `Predictor.predict_proba` on every row, one "
        "model per head (`python -m pricenet.export ... format=onnx`).",
        "The service": "`python -m pricenet.serve` as a subprocess on localhost, called with "
        "httpx (keep-alive): one-row JSON requests, and 1,000-row CSV bodies; beside "
        "`Predictor.predict` in this process.",
        "The exported": "The same batches through onnxruntime and through torch eager "
        "(`Predictor.probability_module()`), 1 thread.",
        "Calibration": "Temperature scaling fitted on the validation split, ECE (15 bins) and "
        "NLL on the test split, as `metrics.json` reports them.",
    }
    for title, lines in found.items():
        intro = next(v for k, v in intros.items() if title.startswith(k))
        report.text(title, intro, lines)


def search(report: Report, bench: Bench) -> None:
    """scripts/search_benchmark.py's table (issue 12), when that script exists."""
    script = SCRIPTS / "search_benchmark.py"
    if not script.is_file():
        report.text(
            "Search",
            "scripts/search_benchmark.py is not on this branch yet: the search benchmarks "
            "(issue 12: pruning, two workers) are not in this report.",
            [],
        )
        return
    size = ["--trials", "4", "--epochs", "2"] if bench.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "search.md"
        args = [sys.executable, str(script), "--csv", str(bench.csv_file()), "--out", str(out)]
        done = subprocess.run([*args, *size], capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"search_benchmark.py failed: {done.stderr[-2000:]}")
        lines = out.read_text().strip().splitlines()
    body = [line for line in lines[1:] if line.strip()]
    trials = "4 trials x 2 epochs" if bench.quick else "32 trials x 30 epochs"
    report.text(
        "Search",
        f"scripts/search_benchmark.py: `hparams_search=optuna` ({trials}, TPE with the same "
        "seed) on the data above, with and without the median pruner, in one worker process "
        "and in two worker processes sharing one study (the 2 cores). Each worker is a "
        "`python -m pricenet.train --multirun` process. " + lines[0],
        body,
    )


# --------------------------------------------------------------------------- packed (issue 9)


def packed(report: Report, bench: Bench) -> None:
    """Folds x repeats (and seeds) packed in one model vs one by one vs one fit."""
    k, r = bench.cv
    shrink = ["trainer.epochs=4"] if bench.quick else []
    reps = 1 if bench.quick else 3
    rows = []
    cases = [
        (f"{k}x{r} CV, batch 64", [*bench.cv_overrides, "trainer.batch_size=64"]),
        (f"{k}x{r} CV, batch 8", [*bench.cv_overrides, "trainer.batch_size=8"]),
        (
            f"{k * r} seeds (`trainer.seeds={k * r}`), batch 64",
            [f"trainer.seeds={k * r}", "trainer.batch_size=64"],
        ),
        (
            f"{k}x{r} CV, batch 64, no early stopping",
            [*bench.cv_overrides, "trainer.batch_size=64", "trainer.patience=null"],
        ),
        (
            f"{k}x{r} CV, batch 8, no early stopping",
            [*bench.cv_overrides, "trainer.batch_size=8", "trainer.patience=null"],
        ),
    ]
    for name, overrides in cases:
        cfg = compose_cfg(*bench.data, *overrides, *shrink)
        plan = plan_for(cfg, bench.table)
        prepared = prepare(cfg, bench.table, plan, CPU)
        for group in ([0], None):  # warm-up: one epoch of each shape
            warm = build_trainer(cfg, prepared, group)
            warm.epochs = 1
            warm.fit()
        t_one, t_packed = [], []
        for _ in range(reps):  # alternated
            one = build_trainer(cfg, prepared, [0])
            t_one.append(timed(one.fit))
            whole = build_trainer(cfg, prepared)
            t_packed.append(timed(whole.fit))
        t_one, t_packed = statistics.median(t_one), statistics.median(t_packed)
        sequential = [build_trainer(cfg, prepared, [m]) for m in range(len(plan))]
        t_seq = timed(lambda s=sequential: [t.fit() for t in s])
        epochs = [s.epoch for s in whole.state.members]
        rows.append(
            [
                name,
                len(plan),
                f"{t_one:.2f}",
                f"{t_packed:.2f}",
                f"{t_seq:.2f}",
                f"**{t_packed / t_one:.2f}x**",
                f"{t_seq / t_packed:.1f}x",
                f"{one.state.epoch} / {min(epochs)}–{max(epochs)}",
            ]
        )
    single_cfg = compose_cfg(*bench.data, *shrink)
    cv_cfg = compose_cfg(*bench.data, *bench.cv_overrides, *shrink)
    _, single_wall = cv_run(single_cfg)
    _, cv_wall = cv_run(cv_cfg)
    report.section(
        "Cross-validation at the cost of one run (packed models)",
        "The default config's MLP (20-64-4, ReLU, dropout 0.1, Adam lr 0.01, batch as shown, "
        "early stopping patience 10, 40 epochs at most) on the data above. Each of the "
        f"{k * r} members has its own "
        "training rows (its folds' minus a 15% inner validation split), init, batch order and "
        "early stop. 'one fit': member 0 alone; 'packed': all members in one "
        "`pricenet.engine.Trainer` (batched weights); 'sequential': one trainer per member, "
        "one after the other. Fit only (data prepared once; a one-epoch warm-up of each "
        f"shape); one fit and packed: median of {reps} alternated fits, sequential: one "
        "pass. The packed fit runs until its last member stops early, so it may run "
        "more epochs than member 0 (and a stopped member still rides along in every packed "
        "step); the rows without early stopping (`trainer.patience=null`, 40 epochs for all) "
        "compare the cost of a step. Target (issue 9): packed ≤ 1.5x one fit. Whole runs "
        f"(`run()`, preprocessing, evaluation, metrics.json): cv=none {single_wall:.2f} s, "
        f"`cv=kfold cv.repeats={r}` {cv_wall:.2f} s ({cv_wall / single_wall:.2f}x).",
        [
            "case",
            "members",
            "one fit s",
            "packed s",
            "sequential s",
            "packed / one fit",
            "sequential / packed",
            "epochs: one fit / packed members",
        ],
        rows,
    )


# --------------------------------------------------------------------------- main


def report_path(out: Path | None, quick: bool, only: list[str]) -> Path:
    """Where the report goes: ``out`` if given; BENCHMARKS.md only for a full run."""
    if out is not None:
        return out
    if quick:
        return REPO / "outputs" / "benchmarks" / "quick.md"
    if list(only) != list(SECTIONS):
        return REPO / "outputs" / "benchmarks" / "partial.md"
    return COMMITTED


RUNNERS: dict[str, Callable[[Report, Bench], None]] = {
    "speed": speed,
    "tta": time_to_accuracy,
    "accuracy": accuracy,
    "e2e": lambda report, bench: end_to_end(report, bench.quick),
    "ablation": ablation,
    "checkpoint": checkpointing,
    "lbfgs": lbfgs_vs_adam,
    "tables": tables_throughput,
    "external": external,
    "production": production,
    "search": search,
    "packed": packed,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic data, a few minutes")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="labelled CSV (real data)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the report (default: BENCHMARKS.md for a full run, else outputs/benchmarks/)",
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    if not args.quick and not args.csv.is_file():
        parser.error(f"{args.csv}: not found (pass --csv PATH, or --quick)")
    args.out = report_path(args.out, args.quick, only)
    if args.quick and args.out.resolve() == COMMITTED.resolve():
        parser.error(f"{args.out}: refusing to write quick-mode figures over the committed report")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # every contender on one thread, as pricenet's default runs
    data = (
        ["data.n_rows=600", "data.seed=1"] if args.quick else ["data=csv", f"data.path={args.csv}"]
    )
    bench = Bench(
        quick=args.quick,
        csv=None if args.quick else args.csv,
        data=data,
        table=load_data(compose_cfg(*data)),
        cv=(3, 1) if args.quick else (5, 3),
        ablation_cv=(3, 1) if args.quick else (5, 3),
    )
    report = Report(args.quick, "synthetic (600 rows)" if args.quick else str(args.csv))
    for name in [s for s in SECTIONS if s in only]:
        started = time.perf_counter()
        RUNNERS[name](report, bench)
        print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    if args.quick and bench.csv is not None:  # the synthetic CSV written for production/search
        shutil.rmtree(bench.csv.parent, ignore_errors=True)
    args.out.write_text(report.markdown())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
