"""One run: data -> head -> model -> optimizer/scheduler -> fit -> test -> artifacts."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pricenet.callbacks import Checkpointer
from pricenet.checkpoint import BEST, LAST, atomic_write_text, flatten_settings
from pricenet.checks import check_factories
from pricenet.config import to_container, validate
from pricenet.data import FEATURES, Splits, load_table, make_splits
from pricenet.engine import FitInterrupted, MemberData, Trainer
from pricenet.errors import CheckpointError, ConfigError, DivergenceError
from pricenet.logs import CsvLogger, close_reporters, reporters
from pricenet.metrics import classification_report
from pricenet.model import build_model, count_parameters
from pricenet.restore import Resume, resume_state
from pricenet.runs import claim_run_dir
from pricenet.seed import resolve_device, set_seed, set_threads
from pricenet.spec import NetworkSpec, network_spec

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


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: metrics.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(_strict(payload), indent=2, allow_nan=False) + "\n")


def table_sha256(table: Any) -> str:
    """A fingerprint of a table's values (not its file's bytes): resume refuses other data."""
    digest = hashlib.sha256(np.ascontiguousarray(table.features).tobytes())
    if table.labels is not None:
        digest.update(np.ascontiguousarray(table.labels).tobytes())
    return digest.hexdigest()


def build_trainer(cfg: DictConfig, splits: Splits) -> Trainer:
    """Head, criterion, model, optimizer and scheduler from ``cfg``, wired into a Trainer."""
    device = splits.x_train.device
    head = instantiate(cfg.loss.head)
    criterion = instantiate(cfg.loss.criterion).to(device)
    spec = network_spec(cfg, len(FEATURES), head.num_classes, members=1)
    generators = [torch.Generator().manual_seed(cfg.trainer.seed)]
    model = build_model(cfg, spec, generators).to(device)
    optimizer = instantiate(cfg.optim, _convert_="all")(model.parameters())
    scheduler = instantiate(cfg.scheduler, _convert_="all")(optimizer)
    tcfg = cfg.trainer
    return Trainer(
        model,
        head,
        criterion,
        optimizer,
        scheduler,
        [MemberData(splits.x_train, splits.y_train, splits.x_val, splits.y_val)],
        epochs=tcfg.epochs,
        batch_size=tcfg.batch_size,
        patience=tcfg.patience,
        grad_clip=tcfg.grad_clip,
        l1=tcfg.l1,
        monitor=cfg.monitor,
        generators=generators,
    )


def evaluate_best(trainer: Trainer, splits: Splits, monitor: str) -> dict[str, Any]:
    """Load the best weights and score them on the test split; with the training curves.

    With no test split (``data.test_size=0``) the test figures are null, never 0.
    """
    state = trainer.state.members[0]
    trainer.use_best_weights()
    report, test_loss = None, None
    if len(splits.y_test):
        [(test_loss, _, pred)] = trainer.evaluate([splits.x_test], [splits.y_test])
        report = classification_report(
            splits.y_test.cpu().numpy(), pred.cpu().numpy(), trainer.head.num_classes
        )
    best = state.best_epoch - 1
    return {
        "status": "done",
        "monitor": monitor,
        "selection_split": "val" if len(splits.y_val) else "train",
        "val_acc": state.history["val_acc"][best],
        "val_loss": state.history["val_loss"][best],
        "test_acc": report["accuracy"] if report else None,
        "test_loss": test_loss,
        "test_macro_f1": report["macro_f1"] if report else None,
        "test": report,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "parameters": count_parameters(trainer.model),
        "history": state.history,
    }


def check_config(cfg: DictConfig) -> NetworkSpec:
    """Every check that needs no data: values, device, factories, and what a checkpoint of
    this network would hold. Run before any folder is made or any data is read."""
    validate(cfg)
    resolve_device(cfg.trainer.device)
    check_factories(cfg)
    return network_spec(cfg, len(FEATURES), int(cfg.loss.head.num_classes))


def _check_resume(resumed: Resume, epochs: int, where: str) -> None:
    """A resume that would train nothing is a mistake, not a silent success."""
    fit = resumed.state.get("fit", {})
    done = fit.get("epoch", 0)
    if fit.get("stopped_early"):
        raise ConfigError(f"trainer.resume={where}: that run stopped early at epoch {done}")
    if done >= epochs:
        raise ConfigError(
            f"trainer.resume={where}: that run already trained {done} epochs and "
            f"trainer.epochs={epochs}; raise trainer.epochs to train longer"
        )


def run(
    cfg: DictConfig, run_dir: str | Path, multirun: bool = False, name: str = "default"
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Train and test the model ``cfg`` describes; write its artifacts into ``run_dir``.

    ``multirun`` makes the console quiet (one summary line per job). ``name`` (the job's
    overrides) names the run in TensorBoard and in that summary line.

    Everything that can be checked is, before the run folder is claimed; a run that fails
    after that leaves ``metrics.json`` with ``"status": "failed"`` and its error.

    Returns the metrics (also in ``metrics.json``) and the paths of the artifacts.
    """
    started = time.perf_counter()
    network = check_config(cfg)
    tcfg = cfg.trainer
    resolved = to_container(cfg)
    resumed = None
    if tcfg.resume:
        resumed = resume_state(tcfg.resume, resolved)
        _check_resume(resumed, tcfg.epochs, tcfg.resume)
    run_dir = claim_run_dir(run_dir, hydra_wrote=multirun)
    try:
        return _train(cfg, run_dir, network, resolved, resumed, multirun, name, started)
    except Exception as err:
        if not (run_dir / METRICS).exists():
            _write_json(run_dir / METRICS, {"status": "failed", "error": str(err)})
        raise


