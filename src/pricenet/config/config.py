"""Typed schemas for the config groups, registered in Hydra's ConfigStore, and value checks.

The schemas make a typo or a wrong type fail at the command line with the key's name; the
checks in :func:`validate` catch values of the right type that make no sense (lr <= 0 ...),
and :func:`check_config` adds every other check that needs no data. Both gather what they
find, so one error lists every problem, not only the first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from pricenet.config.seed import check_device_name
from pricenet.errors import Problems

MONITORS = ("val_acc", "val_loss")
CV_KEEP = ("ensemble", "refit", "none")


@dataclass
class CategoryEmbeddingConfig:
    above: int | None = 16  # more categories than this: a learned embedding; null: one-hot
    d_embedding: int = 8  # values per category


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
    scaler: str = "standard"  # standard | quantile | robust | none (standardize=false: none)
    category_embedding: CategoryEmbeddingConfig = field(default_factory=CategoryEmbeddingConfig)


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
    max_categories: int = 50  # inference: text with at most this many values is categorical
    group: str | None = None  # a column whose rows stay on one side of every split
    duplicates: str = "group"  # group | keep | drop | error
    val_size: float = 0.15
    test_size: float = 0.15
    standardize: bool = True
    scaler: str = "standard"  # standard | quantile | robust | none (standardize=false: none)
    category_embedding: CategoryEmbeddingConfig = field(default_factory=CategoryEmbeddingConfig)


@dataclass
class MLPConfig:
    hidden: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.0
    batch_norm: bool = False
    layer_activations: dict[str, Any] = field(default_factory=dict)
    layer_inits: dict[str, Any] = field(default_factory=dict)


@dataclass
class TabMConfig:
    arch: str = "tabm"  # tabm | mini | packed
    k: int = 8  # submodels per fit
    width: int = 256
    blocks: int = 3
    dropout: float = 0.1


@dataclass
class NoEmbeddingConfig:
    kind: str = "none"


@dataclass
class PiecewiseLinearConfig:
    kind: str = "piecewise_linear"
    n_bins: int = 48  # bins per numeric feature, fitted on each fit's training rows
    bins: str = "quantile"  # quantile | tree (a decision tree on the labels)
    d_embedding: int = 16
    activation: bool = False
    version: str = "B"  # A | B (B adds a linear term, as the package's default)


@dataclass
class PeriodicConfig:
    kind: str = "periodic"
    n_frequencies: int = 48
    frequency_init_scale: float = 0.01
    d_embedding: int = 24
    lite: bool = False  # one linear layer shared by the features
    activation: bool = True


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
    # the network budget, checked from its sizes before anything is built (pricenet.nn.spec)
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
    embedding: Any = None  # numeric feature embeddings (conf/embedding); null: none
    callbacks: Any = None  # name -> callback factory (conf/callbacks); null nodes dropped


PROGRESS = ("auto", "bar", "lines", "none")


SCHEMAS: dict[str, type] = {
    "pricenet_schema": PricenetConfig,
    "synthetic_schema": SyntheticDataConfig,
    "csv_schema": CsvDataConfig,
    "mlp_schema": MLPConfig,
    "tabm_schema": TabMConfig,
    "no_embedding_schema": NoEmbeddingConfig,
    "piecewise_linear_schema": PiecewiseLinearConfig,
    "periodic_schema": PeriodicConfig,
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive(problems: Problems, key: str, value: Any) -> None:
    if not _is_number(value) or not value > 0 or math.isinf(value):
        problems.invalid(key, value, "must be a number > 0")


def _check_known_keys(problems: Problems, node: DictConfig, prefix: str = "") -> None:
    """Keys added with ``+key=...`` to a typed node are not silently ignored."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in known:
                problems.invalid(
                    f"{prefix}{key}", node[key], f"unknown key; allowed: {', '.join(known)}"
                )
    for key in node:
        child = None if OmegaConf.is_missing(node, key) else node[key]
        if isinstance(child, DictConfig):
            _check_known_keys(problems, child, f"{prefix}{key}.")


SEED_LIMIT = 2**63


