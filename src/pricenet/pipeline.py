"""One run: data -> head -> model -> optimizer/scheduler -> fit -> test -> artifacts."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pricenet.checkpoint import BEST, LAST, Checkpointer, atomic_write_text, resume_state
from pricenet.config import to_container, validate
from pricenet.data import FEATURES, Splits, load_table, make_splits
from pricenet.engine import Trainer
from pricenet.errors import CheckpointError, ConfigError, DivergenceError
from pricenet.logs import CsvLogger, close_reporters, reporters
from pricenet.metrics import classification_report
from pricenet.model import build_model, count_parameters
from pricenet.seed import resolve_device, set_seed, set_threads

log = logging.getLogger("pricenet")

METRICS = "metrics.json"


def model_summary(model: torch.nn.Module, device: torch.device) -> str:
    """The torchsummary table, computed on a copy so the real model's state is untouched."""
    from torchsummary import summary

    probe = copy.deepcopy(model)
    buffer = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(buffer):
        summary(probe, input_size=(len(FEATURES),), device=device.type)
    return buffer.getvalue()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=True) + "\n")


def _innermost(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def check_factories(cfg: DictConfig) -> None:
    """Build the optimizer and scheduler on a probe parameter, before any data is read.

    An argument torch rejects (betas, momentum, ``+optim.typo=1``) becomes a ConfigError.
    """
    probe = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = None
    for key in ("optim", "scheduler"):
        try:
            factory = instantiate(cfg[key], _convert_="all")
            optimizer = factory(probe) if key == "optim" else factory(optimizer)
        except Exception as err:
            cause = _innermost(err)
            detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            raise ConfigError(
                f"{key} ({cfg[key].get('_target_')}): {type(cause).__name__}: {detail}"
            ) from err


def build_trainer(cfg: DictConfig, splits: Splits) -> Trainer:
    """Head, criterion, model, optimizer and scheduler from ``cfg``, wired into a Trainer."""
    device = splits.x_train.device
    head = instantiate(cfg.loss.head)
    criterion = instantiate(cfg.loss.criterion).to(device)
    model = build_model(cfg, len(FEATURES)).to(device)
    optimizer = instantiate(cfg.optim, _convert_="all")(model.parameters())
    scheduler = instantiate(cfg.scheduler, _convert_="all")(optimizer)
    tcfg = cfg.trainer
    return Trainer(
        model,
        head,
        criterion,
        optimizer,
        scheduler,
        splits,
        epochs=tcfg.epochs,
        batch_size=tcfg.batch_size,
        patience=tcfg.patience,
        grad_clip=tcfg.grad_clip,
        l1=tcfg.l1,
        monitor=cfg.monitor,
        seed=tcfg.seed,
    )


def evaluate_best(trainer: Trainer, monitor: str) -> dict[str, Any]:
    """Load the best weights and score them on the test split; with the training curves."""
    state, splits = trainer.state, trainer.splits
    trainer.model.load_state_dict(trainer.best_model_state)
    test_loss, _, pred = trainer.evaluate(splits.x_test, splits.y_test)
    report = classification_report(
        splits.y_test.cpu().numpy(), pred.cpu().numpy(), trainer.head.num_classes
    )
    best = state.best_epoch - 1
    return {
        "status": "done",
        "monitor": monitor,
        "selection_split": trainer.val_split,
        "val_acc": state.history["val_acc"][best],
        "val_loss": state.history["val_loss"][best],
        "test_acc": report["accuracy"],
        "test_loss": test_loss,
        "test_macro_f1": report["macro_f1"],
        "test": report,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "parameters": count_parameters(trainer.model),
        "history": state.history,
    }


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    multirun: bool = False,
    name: str = "default",
    callbacks: list | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Train and test the model ``cfg`` describes; write its artifacts into ``run_dir``.

    ``multirun`` makes the console quiet (one summary line per job). ``name`` (the job's
    overrides) names the run in TensorBoard and in that summary line. ``callbacks`` are
    appended to the trainer's (e.g. Optuna pruning).

    Returns the metrics (also in ``metrics.json``) and the paths of the artifacts.
    """
    started = time.perf_counter()
    # Everything that can be checked is, before any data is read or anything trained.
    validate(cfg)
    tcfg = cfg.trainer
    device = resolve_device(tcfg.device)
    check_factories(cfg)
    resolved = to_container(cfg)
    resumed = resume_state(tcfg.resume, resolved) if tcfg.resume else None
    run_dir = Path(run_dir)
    earlier = [artifact for artifact in (METRICS, LAST, BEST) if (run_dir / artifact).exists()]
    if earlier:
        raise ConfigError(
            f"{run_dir}: already holds an earlier run ({', '.join(earlier)}); refusing to "
            "overwrite it (to continue that run: trainer.resume=<that folder>)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    threads = set_threads(tcfg.threads)
    set_seed(tcfg.seed, tcfg.deterministic)

    table = load_table(resolved["data"]["source"])
    splits = make_splits(
        table, cfg.data.val_size, cfg.data.test_size, cfg.data.standardize, tcfg.seed, device
    )
    trainer = build_trainer(cfg, splits)
    model, head = trainer.model, trainer.head
    summary = model_summary(model, device)
    (run_dir / "summary.txt").write_text(summary)
    detail = logging.DEBUG if multirun else logging.INFO  # a multirun job logs one line
    log.log(
        detail,
        "data %s: %d train / %d val / %d test rows on %s",
        table.source,
        len(splits.y_train),
        len(splits.y_val),
        len(splits.y_test),
        device,
    )
    log.log(detail, "model (%d parameters):\n%s", count_parameters(model), summary.rstrip())
    meta = {
        "scaler": splits.scaler.state_dict(),
        "head": resolved["loss"]["head"],
        "num_classes": head.num_classes,
        "features": list(FEATURES),
        "config": resolved,
    }
    progress = reporters(cfg.report, run_dir, multirun, name)
    trainer.callbacks = [
        CsvLogger(run_dir / "metrics.csv"),
        Checkpointer(run_dir, meta, tcfg.checkpoint_every),
        *progress,
        *(callbacks or []),
    ]
    if resumed is not None:
        try:
            trainer.load_state_dict(resumed)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"trainer.resume={tcfg.resume}: its state does not fit this model ({reason})"
            ) from err
        log.info("resumed from %s at epoch %d", tcfg.resume, trainer.state.epoch)

    try:
        trainer.fit()
    except DivergenceError as err:
        failed = {
            "status": "failed",
            "error": str(err),
            "epochs_run": trainer.state.epoch,
            "best_epoch": trainer.state.best_epoch,
            "history": trainer.state.history,
        }
        _write_json(run_dir / METRICS, failed)
        raise
    finally:
        close_reporters(progress)

    metrics = evaluate_best(trainer, cfg.monitor)
    _write_json(run_dir / METRICS, metrics)
    _write_json(
        run_dir / "run.json",
        {
            "wall_time_s": round(time.perf_counter() - started, 3),
            "device": str(device),
            "threads": threads,
            "torch": torch.__version__,
        },
    )
    log.info(
        "%sbest epoch %d: val_acc %.4f  test_acc %.4f  test_macro_f1 %.4f",
        f"{name}: " if multirun else "",
        metrics["best_epoch"],
        metrics["val_acc"],
        metrics["test_acc"],
        metrics["test_macro_f1"],
    )
    artifacts = {
        file: run_dir / file
        for file in ("config.yaml", METRICS, "metrics.csv", "summary.txt", BEST, LAST)
    }
    if cfg.report.plots is True or (cfg.report.plots == "auto" and not multirun):
        from pricenet.plots import plot_run

        artifacts.update(plot_run(run_dir, metrics, cfg.report.ema_beta))
    return metrics, artifacts


def run_job(cfg: DictConfig) -> float:
    """The entry point's job: run in Hydra's output folder and return the monitored metric.

    In a multirun a failing job is recorded as failed (``metrics.json`` with its error) and
    returns NaN, so the sweep goes on; in a single run the error propagates. A trial of an
    Optuna search reports every epoch; a pruned one is recorded as pruned and raises
    ``optuna.TrialPruned`` for the sweeper.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pricenet.pruning import optuna_pruning

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    pruning = optuna_pruning(hydra_cfg, cfg.monitor)
    name = hydra_cfg.job.override_dirname or "default"
    try:
        metrics, _ = run(cfg, run_dir, multirun, name, callbacks=[pruning] if pruning else None)
    except Exception as err:
        if not multirun:
            raise
        if pruning is not None and pruning.pruned is not None:
            _write_json(run_dir / METRICS, pruning.pruned)
            log.info("job %s %s", hydra_cfg.job.num, pruning.pruned["error"])
            raise
        log.error("job %s failed: %s", hydra_cfg.job.num, err)
        if not (run_dir / METRICS).exists():
            _write_json(
                run_dir / METRICS, {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            )
        return math.nan
    return float(metrics[cfg.monitor])
