"""One run, as named steps: recipe → data → plan → prep → fit → evaluate → finalize.

:func:`run` reads the config once into a :class:`~pricenet.run.recipe.Recipe` (checking every
value; one error lists every problem), reads the data, builds the head and sizes the network
(each once), claims the run folder, then:

- **plan** (:mod:`pricenet.run.plan`): which fits to make: one split (× ``trainer.seeds``), or
  ``cv.folds`` × ``cv.repeats`` folds (× seeds). Each fit is a *member*.
- **prep**: each member's :class:`~pricenet.tables.Preprocessor`, fitted on its own
  training rows only, turns the table into its tensors.
- **fit** (:mod:`pricenet.engine.loop`): every member trains in one packed model, or one by one
  when the config cannot be packed exactly (one log line says why).
- **evaluate**: each member's best weights on its held-out rows; the ``cv``/``seeds``
  summary; a calibration temperature per member, fitted on its validation rows.
- **finalize**: ``metrics.json``, ``best.pt`` (the members as one ensemble, a refit on all
  rows, or nothing: ``cv.keep``), plots. Each output has one writer: the checkpointer
  callback writes ``last.pt``; this module everything else.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from pricenet.atomic import atomic_write_json as _write_json
from pricenet.atomic import atomic_write_text
from pricenet.checkpoints.checkpoint import BEST, LAST
from pricenet.checkpoints.restore import Resume, resume_state
from pricenet.config.seed import resolve_device, set_seed, set_threads
from pricenet.engine.callbacks import RunContext
from pricenet.engine.loop import FitInterrupted
from pricenet.errors import CheckpointError, ConfigError, DivergenceError
from pricenet.nn.heads import Head
from pricenet.nn.model import count_parameters
from pricenet.nn.spec import NetworkSpec
from pricenet.run.artifacts import checkpoint_meta, keep_diverged, keep_model
from pricenet.run.evaluation import evaluate, metrics_of
from pricenet.run.fits import (
    check_resume,
    fit,
    fit_preprocessor,
    load_data,
    plan_for,
    prepare,
    warn_absent_classes,
)
from pricenet.run.folders import claim_run_dir
from pricenet.run.recipe import Recipe
from pricenet.tables import Table

log = logging.getLogger("pricenet")

METRICS = "metrics.json"


# --------------------------------------------------------------------------- small helpers


def table_sha256(table: Table) -> str:
    """A fingerprint of a table's values (not its file's bytes): resume refuses other data."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(table.frame, index=False).to_numpy())
    if table.labels is not None:
        digest.update(np.ascontiguousarray(table.labels).tobytes())
    return digest.hexdigest()


def model_summary(model: torch.nn.Module, width: int, device: torch.device) -> str:
    """The torchsummary table of one member, computed on a copy (the model is untouched)."""
    from torchsummary import summary

    probe = copy.deepcopy(model.member(0) if model.members > 1 else model)
    buffer = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(buffer):
        summary(probe, input_size=(width,), device=device.type)
    return buffer.getvalue()


# --------------------------------------------------------------------------- check


def size_network(recipe: Recipe, table: Table) -> NetworkSpec:
    """The run's network, sized for the table's real input width and classes, and refused
    over the budgets: a 70k-column table is refused here, before the run folder is claimed
    or any member's data is prepared. The width is a preprocessor's fitted on one row (what
    :func:`prepare` fits on every member's rows)."""
    prep = fit_preprocessor(recipe.data, table, [0])
    return recipe.network(prep, table.schema.num_classes, recipe.fits)