def _check_seed(problems: Problems, key: str, value: Any) -> None:
    """Seeds go to torch.manual_seed (a signed 64-bit integer) and numpy: 0 <= seed < 2**63."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEED_LIMIT:
        problems.invalid(key, value, "must be an integer with 0 <= seed < 2**63")


def model_has_batch_norm(cfg: DictConfig) -> bool:
    """True when the model config asks for BatchNorm layers (and has a hidden layer to put them)."""
    model = cfg.model
    return bool(model.get("batch_norm", False)) and len(model.get("hidden", [])) > 0


def _check_layer_keys(problems: Problems, model: DictConfig) -> None:
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
                problems.add(
                    f"model.{group}.{key}: no such layer; the model has {what}{span}",
                    f"model.{group}.{key}",
                )


def _check_trainer(problems: Problems, cfg: DictConfig) -> None:
    trainer = cfg.trainer
    if trainer.epochs < 1:
        problems.invalid("trainer.epochs", trainer.epochs, "must be an integer >= 1")
    if trainer.batch_size < 1:
        problems.invalid("trainer.batch_size", trainer.batch_size, "must be an integer >= 1")
    problems.run(check_device_name, trainer.device)
    _check_seed(problems, "trainer.seed", trainer.seed)
    if model_has_batch_norm(cfg) and trainer.batch_size == 1:
        problems.add(
            f"model.batch_norm=true needs trainer.batch_size >= 2 (got {trainer.batch_size}): "
            "BatchNorm cannot normalize a batch of one row; set model.batch_norm=false or a "
            "larger trainer.batch_size"
        )
    if trainer.patience is not None and trainer.patience < 1:
        problems.invalid(
            "trainer.patience", trainer.patience, "must be >= 1, or null to turn it off"
        )
    if trainer.grad_clip is not None:
        _positive(problems, "trainer.grad_clip", trainer.grad_clip)
    if not trainer.l1 >= 0:
        problems.invalid("trainer.l1", trainer.l1, "must be >= 0")
    if not trainer.checkpoint_interval_s >= 0:
        problems.invalid(
            "trainer.checkpoint_interval_s", trainer.checkpoint_interval_s, "must be seconds >= 0"
        )
    for key in ("max_parameters", "max_activation_bytes"):
        if not _is_count(trainer.get(key, 1)):
            problems.invalid(f"trainer.{key}", trainer[key], "must be an integer >= 1")
    if trainer.threads is not None and trainer.threads < 1:
        problems.invalid(
            "trainer.threads", trainer.threads, "must be >= 1, or null for torch's default"
        )


def _check_report(problems: Problems, cfg: DictConfig) -> None:
    if cfg.monitor not in MONITORS:
        problems.invalid("monitor", cfg.monitor, f"must be one of {', '.join(MONITORS)}")
    report = cfg.report
    if report.progress not in PROGRESS:
        problems.invalid(
            "report.progress", report.progress, f"must be one of {', '.join(PROGRESS)}"
        )
    if report.plots not in ("auto", True, False):
        problems.invalid("report.plots", report.plots, "must be auto, true or false")
    if not 0 <= report.ema_beta < 1:
        problems.invalid("report.ema_beta", report.ema_beta, "must be in [0, 1)")


TABM_ARCHS = ("tabm", "mini", "packed")


def _check_model(problems: Problems, cfg: DictConfig) -> None:
    model = cfg.model
    if not 0 <= model.dropout < 1:
        problems.invalid("model.dropout", model.dropout, "must be in [0, 1)")
    if "arch" in model:  # TabM
        if model.arch not in TABM_ARCHS:
            problems.invalid("model.arch", model.arch, f"must be one of {', '.join(TABM_ARCHS)}")
        for key in ("k", "width", "blocks"):
            if not _is_count(model[key]):
                problems.invalid(f"model.{key}", model[key], "must be an integer >= 1")
        return
    for i, size in enumerate(model.hidden):
        if not _is_count(size):
            problems.invalid(f"model.hidden[{i}]", size, "hidden sizes must be positive integers")
    _check_layer_keys(problems, model)


def _check_data(problems: Problems, cfg: DictConfig) -> None:
    # The policies are defined once, where the tables apply them (imported here, not at the
    # top, so that importing the schemas stays light).
    from pricenet.tables.duplicates import POLICIES as DUPLICATE_POLICIES
    from pricenet.tables.prep import resolve_scaler
    from pricenet.tables.validate import check_policies

    data = cfg.data
    sizes_valid = True
    for key in ("val_size", "test_size"):
        value = data[key]
        if not 0 <= value < 1:
            problems.invalid(f"data.{key}", value, "must be in [0, 1)")
            sizes_valid = False
    if sizes_valid and data.val_size + data.test_size >= 1:
        problems.invalid(
            "data.val_size + data.test_size", data.val_size + data.test_size, "must be < 1"
        )
    if "n_rows" in data and data.n_rows < 8:
        problems.invalid("data.n_rows", data.n_rows, "must be >= 8")
    if "seed" in data:
        _check_seed(problems, "data.seed", data.seed)
    if "noise" in data and not (_is_finite_number(data.noise) and data.noise >= 0):
        problems.invalid("data.noise", data.noise, "must be a finite number >= 0")
    problems.run(check_policies, data.get("missing", "error"), data.get("ranges", "error"))
    problems.run(resolve_scaler, data.get("scaler", "standard"), data.get("standardize", True))
    if data.get("duplicates", "group") not in DUPLICATE_POLICIES:
        problems.invalid(
            "data.duplicates", data.duplicates, f"must be one of {', '.join(DUPLICATE_POLICIES)}"
        )
    if "max_bytes" in data and data.max_bytes < 1:
        problems.invalid("data.max_bytes", data.max_bytes, "must be a size in bytes >= 1")
    if "max_categories" in data and not _is_count(data.max_categories):
        problems.invalid("data.max_categories", data.max_categories, "must be an integer >= 1")
    categories = data.get("category_embedding") or {}
    above = categories.get("above")
    if above is not None and not (_is_count(above) or above == 0):
        problems.invalid(
            "data.category_embedding.above", above, "must be an integer >= 0, or null (one-hot)"
        )
    d = categories.get("d_embedding", 8)
    if not (_is_count(d) and d <= 1024):
        problems.invalid("data.category_embedding.d_embedding", d, "must be an integer in 1..1024")


def _check_optim(problems: Problems, cfg: DictConfig) -> None:
    optim = cfg.optim
    if "lr" in optim:
        _positive(problems, "optim.lr", optim.lr)
    weight_decay = optim.get("weight_decay", 0)
    if not _is_finite_number(weight_decay) or not weight_decay >= 0:
        problems.invalid("optim.weight_decay", weight_decay, "must be a finite number >= 0")
    scheduler = cfg.scheduler
    milestones = scheduler.get("milestones")
    if milestones is not None:
        values = list(milestones) if isinstance(milestones, ListConfig) else []
        increasing = all(a < b for a, b in zip(values, values[1:], strict=False))
        if not values or not all(_is_count(m) for m in values) or not increasing:
            problems.invalid(
                "scheduler.milestones",
                values or milestones,
                "must be a list of strictly increasing positive epochs, e.g. [30, 60]",
            )
    for key in ("gamma", "step_size", "T_max"):
        if key in scheduler:
            _positive(problems, f"scheduler.{key}", scheduler[key])


def _check_embedding(problems: Problems, cfg: DictConfig) -> None:
    node = cfg.get("embedding")
    if node is None or node.get("kind") == "none":
        return
    for key in ("n_bins", "d_embedding", "n_frequencies"):
        if key in node and not (_is_count(node[key]) and node[key] <= 1024):
            problems.invalid(f"embedding.{key}", node[key], "must be an integer in 1..1024")
    if "n_bins" in node and node.n_bins == 1:
        problems.invalid("embedding.n_bins", node.n_bins, "must be an integer in 2..1024")
    if node.get("bins", "quantile") not in ("quantile", "tree"):
        problems.invalid("embedding.bins", node.bins, "must be quantile or tree")
    if node.get("version", "A") not in ("A", "B"):
        problems.invalid("embedding.version", node.version, "must be A or B")
    if "frequency_init_scale" in node:
        _positive(problems, "embedding.frequency_init_scale", node.frequency_init_scale)
    if node.get("lite") and not node.get("activation"):
        problems.add("embedding.lite=true needs embedding.activation=true", "embedding.lite")


def _check_loss(problems: Problems, cfg: DictConfig) -> None:
    loss = cfg.loss
    smoothing = loss.get("label_smoothing", 0.0)
    if not _is_finite_number(smoothing) or not 0 <= smoothing < 1:
        problems.invalid("loss.label_smoothing", smoothing, "must be a number in [0, 1)")
    elif smoothing and "label_smoothing" not in loss.criterion:
        problems.add(
            f"loss.label_smoothing={smoothing}: only loss=cross_entropy smooths its targets "
            "(this loss's criterion takes no label_smoothing); set loss.label_smoothing=0",
            "loss.label_smoothing",
        )
    weights = loss.get("class_weight")
    if weights is None or weights == "balanced":
        return
    values = list(weights) if isinstance(weights, ListConfig) else None
    if not values or not all(_is_finite_number(w) and w > 0 for w in values):
        problems.invalid(
            "loss.class_weight", weights, "must be null, balanced, or a list of numbers > 0"
        )


def _check_plan(problems: Problems, cv: Mapping, seeds: Any) -> None:
    """The plan's settings: how many folds, repeats and seeds, and which model is kept."""
    folds, repeats, keep = cv.get("folds"), cv.get("repeats", 1), cv.get("keep", "ensemble")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        problems.invalid("cv.folds", folds, "must be an integer >= 2 (or cv=none)")
    if not _is_count(repeats):
        problems.invalid("cv.repeats", repeats, "must be an integer >= 1")
    if keep not in CV_KEEP:
        problems.invalid("cv.keep", keep, "must be ensemble, refit or none")
    if not _is_count(seeds):
        problems.invalid("trainer.seeds", seeds, "must be an integer >= 1")


