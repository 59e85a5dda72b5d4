"""Cluster search benchmark: one Optuna study of N trials, three ways.

    python scripts/cluster/search_benchmark.py [--trials 32] [--epochs 5] [--rows 400]

1. one worker: one process runs every trial in turn (SQLite in the sweep folder);
2. two SLURM array tasks: ``launcher=submitit_slurm``, two trials per array, both at once;
3. two local workers on PostgreSQL: two processes share a study in the server.

Needs the servers of ``scripts/cluster/cluster.sh up``; a variant whose server is not up is
reported as skipped. Prints one Markdown row per variant: wall time, trials complete, trials
per minute. Every run writes into a scratch folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

STATE = Path(os.environ.get("PRICENET_CLUSTER_DIR", "/tmp/pricenet-cluster")) / "state"


def cluster_state() -> dict[str, str]:
    """What ``cluster.sh up`` recorded: ``slurm``/``postgres`` = ``up`` or why not."""
    if not STATE.is_file():
        return {}
    return dict(line.split("=", 1) for line in STATE.read_text().splitlines() if "=" in line)


def run(root: Path, workers: int, overrides: list[str]) -> float:
    """``workers`` copies of the search command at once under ``root``; the wall time."""
    env = {**os.environ, "PRICENET_ROOT": str(root)}
    command = [sys.executable, "-m", "pricenet.train", "--multirun", *overrides]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"error: the search failed:\n{err[-2000:]}")
    return time.perf_counter() - start


def complete(storage: str, name: str) -> int:
    """How many trials of study ``name`` completed."""
    import optuna

    from hydra_plugins.pricenet_optuna_sweeper import _study

    study = optuna.load_study(study_name=name, storage=_study.open_storage(storage))
    return sum(t.state.name == "COMPLETE" for t in study.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=400)
    args = parser.parse_args()
    state = cluster_state()
    base = [
        "hparams_search=optuna",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.seed=0",
        f"hydra.sweeper.n_trials={args.trials}",
        f"trainer.epochs={args.epochs}",
        f"data.n_rows={args.rows}",
        "trainer.device=cpu",
        "report.plots=false",
        "report.tensorboard=false",
    ]
    slurm = [
        "launcher=submitit_slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.sweeper.n_jobs=2",
        "hydra.launcher.array_parallelism=2",
    ]
    # (name, needs, workers, overrides, storage URL or None for SQLite in the sweep folder)
    pg = state.get("postgres_url", "")
    variants = [
        ("1 worker (SQLite)", None, 1, [], None),
        ("2 SLURM array tasks (SQLite)", "slurm", 1, slurm, None),
        ("2 local workers (PostgreSQL)", "postgres", 2, [f"hydra.sweeper.storage={pg}"], pg),
    ]
    print(f"{args.trials} trials, {args.epochs} epochs on {args.rows} rows, {os.cpu_count()} CPUs")
    print("| variant | wall time | trials complete | trials / min |")
    print("|---|---:|---:|---:|")
    for label, needs, workers, extra, storage in variants:
        if needs and state.get(needs) != "up":
            print(f"| {label} | skipped: {needs} {state.get(needs, 'not started')} | | |")
            continue
        name = f"bench{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="pricenet-cluster-bench-") as tmp:
            root = Path(tmp)
            wall = run(root, workers, [*base, f"hydra.sweeper.study_name={name}", *extra])
            url = storage or f"sqlite:///{root / 'outputs' / 'search' / name / 'optuna.db'}"
            done = complete(url, name)
        print(f"| {label} | {wall:.1f} s | {done} | {done / wall * 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
