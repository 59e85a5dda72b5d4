"""Typed schemas for the config groups, registered in Hydra's ConfigStore, and value checks.

The schemas make a typo or a wrong type fail at the command line with the key's name; the
checks in :func:`validate` catch values of the right type that make no sense (lr <= 0 ...).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from pricenet.errors import ConfigError
from pricenet.seed import check_device_name

MONITORS = ("val_acc", "val_loss")
MISSING_POLICIES = ("error", "impute")
RANGE_POLICIES = ("error", "warn", "ignore")
DUPLICATE_POLICIES = ("group", "keep", "drop", "error")


@dataclass
class SyntheticDataConfig:
    source: Any = MISSING
    n_rows: int = 2000
    noise: float = 0.05
    seed: int = 0
    group: str | None = None  # the generator has no group column
    duplicates: str = "group"  # group | keep | drop | error
    val_size: float = 0.15
    test_size: float = 0.15
    standardize: bool = True


@dataclass
class CsvDataConfig:
    source: Any = MISSING
    path: str = MISSING
    schema: Any = None  # a schema mapping (data/schema=...), a YAML file's path, or null: infer
    label: str | None = "price_range"  # the label column (for inference; a schema names its own)
    id: str | None = None  # an id column kept for predictions (inferred when named id/*_id)
    missing: str = "error"  # error | impute
    ranges: str = "error"  # error | warn | ignore
    max_bytes: int = 2 * 1024**3
    group: str | None = None  # a column whose rows stay on one side of every split
    duplicates: str = "group"  # group | keep | drop | error
    val_size: float = 0.15
    test_size: float = 0.15
    standardize: bool = True


@dataclass
class MLPConfig:
    hidden: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.0
    batch_norm: bool = False
    layer_activations: dict[str, Any] = field(default_factory=dict)
    layer_inits: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    epochs: int = 40
    batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    patience: int | None = 10
    grad_clip: float | None = None
    l1: float = 0.0
    resume: str | None = None
    threads: int | None = 1
    checkpoint_interval_s: float = 30.0
    seeds: int = 1
    calibrate: bool = True
    # the network budget, checked from its sizes before anything is built (pricenet.spec)
    max_parameters: int = 50_000_000
    max_activation_bytes: int = 2**30  # one batch of batch_size rows through every member


@dataclass
class CvConfig:
    folds: int | None = None  # null: one train/val/test split (cv=none)
    repeats: int = 1
    keep: str = "ensemble"  # ensemble | refit | none: the model best.pt holds


@dataclass
class ReportConfig:
    progress: str = "auto"
    tensorboard: bool = True
    plots: Any = "auto"  # auto | true | false
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
    cv: Any = MISSING
    paths: Any = MISSING
    callbacks: Any = None  # name -> callback factory (conf/callbacks); null nodes dropped


PROGRESS = ("auto", "bar", "lines", "none")


SCHEMAS: dict[str, type] = {
    "pricenet_schema": PricenetConfig,
    "synthetic_schema": SyntheticDataConfig,
    "csv_schema": CsvDataConfig,
    "mlp_schema": MLPConfig,
    "trainer_schema": TrainerConfig,
    "cv_schema": CvConfig,
}


def register_configs() -> None:
    """Put the schemas where the YAMLs find them: ``defaults: [/<name>_schema@_here_]``.

    They are stored outside every config group, so ``--help`` does not list them as choices
    of a group (``data=csv_schema`` is not a data source); each group YAML types itself by
    naming its schema with an absolute path, merged into its own package (``@_here_``).
    """
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)


register_configs()


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive(key: str, value: Any) -> None:
    if not _is_number(value) or not value > 0 or math.isinf(value):
        _fail(key, value, "must be a number > 0")


def _check_known_keys(node: DictConfig, prefix: str = "") -> None:
    """Keys added with ``+key=...`` to a typed node are not silently ignored."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in known:
                _fail(f"{prefix}{key}", node[key], f"unknown key; allowed: {', '.join(known)}")
    for key in node:
        child = None if OmegaConf.is_missing(node, key) else node[key]
        if isinstance(child, DictConfig):
            _check_known_keys(child, f"{prefix}{key}.")


SEED_LIMIT = 2**63


