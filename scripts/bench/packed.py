"""Cross-validation at the cost of one fit: k x r CV (and seeds) packed in one model against
one fit and against the members fitted one by one, as bare loops and as whole runs."""

from __future__ import annotations

import statistics
from typing import Any

from pricenet.members import build_trainer, plan_for, prepare

from .common import CPU, Context, compose_cfg, whole_run
from .harness import timed
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
        "`python -m pricenet.train`'s `run()` in process (preprocessing, evaluation, "
        "calibration, metrics and checkpoints included), wall time from run.json, median of "
        "{repeats} alternated runs: `cv=none` against `cv=kfold cv.folds={folds} "
        "cv.repeats={cv_repeats}` ({members} members packed).",
        (
            ("batch", "{batch}"),
            ("early stopping", "{early_stopping}"),
            ("one run s", "{one_s:.2f}"),
            ("CV run s", "{cv_s:.2f}"),
            ("CV / one run", "**{ratio:.2f}x**"),
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
        plan = plan_for(cfg, ctx.table)
        prepared = prepare(cfg, ctx.table, plan, CPU)
        for group in ([0], None):  # warm-up: one epoch of each shape
            warm = build_trainer(cfg, prepared, group)
            warm.epochs = 1
            warm.fit()
        one_s, packed_s = [], []
        for _ in range(repeats):  # alternated
            one = build_trainer(cfg, prepared, [0])
            one_s.append(timed(one.fit))
            packed = build_trainer(cfg, prepared)
            packed_s.append(timed(packed.fit))
        sequential = [build_trainer(cfg, prepared, [m]) for m in range(len(plan))]
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


def _runs(ctx: Context, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for stop in PATIENCE:
        for batch in (64, 8):
            common = [*ctx.data, f"trainer.batch_size={batch}", *PATIENCE[stop], *ctx.shrink(4)]
            one, cv = compose_cfg(*common), compose_cfg(*common, *ctx.cv_overrides)
            whole_run(one), whole_run(cv)  # warm-up: the first run of a shape pays extra
            one_s, cv_s = [], []
            for _ in range(repeats):  # alternated
                one_s.append(whole_run(one)["wall_time_s"])
                cv_s.append(whole_run(cv)["wall_time_s"])
            row = {
                "batch": batch,
                "early_stopping": stop,
                "one_s": statistics.median(one_s),
                "cv_s": statistics.median(cv_s),
            }
            row["ratio"] = row["cv_s"] / row["one_s"]
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
