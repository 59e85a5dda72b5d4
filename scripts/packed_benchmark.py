"""Packed engine timings, side by side in one process, 1 thread.

1. M=15 members packed vs 15 sequential M=1 fits vs one single fit (the default MLP, each
   member with its own rows, init and batch order), at batch 64 and at batch 8.
2. The 3000-epoch full-batch recommended-style run (linear CORAL, Adam) with the wall-time
   checkpointer (default 30 s) vs checkpointing only at the end.

    python scripts/packed_benchmark.py [--epochs 10] [--rows 1280]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

import pricenet.config  # noqa: F401  (registers the schemas)
from pricenet.callbacks import Checkpointer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from packed_helpers import make_trainer, member_rows  # noqa: E402


def _cfg(*overrides: str):
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def packed_vs_sequential(batch: int, epochs: int, rows: int, members: int = 15) -> dict:
    cfg = _cfg(f"trainer.batch_size={batch}", f"trainer.epochs={epochs}", "trainer.patience=null")
    data = [member_rows(rows + m % 2, rows // 4, seed=m) for m in range(members)]
    seeds = list(range(members))
    make_trainer(cfg, data[:1], seeds[:1]).fit()  # warm-up: lazy inits, allocator
    single = _timed(lambda: make_trainer(cfg, data[:1], seeds[:1]).fit())
    packed = _timed(lambda: make_trainer(cfg, data, seeds).fit())
    sequential = _timed(
        lambda: [make_trainer(cfg, [data[m]], [seeds[m]]).fit() for m in range(members)]
    )
    return {"single": single, "packed": packed, "sequential": sequential}


def checkpointing(epochs: int, rows: int) -> dict:
    cfg = _cfg(
        "experiment=recommended", "optim=adam", "scheduler=cosine", f"trainer.epochs={epochs}"
    )
    data = [member_rows(rows, 0, seed=0)]
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, interval in (("every 30 s", 30.0), ("end only", float("inf"))):
            trainer = make_trainer(cfg, data, [0])
            trainer.callbacks = [Checkpointer(Path(folder) / name, {}, interval)]
            result[name] = _timed(trainer.fit)
        trainer = make_trainer(cfg, data, [0])
        trainer.callbacks = [Checkpointer(Path(folder) / "every", {}, 0.0)]
        result["every epoch"] = _timed(trainer.fit)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1280)
    parser.add_argument("--full-batch-epochs", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.rows} rows/member, {args.epochs} epochs")
    for batch in (64, 8):
        t = packed_vs_sequential(batch, args.epochs, args.rows)
        print(
            f"batch {batch:>2}: single {t['single']:.2f}s  packed x15 {t['packed']:.2f}s "
            f"({t['packed'] / t['single']:.2f}x single)  sequential x15 {t['sequential']:.2f}s "
            f"(packed is {t['sequential'] / t['packed']:.1f}x faster)",
            flush=True,
        )
    c = checkpointing(args.full_batch_epochs, 1600)
    print(
        f"{args.full_batch_epochs} full-batch epochs: checkpoint every 30 s "
        f"{c['every 30 s']:.2f}s, "
        f"at the end only {c['end only']:.2f}s ({c['every 30 s'] / c['end only']:.2f}x), "
        f"every epoch {c['every epoch']:.2f}s"
    )


if __name__ == "__main__":
    main()
