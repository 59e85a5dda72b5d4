"""Cross-validation at the cost of one fit: k x r CV (and seeds) packed in one model against
one fit and against the members fitted one by one, as bare loops and as whole runs."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pricenet.engine.loop as loop
import pricenet.run.pipeline as pipeline
from pricenet.run.fits import build_trainer, plan_for, prepare
from pricenet.run.recipe import Recipe

from .common import CPU, QUIET, Context, compose_cfg, whole_run
from .harness import python, timed
from .render import Table

TABLES = {
    "loops": Table(
        "Packed models: the bare training loop",
        "The default config's MLP (Adam, at most {epochs} epochs) on the data above, fit only "
        "(data prepared once, a one-epoch warm-up of each shape). 'one fit': member 0 alone; "
        "'packed': all members in one trainer (batched weights); 'sequential': one trainer "
        "per member, one after the other. One fit and packed: median of {repeats} alternated "
        "fits; sequential: one pass. With early stopping the packed fit runs until its last "
        "member stops; without it every fit runs all epochs, which compares the cost of a "
        "step.",
        (
            ("case", "{name}"),
            ("batch", "{batch}"),
            ("early stopping", "{early_stopping}"),
            ("members", "{members}"),
            ("one fit s", "{one_s:.2f}"),
            ("packed s", "{packed_s:.2f}"),
            ("sequential s", "{sequential_s:.2f}"),
            ("packed / one fit", "**{packed_ratio:.2f}x**"),
            ("sequential / packed", "{sequential_ratio:.1f}x"),
            ("epochs: one fit / packed members", "{one_epochs} / {min_epochs}–{max_epochs}"),
        ),
    ),
    "runs": Table(
        "Packed models: whole runs",
        "Whole runs (preprocessing, evaluation, calibration, metrics and checkpoints "
        "included), wall time from run.json, median of {repeats} alternated runs: `cv=none` "
        "against `cv=kfold cv.folds={folds} cv.repeats={cv_repeats}` ({members} members "
        "packed). Fresh process: `python -m pricenet.train`, as a user runs it; warmed: "
        "`run()` called again in one process, after a run of each shape.",
        (
            ("batch", "{batch}"),
            ("early stopping", "{early_stopping}"),
            ("fresh: one run s", "{fresh_one_s:.2f}"),
            ("fresh: CV run s", "{fresh_cv_s:.2f}"),
            ("fresh: CV / one", "**{fresh_ratio:.2f}x**"),
            ("warmed: one run s", "{one_s:.2f}"),
            ("warmed: CV run s", "{cv_s:.2f}"),
            ("warmed: CV / one", "**{ratio:.2f}x**"),
        ),
    ),
    "parts": Table(
        "Packed models: where a run's time goes",
        "The warmed whole runs above taken apart: seconds per part of the run, one run / "
        "CV run ({members} members packed), the median of each part over the {repeats} "
        "runs. Epoch plans: each member's batch order and its noise (dropout masks) for the "
        "epoch, drawn from its own generator; steps: forward, backward and optimizer step "
        "of the packed model; per-epoch evaluation: every live member on its training and "
        "validation rows; after the fit: each member on its held-out rows and its "
        "temperature. The scikit-learn row is a fresh process's `import "
        "sklearn.model_selection` (after torch and pandas), which only a CV run pays.",
        (
            ("part", "{part}"),
            ("batch 64, early stopping", "{one_64_yes:.3f} / {cv_64_yes:.3f}"),
            ("batch 8, early stopping", "{one_8_yes:.3f} / {cv_8_yes:.3f}"),
            ("batch 64, no early stopping", "{one_64_no:.3f} / {cv_64_no:.3f}"),
            ("batch 8, no early stopping", "{one_8_no:.3f} / {cv_8_no:.3f}"),
        ),
    ),
}

# The parts of a whole run, each the functions whose inclusive time it is (then the
# enclosing parts less the parts inside them: see ``_exclusive``).
PARTS = {
    "data, checks and plan": ("load_data", "size_network", "plan_for"),
    "preprocessing (one per member)": ("prepare",),
    "epoch plans (order, noise draws)": ("plan_epoch",),
    "training steps": ("train_step",),
    "batches and noise set-up": ("_train_rows",),
    "per-epoch evaluation": ("_epoch_metrics",),
    "callbacks (best weights, stopping, csv, last.pt)": ("emit",),
    "evaluation after the fit (held-out rows, calibration)": ("evaluate",),
    "metrics.json, summary, best.pt": ("metrics_of", "keep_model", "model_summary"),
}
TIMED = {
    pipeline: (
        "load_data",
        "size_network",
        "plan_for",
        "prepare",
        "evaluate",
        "metrics_of",
        "keep_model",
        "model_summary",
    ),
    loop: ("plan_epoch",),
    loop.Trainer: ("train_step", "_train_rows", "_epoch_metrics", "emit"),
}


@contextlib.contextmanager
def _timers() -> Iterator[dict[str, float]]:
    """Seconds spent in each function of ``TIMED`` (inclusive), while the block runs."""
    spent: dict[str, float] = {}
    saved = []
    for owner, names in TIMED.items():
        for name in names:
            original = getattr(owner, name)
            saved.append((owner, name, original))

            @functools.wraps(original)
            def timed_call(*args: Any, _f: Any = original, _n: str = name, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    spent[_n] = spent.get(_n, 0.0) + time.perf_counter() - started

            setattr(owner, name, timed_call)
    try:
        yield spent
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _exclusive(spent: dict[str, float], wall: float) -> dict[str, float]:
    """Each part's own seconds (batches and set-up: the epoch's training less its plan and
    steps), the rest of the run and the whole run."""
    parts = {part: sum(spent.get(f, 0.0) for f in names) for part, names in PARTS.items()}
    inside = parts["epoch plans (order, noise draws)"] + parts["training steps"]
    parts["batches and noise set-up"] -= inside
    parts["the rest (building, configs, files)"] = wall - sum(parts.values())
    parts["whole run (run.json)"] = wall
    return parts


def _sklearn_import() -> float:
    """Seconds a fresh process takes to import sklearn.model_selection after torch and pandas."""
    code = (
        "import time, torch, pandas; t = time.perf_counter(); import sklearn.model_selection; "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


PATIENCE = {"yes": [], "no": ["trainer.patience=null"]}


def _loops(ctx: Context, repeats: int) -> list[dict[str, Any]]:
    folds, cv_repeats = ctx.cv
    members = folds * cv_repeats
    cases = [
        (f"{folds}x{cv_repeats} CV", batch, stop, ctx.cv_overrides)
        for stop in PATIENCE
        for batch in (64, 8)
    ]
    cases.append(
        (f"{members} seeds (`trainer.seeds={members}`)", 64, "yes", [f"trainer.seeds={members}"])
    )
    rows = []
    for name, batch, stop, overrides in cases:
        cfg = compose_cfg(
            *ctx.data, *overrides, f"trainer.batch_size={batch}", *PATIENCE[stop], *ctx.shrink(4)
        )
        recipe = Recipe.of(cfg)
        plan = plan_for(recipe, ctx.table)
        prepared = prepare(recipe, ctx.table, plan, CPU)
        for group in ([0], None):  # warm-up: one epoch of each shape
            warm = build_trainer(recipe, prepared, group)
            warm.epochs = 1
            warm.fit()
        one_s, packed_s = [], []
        for _ in range(repeats):  # alternated
            one = build_trainer(recipe, prepared, [0])
            one_s.append(timed(one.fit))
            packed = build_trainer(recipe, prepared)
            packed_s.append(timed(packed.fit))
        sequential = [build_trainer(recipe, prepared, [m]) for m in range(len(plan))]
        sequential_s = timed(lambda s=sequential: [t.fit() for t in s])
        epochs = [member.epoch for member in packed.state.members]
        row = {
            "name": name,
            "batch": batch,
            "early_stopping": stop,
            "members": len(plan),
            "one_s": statistics.median(one_s),
            "packed_s": statistics.median(packed_s),
            "sequential_s": sequential_s,
            "one_epochs": one.state.epoch,
            "min_epochs": min(epochs),
            "max_epochs": max(epochs),
        }
        row["packed_ratio"] = row["packed_s"] / row["one_s"]
        row["sequential_ratio"] = sequential_s / row["packed_s"]
        rows.append(row)
    return rows


def _fresh(ctx: Context, overrides: list[str]) -> float:
    """run.json's wall time of ``python -m pricenet.train overrides`` in a fresh process."""
    root = Path(tempfile.mkdtemp(dir=ctx.work))
    python(["pricenet.train", *QUIET, *overrides], root, {"PRICENET_ROOT": str(root)})
    (found,) = root.rglob("run.json")
    seconds = json.loads(found.read_text())["wall_time_s"]
    shutil.rmtree(root)
    return seconds