def _check_seed(key: str, value: Any) -> None:
    """Seeds go to torch.manual_seed (a signed 64-bit integer) and numpy: 0 <= seed < 2**63."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEED_LIMIT:
        _fail(key, value, "must be an integer with 0 <= seed < 2**63")


def model_has_batch_norm(cfg: DictConfig) -> bool:
    """True when the model config asks for BatchNorm layers (and has a hidden layer to put them)."""
    model = cfg.model
    return bool(model.get("batch_norm", False)) and len(model.get("hidden", [])) > 0


def _check_layer_keys(model: DictConfig) -> None:
    """A per-layer key names a layer that exists (else it would be silently ignored): a hidden
    layer for activations; any linear layer, the output layer last, for inits."""
    hidden = len(model.get("hidden", []))
    groups = (
        ("layer_activations", hidden, f"{hidden} hidden layer(s)"),
        ("layer_inits", hidden + 1, f"{hidden + 1} linear layer(s), the last the output layer"),
    )
    for group, layers, what in groups:
        for key in model.get(group) or {}:
            if not str(key).isdigit() or int(key) >= layers:
                span = f": indices 0..{layers - 1}" if layers else ""
                raise ConfigError(f"model.{group}.{key}: no such layer; the model has {what}{span}")


def validate(cfg: DictConfig) -> None:
    """Check values before any training starts; raise :class:`ConfigError` naming the key."""
    _check_known_keys(cfg)
    trainer = cfg.trainer
    if trainer.epochs < 1:
        _fail("trainer.epochs", trainer.epochs, "must be an integer >= 1")
    if trainer.batch_size < 1:
        _fail("trainer.batch_size", trainer.batch_size, "must be an integer >= 1")
    check_device_name(trainer.device)
    _check_seed("trainer.seed", trainer.seed)
    if model_has_batch_norm(cfg) and trainer.batch_size < 2:
        raise ConfigError(
            f"model.batch_norm=true needs trainer.batch_size >= 2 (got {trainer.batch_size}): "
            "BatchNorm cannot normalize a batch of one row; set model.batch_norm=false or a "
            "larger trainer.batch_size"
        )
    if trainer.patience is not None and trainer.patience < 1:
        _fail("trainer.patience", trainer.patience, "must be >= 1, or null to turn it off")
    if trainer.grad_clip is not None:
        _positive("trainer.grad_clip", trainer.grad_clip)
    if not trainer.l1 >= 0:
        _fail("trainer.l1", trainer.l1, "must be >= 0")
    if not trainer.checkpoint_interval_s >= 0:
        _fail(
            "trainer.checkpoint_interval_s", trainer.checkpoint_interval_s, "must be seconds >= 0"
        )
    for key in ("max_parameters", "max_activation_bytes"):
        if not _is_count(trainer.get(key, 1)):
            _fail(f"trainer.{key}", trainer[key], "must be an integer >= 1")
    if trainer.threads is not None and trainer.threads < 1:
        _fail("trainer.threads", trainer.threads, "must be >= 1, or null for torch's default")
    if cfg.monitor not in MONITORS:
        _fail("monitor", cfg.monitor, f"must be one of {', '.join(MONITORS)}")

    if cfg.report.progress not in PROGRESS:
        _fail("report.progress", cfg.report.progress, f"must be one of {', '.join(PROGRESS)}")
    if cfg.report.plots not in ("auto", True, False):
        _fail("report.plots", cfg.report.plots, "must be auto, true or false")
    if not 0 <= cfg.report.ema_beta < 1:
        _fail("report.ema_beta", cfg.report.ema_beta, "must be in [0, 1)")

    model = cfg.model
    if not 0 <= model.dropout < 1:
        _fail("model.dropout", model.dropout, "must be in [0, 1)")
    for i, size in enumerate(model.hidden):
        if not _is_count(size):
            _fail(f"model.hidden[{i}]", size, "hidden sizes must be positive integers")
    _check_layer_keys(model)

    data = cfg.data
    for key in ("val_size", "test_size"):
        value = data[key]
        if not 0 <= value < 1:
            _fail(f"data.{key}", value, "must be in [0, 1)")
    if data.val_size + data.test_size >= 1:
        _fail("data.val_size + data.test_size", data.val_size + data.test_size, "must be < 1")
    if "n_rows" in data and data.n_rows < 8:
        _fail("data.n_rows", data.n_rows, "must be >= 8")
    if "seed" in data:
        _check_seed("data.seed", data.seed)
    if "noise" in data and not (_is_finite_number(data.noise) and data.noise >= 0):
        _fail("data.noise", data.noise, "must be a finite number >= 0")
    if data.get("missing", "error") not in MISSING_POLICIES:
        _fail("data.missing", data.missing, f"must be one of {', '.join(MISSING_POLICIES)}")
    if data.get("ranges", "error") not in RANGE_POLICIES:
        _fail("data.ranges", data.ranges, f"must be one of {', '.join(RANGE_POLICIES)}")
    if data.get("duplicates", "group") not in DUPLICATE_POLICIES:
        _fail("data.duplicates", data.duplicates, f"must be one of {', '.join(DUPLICATE_POLICIES)}")
    if "max_bytes" in data and data.max_bytes < 1:
        _fail("data.max_bytes", data.max_bytes, "must be a size in bytes >= 1")

    optim = cfg.optim
    if "lr" in optim:
        _positive("optim.lr", optim.lr)
    weight_decay = optim.get("weight_decay", 0)
    if not _is_finite_number(weight_decay) or not weight_decay >= 0:
        _fail("optim.weight_decay", weight_decay, "must be a finite number >= 0")

    scheduler = cfg.scheduler
    milestones = scheduler.get("milestones")
    if milestones is not None:
        values = list(milestones) if isinstance(milestones, ListConfig) else []
        increasing = all(a < b for a, b in zip(values, values[1:], strict=False))
        if not values or not all(_is_count(m) for m in values) or not increasing:
            _fail(
                "scheduler.milestones",
                values or milestones,
                "must be a list of strictly increasing positive epochs, e.g. [30, 60]",
            )
    for key in ("gamma", "step_size", "T_max"):
        if key in scheduler:
            _positive(f"scheduler.{key}", scheduler[key])


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (safe to store in a ``weights_only`` checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