def check_plan(cv: Mapping, seeds: Any) -> None:
    """Raise one :class:`ConfigError` for the plan's settings (``cv.*``, ``trainer.seeds``):
    a run's stored config is checked so again before its plan is replayed."""
    problems = Problems()
    _check_plan(problems, cv, seeds)
    problems.raise_if_any()


def member_count(cfg: DictConfig) -> int:
    """How many fits the config asks for (folds x repeats x seeds)."""
    folds = cfg.cv.folds or 1
    return folds * (cfg.cv.repeats if cfg.cv.folds else 1) * cfg.trainer.seeds


def _value_problems(cfg: DictConfig) -> Problems:
    """Every value check that needs neither torch nor data (the config's own values)."""
    problems = Problems()
    _check_known_keys(problems, cfg)
    checks = (_check_trainer, _check_report, _check_model, _check_data, _check_optim)
    for check in (*checks, _check_loss, _check_embedding):
        check(problems, cfg)
    _check_plan(problems, cfg.cv, cfg.trainer.seeds)
    return problems


def validate(cfg: DictConfig) -> None:
    """Check the config's values; raise one :class:`ConfigError` listing every problem."""
    _value_problems(cfg).raise_if_any()


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data, run before any folder is made or data is read; one
    :class:`ConfigError` lists every problem found.

    The values (:func:`validate`), the device, every ``_target_`` node, its optimizer and
    scheduler built on a probe (:mod:`pricenet.config.checks`), and, once all those pass, whether a
    checkpoint could describe the network (:func:`pricenet.nn.spec.network_spec`, with one
    input; the real width is checked when the data is read).
    """
    from pricenet.config.checks import check_factories
    from pricenet.config.seed import resolve_device
    from pricenet.nn.spec import network_spec

    problems = _value_problems(cfg)
    if not problems:
        problems.run(resolve_device, cfg.trainer.device)
    # A group whose values are wrong is not built too: torch would name the same value again.
    check_factories(cfg, problems, skip=problems.groups())
    if not problems:
        problems.run(
            network_spec, cfg, in_features=1, num_classes=2, members=member_count(cfg), numeric=1
        )
    problems.raise_if_any()


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (safe to store in a ``weights_only`` checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