def _timed_run(cfg: Any) -> tuple[float, dict[str, float]]:
    """A warmed whole run: run.json's wall time and its parts."""
    with _timers() as spent:
        wall = whole_run(cfg)["wall_time_s"]
    return wall, _exclusive(spent, wall)


def _runs(ctx: Context, repeats: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The whole runs' rows, and the parts' rows (one per part, a column pair per case)."""
    rows: list[dict[str, Any]] = []
    parts: dict[str, dict[str, Any]] = {}
    fresh = not ctx.quick
    for stop in PATIENCE:
        for batch in (64, 8):
            common = [*ctx.data, f"trainer.batch_size={batch}", *PATIENCE[stop], *ctx.shrink(4)]
            one, cv = compose_cfg(*common), compose_cfg(*common, *ctx.cv_overrides)
            whole_run(one), whole_run(cv)  # warm-up: the first run of a shape pays extra
            samples: dict[str, list[float]] = {
                k: [] for k in ("one", "cv", "fresh_one", "fresh_cv")
            }
            split: dict[str, list[dict[str, float]]] = {"one": [], "cv": []}
            for _ in range(repeats):  # alternated
                for key, cfg in (("one", one), ("cv", cv)):
                    wall, spent = _timed_run(cfg)
                    samples[key].append(wall)
                    split[key].append(spent)
                if fresh or not rows:  # quick mode: fresh processes for the first case only
                    samples["fresh_one"].append(_fresh(ctx, common))
                    samples["fresh_cv"].append(_fresh(ctx, [*common, *ctx.cv_overrides]))
            row = {"batch": batch, "early_stopping": stop}
            row.update({f"{k}_s": statistics.median(v) if v else None for k, v in samples.items()})
            row["ratio"] = row["cv_s"] / row["one_s"]
            if row["fresh_one_s"] is not None:
                row["fresh_ratio"] = row["fresh_cv_s"] / row["fresh_one_s"]
            rows.append(row)
            for key, runs in split.items():
                for part in runs[0]:
                    value = statistics.median(r[part] for r in runs)
                    parts.setdefault(part, {"part": part})[f"{key}_{batch}_{stop}"] = value
    imports = statistics.median(_sklearn_import() for _ in range(repeats))
    sklearn = {"part": "import sklearn.model_selection (fresh process)"}
    for stop in PATIENCE:
        for batch in (64, 8):
            sklearn.update({f"one_{batch}_{stop}": 0.0, f"cv_{batch}_{stop}": imports})
    return rows, [*parts.values(), sklearn]


def measure(ctx: Context) -> dict[str, Any]:
    """Bare loops and whole runs, batch 8 and 64, with and without early stopping."""
    repeats = 1 if ctx.quick else 3
    folds, cv_repeats = ctx.cv
    epochs = compose_cfg(*ctx.data, *ctx.shrink(4)).trainer.epochs
    facts = {"epochs": epochs, "repeats": repeats}
    run_facts = {
        "repeats": repeats,
        "folds": folds,
        "cv_repeats": cv_repeats,
        "members": folds * cv_repeats,
    }
    runs, parts = _runs(ctx, repeats)
    return {
        "loops": {"facts": facts, "rows": _loops(ctx, repeats)},
        "runs": {"facts": run_facts, "rows": runs},
        "parts": {"facts": run_facts, "rows": parts},
    }
