"""Packed engine timings, side by side in one process, 1 thread.

1. The default MLP (hidden [64], relu, dropout 0.1, Adam) as a 5-fold x 3-repeat CV would fit it:
   M=15 members, each with its own ~1090 training rows (ragged by a row or two), init and batch
   order, packed into one model, vs ONE single fit vs 15 sequential M=1 fits, same epochs, at
   batch 64 and at batch 8; and 15 seeds on one split. Each figure is the best of ``--repeats``.
2. The 3000-epoch full-batch recommended-style run (linear CORAL, Adam) with the wall-time
   checkpointer (default 30 s) vs checkpointing only at the end.

    python scripts/packed_benchmark.py [--epochs 10] [--rows 1090] [--repeats 3]
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

MEMBERS = 15


def _cfg(*overrides: str):
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _timed(fn, repeats: int) -> float:
    """The best of ``repeats`` wall times (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def packed_vs_sequential(batch: int, epochs: int, rows: int, repeats: int) -> dict[str, float]:
    """Seconds for one fit, 15 packed CV-like members, 15 sequential fits, 15 packed seeds."""
    cfg = _cfg(f"trainer.batch_size={batch}", f"trainer.epochs={epochs}", "trainer.patience=null")
    # CV folds: own rows per member, ragged by a row or two; seeds: one split, own seeds
    folds = [member_rows(rows - 1 + m % 3, rows // 4, seed=m) for m in range(MEMBERS)]
    split = [folds[0]] * MEMBERS
    seeds = list(range(MEMBERS))
    make_trainer(cfg, folds[:1], seeds[:1]).fit()  # warm-up: lazy inits, allocator
    return {
        "single": _timed(lambda: make_trainer(cfg, folds[:1], seeds[:1]).fit(), repeats),
        "packed": _timed(lambda: make_trainer(cfg, folds, seeds).fit(), repeats),
        "seeds": _timed(lambda: make_trainer(cfg, split, seeds).fit(), repeats),
        "sequential": _timed(
            lambda: [make_trainer(cfg, [folds[m]], [m]).fit() for m in range(MEMBERS)],
            max(1, repeats - 1),
        ),
    }


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
            result[name] = _timed(trainer.fit, 1)
        trainer = make_trainer(cfg, data, [0])
        trainer.callbacks = [Checkpointer(Path(folder) / "every", {}, 0.0)]
        result["every epoch"] = _timed(trainer.fit, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1090)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 8])
    parser.add_argument("--full-batch-epochs", type=int, default=3000, help="0: skip part 2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, 1 thread, {MEMBERS} members of ~{args.rows} rows, "
        f"{args.epochs} epochs, best of {args.repeats}"
    )
    for batch in args.batches:
        t = packed_vs_sequential(batch, args.epochs, args.rows, args.repeats)
        print(
            f"batch {batch:>3}: single {t['single']:.3f}s | packed x{MEMBERS} folds "
            f"{t['packed']:.3f}s ({t['packed'] / t['single']:.2f}x single) | packed x{MEMBERS} "
            f"seeds {t['seeds']:.3f}s ({t['seeds'] / t['single']:.2f}x single) | sequential "
            f"x{MEMBERS} {t['sequential']:.3f}s ({t['sequential'] / t['packed']:.1f}x packed)",
            flush=True,
        )
    if args.full_batch_epochs:
        c = checkpointing(args.full_batch_epochs, 1600)
        print(
            f"{args.full_batch_epochs} full-batch epochs: checkpoint every 30 s "
            f"{c['every 30 s']:.2f}s, at the end only {c['end only']:.2f}s "
            f"({c['every 30 s'] / c['end only']:.2f}x), every epoch {c['every epoch']:.2f}s"
        )


if __name__ == "__main__":
    main()
