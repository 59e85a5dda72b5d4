"""Search: an Optuna search with and without pruning, on one and on two worker processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import QUIET, Context
from .render import Table

TABLES = {
    "search": Table(
        "Search",
        "`hparams_search=optuna` ({trials} trials x {epochs} epochs, TPE with the same seed) "
        "on the data above, with and without the median pruner, in one worker process and in "
        "two sharing one study. Each worker is a `python -m pricenet.train --multirun` "
        "process.",
        (
            ("variant", "{name}"),
            ("wall s", "{wall_s:.1f}"),
            ("time in jobs s", "{in_jobs:.1f}"),
            ("done / pruned / failed", "{done} / {pruned} / {failed}"),
            ("epochs trained", "{epochs}"),
            ("best val_acc", "{best_val:.4f}"),
            ("its test_acc", "{its_test:.4f}"),
        ),
    ),
}

# (name, pruner, worker processes)
VARIANTS = (
    ("no pruner, 1 worker", "none", 1),
    ("no pruner, 2 workers", "none", 2),
    ("median pruner, 1 worker", "median", 1),
    ("median pruner, 2 workers", "median", 2),
)


def _search(root: Path, workers: int, overrides: list[str]) -> float:
    """``workers`` copies of the search command at once under ``root``; the wall seconds."""
    env = {**os.environ, "PRICENET_ROOT": str(root)}
    command = [sys.executable, "-m", "pricenet.train", "--multirun", *overrides]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"search failed: {err.decode()[-2000:]}")
    return time.perf_counter() - started


def _summary(folder: Path) -> dict[str, Any]:
    """Counts, epochs trained and the best validation row of a finished search."""
    with (folder / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    done = [r for r in rows if r["status"] == "done"]
    return {
        "done": len(done),
        "pruned": sum(r["status"] == "pruned" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "epochs": sum(int(r["epochs_run"] or 0) for r in rows),
        "in_jobs": sum(float(r["wall_time_s"] or 0) for r in rows),
        "best_val": float(done[0]["val_acc"]) if done else None,
        "its_test": float(done[0]["test_acc"]) if done else None,
    }


def measure(ctx: Context) -> dict[str, Any]:
    """One search per variant, into its own scratch root."""
    trials, epochs = (2, 1) if ctx.quick else (32, 30)
    common = [
        "hparams_search=optuna",
        "data=csv",
        f"data.path={ctx.csv_file().resolve()}",
        f"trainer.epochs={epochs}",
        *QUIET,
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.seed=0",
    ]
    rows = []
    for name, pruner, workers in VARIANTS:
        root = ctx.work / "search" / f"{pruner}-{workers}"
        root.mkdir(parents=True)
        wall = _search(root, workers, [*common, f"hydra.sweeper.pruner={pruner}"])
        rows.append(
            {"name": name, "wall_s": wall, **_summary(root / "outputs" / "search" / "pricenet")}
        )
    return {"search": {"facts": {"trials": trials, "epochs": epochs}, "rows": rows}}