def _train(
    cfg: DictConfig,
    run_dir: Path,
    network: NetworkSpec,
    resolved: dict[str, Any],
    resumed: Resume | None,
    multirun: bool,
    name: str,
    started: float,
) -> tuple[dict[str, Any], dict[str, Path]]:
    tcfg = cfg.trainer
    device = resolve_device(tcfg.device)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    threads = set_threads(tcfg.threads)
    set_seed(tcfg.seed, tcfg.deterministic)

    table = load_table(resolved["data"]["source"])
    data_sha256 = table_sha256(table)
    if resumed is not None and resumed.data_sha256 not in (None, data_sha256):
        raise CheckpointError(
            f"trainer.resume={tcfg.resume}: that run was trained on other data than "
            f"{table.source} (its content changed); resume on the same data, or start a new run"
        )
    splits = make_splits(
        table, cfg.data.val_size, cfg.data.test_size, cfg.data.standardize, tcfg.seed, device
    )
    absent = sorted(set(range(network.num_classes)) - set(splits.y_train.unique().tolist()))
    if absent:
        log.warning(
            "%s: the training rows have no example of class(es) %s: the model cannot learn them",
            table.source,
            ", ".join(map(str, absent)),
        )
    trainer = build_trainer(cfg, splits)
    model = trainer.model
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
        "network": network.to_dict(),
        "scaler": splits.scaler.state_dict(),
        "features": list(FEATURES),
        "settings": flatten_settings(resolved),
        "data_sha256": data_sha256,
    }
    progress = reporters(cfg.report, run_dir, multirun, name)
    trainer.callbacks = [
        CsvLogger(run_dir / "metrics.csv"),
        Checkpointer(run_dir, meta, tcfg.checkpoint_interval_s),
        *progress,
    ]
    if resumed is not None:
        try:
            trainer.load_state_dict(resumed.state)
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
            "error": f"{type(err).__name__}: {err}",
            "epochs_run": trainer.state.epoch,
            "best_epoch": trainer.state.best_epoch,
            "history": trainer.state.history,
        }
        _write_json(run_dir / METRICS, failed)
        raise
    except FitInterrupted as stop:
        log.warning("%s; %s holds it: resume with trainer.resume=%s", stop, LAST, run_dir)
        raise SystemExit(128 + stop.signum) from None
    finally:
        close_reporters(progress)

    metrics = evaluate_best(trainer, splits, cfg.monitor)
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
    tested = (
        f"test_acc {metrics['test_acc']:.4f}  test_macro_f1 {metrics['test_macro_f1']:.4f}"
        if metrics["test"]
        else "no test split"
    )
    log.info(
        "%sbest epoch %d: val_acc %.4f  %s",
        f"{name}: " if multirun else "",
        metrics["best_epoch"],
        metrics["val_acc"],
        tested,
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
    returns NaN, so the sweep goes on; in a single run the error propagates.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        metrics, _ = run(cfg, run_dir, multirun, hydra_cfg.job.override_dirname or "default")
    except Exception as err:
        if not multirun:
            raise
        log.error("job %s failed: %s", hydra_cfg.job.num, err)
        if not (run_dir / METRICS).exists():  # refused before its folder was claimed
            _write_json(run_dir / METRICS, {"status": "failed", "error": str(err)})
        return math.nan
    return float(metrics[cfg.monitor])
