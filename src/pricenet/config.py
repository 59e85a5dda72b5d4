"""Typed schemas for the config groups, registered in Hydra's ConfigStore, and value checks.

The schemas make a typo or a wrong type fail at the command line with the key's name; the
checks in :func:`validate` catch values of the right type that make no sense (lr <= 0 ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pricenet.errors import ConfigError
from pricenet.seed import DEVICES

MONITORS = ("val_acc", "val_loss")


@dataclass
class SyntheticDataConfig:
    source: Any = MISSING
    n_rows: int = 2000
    noise: float = 0.05
    seed: int = 0
    val_size: float = 0.15
    test_size: float = 0.15
    standardize: bool = True


@dataclass
class CsvDataConfig:
    source: Any = MISSING
    path: str = MISSING
    val_size: float = 0.15
    test_size: float = 0.15
    standardize: bool = True


@dataclass
class MLPConfig:
    _target_: str = "pricenet.model.MLP"
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    batch_norm: bool = False
    layer_activations: dict[str, Any] = field(default_factory=dict)
    layer_inits: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    epochs: int = 60
    batch_size: int = 64
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    patience: int | None = 20
    grad_clip: float | None = None
    l1: float = 0.0
    resume: str | None = None


@dataclass
class ReportConfig:
    progress: str = "auto"
    tensorboard: bool = True
    plots: bool = True
    ema_beta: float = 0.9


@dataclass
class PricenetConfig:
    """The primary config: the groups are typed by their own schemas above."""

    monitor: str = "val_acc"
    report: ReportConfig = field(default_factory=ReportConfig)
    data: Any = MISSING
    model: Any = MISSING
    activation: Any = MISSING
    init: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    scheduler: Any = MISSING
    trainer: Any = MISSING
    paths: Any = MISSING


PROGRESS = ("auto", "bar", "lines", "none")


def register_configs() -> None:
    """Put the schemas where the group YAMLs find them (``defaults: [<name>_schema]``)."""
    cs = ConfigStore.instance()
    cs.store(name="pricenet_schema", node=PricenetConfig)
    cs.store(group="data", name="synthetic_schema", node=SyntheticDataConfig)
    cs.store(group="data", name="csv_schema", node=CsvDataConfig)
    cs.store(group="model", name="mlp_schema", node=MLPConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)


register_configs()


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _positive(key: str, value: Any) -> None:
    if value is None or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
        _fail(key, value, "must be a number > 0")


def validate(cfg: DictConfig) -> None:
    """Check values before any training starts; raise :class:`ConfigError` naming the key."""
    trainer = cfg.trainer
    if trainer.epochs < 1:
        _fail("trainer.epochs", trainer.epochs, "must be an integer >= 1")
    if trainer.batch_size < 1:
        _fail("trainer.batch_size", trainer.batch_size, "must be an integer >= 1")
    if trainer.device.split(":", 1)[0] not in DEVICES:
        _fail("trainer.device", trainer.device, f"must be one of {', '.join(DEVICES)} (or cuda:N)")
    if trainer.patience is not None and trainer.patience < 1:
        _fail("trainer.patience", trainer.patience, "must be >= 1, or null to turn it off")
    if trainer.grad_clip is not None:
        _positive("trainer.grad_clip", trainer.grad_clip)
    if not trainer.l1 >= 0:
        _fail("trainer.l1", trainer.l1, "must be >= 0")
    if cfg.monitor not in MONITORS:
        _fail("monitor", cfg.monitor, f"must be one of {', '.join(MONITORS)}")

    if cfg.report.progress not in PROGRESS:
        _fail("report.progress", cfg.report.progress, f"must be one of {', '.join(PROGRESS)}")
    if not 0 <= cfg.report.ema_beta < 1:
        _fail("report.ema_beta", cfg.report.ema_beta, "must be in [0, 1)")

    model = cfg.model
    if not 0 <= model.dropout < 1:
        _fail("model.dropout", model.dropout, "must be in [0, 1)")
    for i, size in enumerate(model.hidden):
        if not isinstance(size, int) or size < 1:
            _fail(f"model.hidden[{i}]", size, "hidden sizes must be positive integers")

    data = cfg.data
    for key in ("val_size", "test_size"):
        value = data[key]
        if not 0 <= value < 1:
            _fail(f"data.{key}", value, "must be in [0, 1)")
    if data.val_size + data.test_size >= 1:
        _fail("data.val_size + data.test_size", data.val_size + data.test_size, "must be < 1")
    if "n_rows" in data and data.n_rows < 8:
        _fail("data.n_rows", data.n_rows, "must be >= 8")

    optim = cfg.optim
    if "lr" in optim:
        _positive("optim.lr", optim.lr)
    if optim.get("weight_decay", 0) < 0:
        _fail("optim.weight_decay", optim.weight_decay, "must be >= 0")

    scheduler = cfg.scheduler
    milestones = scheduler.get("milestones")
    if milestones is not None:
        values = list(milestones)
        ok = all(isinstance(m, int) and m > 0 for m in values) and all(
            a < b for a, b in zip(values, values[1:], strict=False)
        )
        if not values or not ok:
            _fail("scheduler.milestones", values, "must be strictly increasing positive epochs")
    for key in ("gamma", "step_size", "T_max"):
        if key in scheduler:
            _positive(f"scheduler.{key}", scheduler[key])


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (safe to store in a ``weights_only`` checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
