"""Sweep benchmark: a 16-job multirun against 16 separate runs, and joblib against basic.

    python scripts/sweep_benchmark.py [--epochs 5] [--n-rows 2000] [--out FILE.md] [-- overrides]

All variants train the same 16 jobs (4 optimizers x 4 activations) into scratch folders and
print one Markdown table: wall time of each variant, and the marginal cost of a job in a
multirun, i.e. what each job after the first adds, ``(multirun - single run) / 15``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
ACTIVATIONS = ("relu", "tanh", "gelu", "silu")
JOBS = [[f"optim={o}", f"activation={a}"] for o, a in itertools.product(OPTIMIZERS, ACTIVATIONS)]
SWEEP = [f"optim={','.join(OPTIMIZERS)}", f"activation={','.join(ACTIVATIONS)}"]


def train(root: Path, *overrides: str) -> float:
    """Run ``python -m pricenet.train`` with its outputs under ``root``; return the wall time."""
    env = {**os.environ, "PRICENET_ROOT": str(root)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pricenet.train", *overrides],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(overrides)}\n{result.stderr[-3000:]}")
    return elapsed


def sweep_rows(root: Path) -> list[dict[str, str]]:
    """The leaderboard rows of the one sweep under ``root``, checked to be 16 finished jobs."""
    (sweep_dir,) = (root / "outputs" / "multirun").iterdir()
    with (sweep_dir / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != len(JOBS) or any(r["status"] != "done" for r in rows):
        sys.exit(f"{sweep_dir}: expected {len(JOBS)} finished jobs")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job")
    args = parser.parse_args()
    common = [f"trainer.epochs={args.epochs}", f"data.n_rows={args.n_rows}", *args.overrides]
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as scratch:
        root = Path(scratch)
        single = train(root / "single", *JOBS[0], *common)
        separate = sum(train(root / "separate", *job, *common) for job in JOBS)
        basic = train(root / "basic", "--multirun", *SWEEP, *common)
        in_job = [float(r["wall_time_s"]) for r in sweep_rows(root / "basic")]
        torch_threads = train(root / "torch", "--multirun", *SWEEP, "trainer.threads=null", *common)
        sweep_rows(root / "torch")
        joblib = train(
            root / "joblib",
            "--multirun",
            "launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *SWEEP,
            *common,
        )
        sweep_rows(root / "joblib")

    def marginal(multirun: float) -> float:
        return (multirun - single) / (len(JOBS) - 1)

    variants = {
        "one single run (process start included)": single,
        "16 separate single-run processes": separate,
        "16-job multirun, basic launcher": basic,
        "16-job multirun, basic launcher, torch's default threads": torch_threads,
        "16-job multirun, launcher=joblib, 2 workers": joblib,
    }
    lines = [
        f"16 jobs (optim x activation), {' '.join(common)}; "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the start.",
        "",
        "| variant | wall time (s) | / single run |",
        "|---|---:|---:|",
        *(f"| {name} | {secs:.1f} | {secs / single:.1f}x |" for name, secs in variants.items()),
        "",
        f"Marginal cost of a job in the basic multirun: {marginal(basic):.2f} s "
        f"(time inside a job, mean of run.json wall_time_s: {sum(in_job) / len(in_job):.2f} s; "
        f"{marginal(torch_threads):.2f} s with torch's default threads). "
        f"Basic / joblib with 2 workers: {basic / joblib:.2f}x "
        f"({torch_threads / joblib:.2f}x against basic with torch's default threads).",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