def _check_resume(resumed: Resume, recipe: Recipe, table: Table) -> None:
    """A resume that would train nothing, or cannot continue exactly, is refused up front,
    before the run folder is claimed: its data must be the same, and its trainer state must
    fit the trainer(s) this recipe builds (:func:`~pricenet.run.fits.check_resume`)."""
    where = recipe.trainer.resume
    if resumed.data_sha256 not in (None, table_sha256(table)):
        raise CheckpointError(
            f"trainer.resume={where}: that run was trained on other data than "
            f"{table.source} (its content changed); resume on the same data, or start a new run"
        )
    check_resume(recipe, resumed, [len(member.train) for member in plan_for(recipe, table)])
    fit = resumed.state["fit"]
    done = fit["epoch"]
    members = fit["members"]
    if members and all(m.get("stopped_early") or m.get("error") for m in members):
        raise ConfigError(f"trainer.resume={where}: that run stopped early at epoch {done}")
    if done >= recipe.trainer.epochs:
        raise ConfigError(
            f"trainer.resume={where}: that run already trained {done} epochs and "
            f"trainer.epochs={recipe.trainer.epochs}; raise trainer.epochs to train longer"
        )


# --------------------------------------------------------------------------- the run


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    multirun: bool = False,
    name: str = "default",
    hydra: Any = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Train and test the model(s) ``cfg`` describes; write the artifacts into ``run_dir``.

    ``multirun`` makes the console quiet (one summary line per job); ``name`` (the job's
    overrides) names the run in TensorBoard and that line; ``hydra`` is the job's Hydra
    config, for the callbacks that need it (an Optuna trial's pruning).

    Everything that can be checked is, and the data is read, before the run folder is
    claimed; a run that fails after that leaves ``metrics.json`` with ``"status": "failed"``.
    Returns the metrics (also in ``metrics.json``) and the paths of the artifacts.
    """
    started = time.perf_counter()
    recipe = Recipe.of(cfg)
    settings = recipe.trainer
    resumed = None
    if settings.resume:
        resumed = resume_state(settings.resume, recipe.config)
    threads = set_threads(settings.threads)
    table = load_data(recipe.data)
    head = recipe.head(table.schema)  # an ordinal loss on unordered classes fails here
    spec = size_network(recipe, table)
    if resumed is not None:
        _check_resume(resumed, recipe, table)
    run_dir = claim_run_dir(run_dir, hydra_wrote=multirun)
    context = RunContext(None, {}, multirun, name, hydra, monitor=recipe.monitor)
    try:
        metrics, artifacts = _run(recipe, run_dir, table, head, spec, resumed, context)
    except FitInterrupted as stop:
        log.warning("%s; %s holds it: resume with trainer.resume=%s", stop, LAST, run_dir)
        raise SystemExit(128 + stop.signum) from None
    except Exception as err:
        if not (run_dir / METRICS).exists():
            _write_json(run_dir / METRICS, {"status": "failed", "error": str(err)})
        raise
    _write_json(
        run_dir / "run.json",
        {
            "wall_time_s": round(time.perf_counter() - started, 3),
            "device": str(resolve_device(settings.device)),
            "threads": threads,
            "members": len(metrics.get("members", [])) or 1,
            "torch": torch.__version__,
        },
    )
    return metrics, artifacts


def _run(
    recipe: Recipe,
    run_dir: Path,
    table: Table,
    head: Head,
    spec: NetworkSpec,
    resumed: Resume | None,
    context: RunContext,
) -> tuple[dict[str, Any], dict[str, Path]]:
    multirun, name = context.multirun, context.name
    settings = recipe.trainer
    device = resolve_device(settings.device)
    atomic_write_text(run_dir / "config.yaml", recipe.yaml)
    set_seed(settings.seed, settings.deterministic)
    sha = table_sha256(table)
    plan = plan_for(recipe, table)
    prepared = prepare(recipe, table, plan, device, head, spec)
    warn_absent_classes(prepared)
    meta = checkpoint_meta(prepared, spec, recipe.config, sha)

    detail = logging.DEBUG if multirun else logging.INFO  # a multirun job logs one line
    first = prepared.plan[0]
    log.log(
        detail,
        "data %s: %d rows, %d features -> %d inputs; %d fit(s), the first with %d train / "
        "%d val / %d test rows, on %s",
        table.source,
        len(table),
        len(table.schema.features),
        prepared.width,
        len(plan),
        len(first.train),
        len(first.val),
        len(first.test),
        device,
    )
    context = replace(context, run_dir=run_dir, meta=meta)
    try:
        fitted = fit(recipe, prepared, context, resumed)
    except DivergenceError as err:
        _write_json(run_dir / METRICS, keep_diverged(err, meta, run_dir))
        raise
    model = fitted.trainers[0].model
    summary = model_summary(model, prepared.width, device)
    (run_dir / "summary.txt").write_text(summary)
    per_fit = count_parameters(model) // model.members
    log.log(detail, "model (%d parameters per fit):\n%s", per_fit, summary.rstrip())

    evaluation = evaluate(recipe, prepared, fitted)
    metrics = metrics_of(recipe, prepared, fitted, evaluation)
    for record in metrics.get("members", []):
        if record["error"] is not None:
            log.warning("fit %d excluded: %s", metrics["members"].index(record), record["error"])
    best = keep_model(recipe, prepared, fitted, evaluation, meta, run_dir)
    _write_json(run_dir / METRICS, metrics)
    _report(metrics, multirun, name)

    files = ("config.yaml", METRICS, "metrics.csv", "summary.txt", LAST)
    artifacts = {file: run_dir / file for file in files}
    if best is not None:
        artifacts[BEST] = best
    if recipe.plots is True or (recipe.plots == "auto" and not multirun):
        from pricenet.run.plots import plot_run

        artifacts.update(plot_run(run_dir, metrics, recipe.ema_beta, table.schema.label))
        if evaluation["calibration"]:
            from pricenet.run.calibration import plot_reliability

            before, after, labels = evaluation["calibration"]["reliability"]
            artifacts["reliability.png"] = plot_reliability(
                before, after, labels, run_dir / "reliability.png"
            )
    return metrics, artifacts


def _report(metrics: dict[str, Any], multirun: bool, name: str) -> None:
    prefix = f"{name}: " if multirun else ""
    if "headline" in metrics:
        log.info("%s%s", prefix, metrics["headline"])
        return
    tested = (
        f"test_acc {metrics['test_acc']:.4f}  test_macro_f1 {metrics['test_macro_f1']:.4f}"
        if metrics["test"]
        else "no test split"
    )
    log.info(
        "%sbest epoch %d: val_acc %.4f  %s",
        prefix,
        metrics["best_epoch"],
        metrics["val_acc"],
        tested,
    )


def run_job(cfg: DictConfig) -> float:
    """The entry point's job: run in Hydra's output folder and return what a sweep ranks
    (:func:`job_value`).

    In a multirun a failing job is recorded as failed (``metrics.json`` with its error) and
    returns NaN, so the sweep goes on; in a single run the error propagates. A trial of an
    Optuna search reports every epoch (the members' mean); a pruned one is recorded as pruned
    and raises ``optuna.TrialPruned`` for the sweeper.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    name = hydra_cfg.job.override_dirname or "default"
    try:
        metrics, _ = run(cfg, run_dir, multirun, name, hydra_cfg)
    except Exception as err:
        if not multirun:
            raise
        pruned = getattr(err, "record", None)  # pricenet.engine.pruning's record of a pruned trial
        if pruned is not None:
            _write_json(run_dir / METRICS, pruned)
            log.info("job %s %s", hydra_cfg.job.num, pruned["error"])
            raise
        log.error("job %s failed: %s", hydra_cfg.job.num, err)
        if not (run_dir / METRICS).exists():  # refused before its folder was claimed
            _write_json(run_dir / METRICS, {"status": "failed", "error": str(err)})
        return math.nan
    return job_value(metrics)


def job_value(metrics: dict[str, Any]) -> float:
    """What a sweep ranks: the monitor, or with cross-validation the held-out folds' mean
    (``metrics.json`` names both: ``monitor``, and a ``cv`` block)."""
    monitor = metrics["monitor"]
    if "cv" in metrics:
        key = "test_acc" if monitor.endswith("acc") else "test_loss"
        value = metrics.get(key)
    else:
        value = metrics.get(monitor)
    return math.nan if value is None else float(value)
