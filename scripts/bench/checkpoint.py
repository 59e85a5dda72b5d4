"""The long full-batch run: last.pt written by wall time (default) vs at the end vs every epoch."""

from __future__ import annotations

import statistics
from typing import Any

from .common import Context, compose_cfg, whole_run
from .render import Table

TABLES = {
    "checkpoint": Table(
        "Checkpoints by time",
        "One whole run of linear CORAL trained with {epochs} full-batch Adam epochs (lr 0.1, "
        "cosine), run.json's wall time, median of {repeats} alternated runs (every epoch: "
        "one run). `last.pt` is written at most every `trainer.checkpoint_interval_s` "
        "seconds, at the end and on SIGTERM/SIGINT. Default against end only: "
        "**{ratio:.2f}x**.",
        (
            ("checkpointing", "{name}"),
            ("`trainer.checkpoint_interval_s`", "{interval:.0f}"),
            ("wall s", "{seconds:.2f}"),
            ("vs end only", "{ratio:.2f}x"),
        ),
    ),
}

VARIANTS = {"every 30 s (default)": 30, "at the end only": 1e9, "every epoch": 0}


def measure(ctx: Context) -> dict[str, Any]:
    """Whole-run seconds of each checkpoint interval."""
    epochs, repeats = (300, 1) if ctx.quick else (3000, 2)
    adam = ["optim=adam", "optim.lr=0.1", "scheduler=cosine", f"trainer.epochs={epochs}"]

    def seconds(interval: float) -> float:
        cfg = compose_cfg(
            *ctx.data,
            "experiment=recommended",
            *adam,
            f"trainer.checkpoint_interval_s={interval}",
        )
        return whole_run(cfg)["wall_time_s"]

    seconds(1e9)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in ("every 30 s (default)", "at the end only"):  # alternated
            samples[name].append(seconds(VARIANTS[name]))
    samples["every epoch"] = [seconds(0)]
    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["at the end only"]
    rows = [
        {"name": name, "interval": VARIANTS[name], "seconds": s, "ratio": s / base}
        for name, s in median.items()
    ]
    facts = {"epochs": epochs, "repeats": repeats, "ratio": rows[0]["ratio"]}
    return {"checkpoint": {"facts": facts, "rows": rows}}
