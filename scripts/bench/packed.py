"""Cross-validation at the cost of one fit: k x r CV (and seeds) packed in one model against
one fit and against the members fitted one by one, as bare loops and as whole runs."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

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
}

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


def _runs(ctx: Context, repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fresh = not ctx.quick
    for stop in PATIENCE:
        for batch in (64, 8):
            common = [*ctx.data, f"trainer.batch_size={batch}", *PATIENCE[stop], *ctx.shrink(4)]
            one, cv = compose_cfg(*common), compose_cfg(*common, *ctx.cv_overrides)
            whole_run(one), whole_run(cv)  # warm-up: the first run of a shape pays extra
            samples: dict[str, list[float]] = {
                k: [] for k in ("one", "cv", "fresh_one", "fresh_cv")
            }
            for _ in range(repeats):  # alternated
                samples["one"].append(whole_run(one)["wall_time_s"])
                samples["cv"].append(whole_run(cv)["wall_time_s"])
                if fresh or not rows:  # quick mode: fresh processes for the first case only
                    samples["fresh_one"].append(_fresh(ctx, common))
                    samples["fresh_cv"].append(_fresh(ctx, [*common, *ctx.cv_overrides]))
            row = {"batch": batch, "early_stopping": stop}
            row.update({f"{k}_s": statistics.median(v) if v else None for k, v in samples.items()})
            row["ratio"] = row["cv_s"] / row["one_s"]
            if row["fresh_one_s"] is not None:
                row["fresh_ratio"] = row["fresh_cv_s"] / row["fresh_one_s"]
            rows.append(row)
    return rows


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
    return {
        "loops": {"facts": facts, "rows": _loops(ctx, repeats)},
        "runs": {"facts": run_facts, "rows": _runs(ctx, repeats)},
    }
