"""Search benchmark: a 32-trial Optuna search on the shared data, with and without pruning, on
one worker and on two worker processes sharing the study.

    python scripts/search_benchmark.py [--csv PATH] [--trials 32] [--epochs 30] [--out FILE.md]

Every variant runs ``hparams_search=optuna`` with the same sampler seed into a scratch folder
and prints one Markdown row: wall time, trials complete / pruned / failed, epochs trained in
all (what pruning saves), and the best validation accuracy found (with its test accuracy).
Skips (exit 0) when the shared CSV is absent.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CSV = Path(
    os.environ.get(
        "PRICENET_SHARED_CSV",
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mobile_price.csv",
    )
)
# (name, pruner, worker processes)
VARIANTS = (
    ("no pruner, 1 worker", "none", 1),
    ("no pruner, 2 workers", "none", 2),
    ("median pruner, 1 worker", "median", 1),
    ("median pruner, 2 workers", "median", 2),
)


def search(root: Path, workers: int, overrides: list[str]) -> float:
    """Run ``workers`` copies of the search command at once under ``root``; the wall time."""
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
            sys.exit(f"failed: {' '.join(command)}\n{err.decode()[-3000:]}")
    return time.perf_counter() - started


def summarize(sweep_dir: Path) -> dict[str, float | int]:
    """Counts, epochs trained and the best validation row of a finished search's leaderboard."""
    with (sweep_dir / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    done = [r for r in rows if r["status"] == "done"]
    return {
        "done": len(done),
        "pruned": sum(r["status"] == "pruned" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "epochs": sum(int(r["epochs_run"] or 0) for r in rows),
        "in_jobs": sum(float(r["wall_time_s"] or 0) for r in rows),
        "best_val": float(done[0]["val_acc"]) if done else float("nan"),
        "its_test": float(done[0]["test_acc"]) if done else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    if not args.csv.is_file():
        print(f"skipped: {args.csv} not present")
        return
    import optuna

    common = [
        "hparams_search=optuna",
        "data=csv",
        f"data.path={args.csv.resolve()}",
        f"trainer.epochs={args.epochs}",
        "trainer.device=cpu",
        "report.plots=false",
        "report.tensorboard=false",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.seed={args.seed}",
    ]
    lines = [
        f"Optuna {optuna.__version__}, {args.trials} trials x {args.epochs} epochs (TPE, seed "
        f"{args.seed}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start",
        "",
        "| variant | wall time (s) | time in jobs (s) | done / pruned / failed | epochs trained "
        "| best val_acc | its test_acc |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="search_bench_") as scratch:
        for name, pruner, workers in VARIANTS:
            root = Path(scratch) / f"{pruner}_{workers}"
            root.mkdir()
            wall = search(root, workers, [*common, f"hydra.sweeper.pruner={pruner}"])
            s = summarize(root / "outputs" / "search" / "pricenet")
            lines.append(
                f"| {name} | {wall:.1f} | {s['in_jobs']:.1f} | {s['done']} / {s['pruned']} / "
                f"{s['failed']} "
                f"| {s['epochs']} | {s['best_val']:.4f} | {s['its_test']:.4f} |"
            )
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
