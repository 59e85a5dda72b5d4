"""Sweeps: a multirun of optimizer x activation jobs against separate runs, and joblib."""

from __future__ import annotations

import csv
import itertools
from typing import Any

from .common import Context
from .harness import python
from .render import Table

TABLES = {
    "sweep": Table(
        "Sweeps",
        "{jobs} jobs (optimizer x activation, {epochs} epochs, {rows} synthetic rows), each "
        "variant a fresh `python -m pricenet.train` process tree. The marginal cost of a job "
        "in the basic multirun, (multirun - one run) / (jobs - 1): {marginal:.2f} s; time "
        "inside a job (run.json, mean): {in_job:.2f} s.",
        (
            ("variant", "{name}"),
            ("wall s", "{wall_s:.1f}"),
            ("CPU s", "{cpu_s:.1f}"),
            ("/ one run", "{ratio:.1f}x"),
        ),
    ),
}


def _leaderboard(root: Any, jobs: int) -> list[dict[str, str]]:
    """The finished sweep's rows, checked to be ``jobs`` finished jobs."""
    (folder,) = (root / "outputs" / "multirun").iterdir()
    with (folder / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != jobs or any(r["status"] != "done" for r in rows):
        raise RuntimeError(f"sweep: expected {jobs} finished jobs, found {len(rows)}")
    return rows


def measure(ctx: Context) -> dict[str, Any]:
    """Wall and CPU seconds of each way to run the same jobs."""
    optimizers, activations = (
        (("sgd", "adam"), ("relu",))
        if ctx.quick
        else (("sgd", "momentum", "adam", "rmsprop"), ("relu", "tanh", "gelu", "silu"))
    )
    epochs, n_rows = (1, 300) if ctx.quick else (5, 2000)
    jobs = [
        [f"optim={o}", f"activation={a}"] for o, a in itertools.product(optimizers, activations)
    ]
    grid = [f"optim={','.join(optimizers)}", f"activation={','.join(activations)}"]
    common = [f"trainer.epochs={epochs}", f"data.n_rows={n_rows}", "report.plots=false"]

    def train(name: str, *overrides: str) -> dict[str, Any]:
        root = ctx.work / "sweep" / name
        root.mkdir(parents=True, exist_ok=True)
        return python(["pricenet.train", *overrides, *common], root, {"PRICENET_ROOT": str(root)})

    one = train("one", *jobs[0])
    separate = [train("separate", *job) for job in jobs]
    multirun = "--multirun"
    variants = {
        "one run": one,
        "separate runs, one process each": {
            "wall_s": sum(r["wall_s"] for r in separate),
            "cpu_s": sum(r["cpu_s"] for r in separate),
        },
        "multirun, basic launcher": train("basic", multirun, *grid),
        "multirun, basic launcher, torch's default threads": train(
            "threads", multirun, *grid, "trainer.threads=null"
        ),
        "multirun, launcher=joblib, 2 workers": train(
            "joblib", multirun, "launcher=joblib", "hydra.launcher.n_jobs=2", *grid
        ),
    }
    in_job = [
        float(r["wall_time_s"]) for r in _leaderboard(ctx.work / "sweep" / "basic", len(jobs))
    ]
    for name in ("threads", "joblib"):
        _leaderboard(ctx.work / "sweep" / name, len(jobs))
    rows = [
        {
            "name": name,
            "wall_s": r["wall_s"],
            "cpu_s": r["cpu_s"],
            "ratio": r["wall_s"] / one["wall_s"],
        }
        for name, r in variants.items()
    ]
    basic = variants["multirun, basic launcher"]["wall_s"]
    facts = {
        "jobs": len(jobs),
        "epochs": epochs,
        "rows": n_rows,
        "marginal": (basic - one["wall_s"]) / (len(jobs) - 1),
        "in_job": sum(in_job) / len(in_job),
    }
    return {"sweep": {"facts": facts, "rows": rows}}
