"""The recipe: the composed config, checked and read once.

:meth:`Recipe.of` runs the one config check (:func:`~pricenet.config.config.check_config`,
which reports every problem it finds) and turns the config into typed settings and built
factories, as torchtune's recipes do in ``setup``. The rest of a run takes the recipe and
reads its fields; nothing below it sees ``cfg``. What depends on the table (the head's class
count, the network's input width) is built once per run from the recipe:
:meth:`Recipe.head` and :meth:`Recipe.network`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from pricenet.config.config import check_config, to_container
from pricenet.config.monitor import Monitor
from pricenet.engine.memberwise import packable
from pricenet.errors import ConfigError
from pricenet.nn.heads import Head
from pricenet.nn.spec import CategorySpec, NetworkSpec, network_spec
from pricenet.tables import Schema

if TYPE_CHECKING:
    from pricenet.tables.prep import Preprocessor

log = logging.getLogger("pricenet")

HOOKS = ("on_fit_start", "on_epoch_end", "on_fit_end")


@dataclass(frozen=True)
class DataSettings:
    """``data``: where the table comes from and how its rows are split and preprocessed."""

    source: dict[str, Any]  # the source's resolved ``_target_`` node
    group: str | None = None
    duplicates: str = "keep"  # a config written before the key existed kept them
    missing: str = "error"
    standardize: bool = True
    scaler: str | None = None  # a config written before the key existed: by standardize
    val_size: float = 0.15
    test_size: float = 0.15
    embed_above: int | None = None  # a config written before the key existed: all one-hot
    category_d_embedding: int = 8


@dataclass(frozen=True)
class PlanSettings:
    """``cv`` and ``trainer.seeds``/``trainer.seed``: which fits a run makes."""

    folds: int | None = None
    repeats: int = 1
    keep: str = "ensemble"
    seeds: int = 1
    seed: int = 0

    @property
    def fits(self) -> int:
        """How many fits (folds x repeats x seeds)."""
        return (self.folds or 1) * (self.repeats if self.folds else 1) * self.seeds

    @property
    def label(self) -> str:
        """How the summary names the run's fits: ``cv 5x3`` or ``seeds 4``."""
        if self.folds:
            seeds = f"x{self.seeds}" if self.seeds > 1 else ""
            return f"cv {self.folds}x{self.repeats}{seeds}"
        return f"seeds {self.seeds}"


@dataclass(frozen=True)
class TrainerSettings:
    """``trainer``: the loop's settings."""

    epochs: int
    batch_size: int
    grad_clip: float | None
    l1: float
    seed: int
    deterministic: bool
    device: str
    threads: int | None
    calibrate: bool
    resume: str | None


@dataclass(frozen=True)
class Recipe:
    """A run's settings and factories, read from the config once (see the module doc)."""

    config: dict[str, Any]  # the resolved config, as checkpoints store it (no callbacks)
    yaml: str  # the resolved config as the run folder's config.yaml
    data: DataSettings
    plan: PlanSettings
    trainer: TrainerSettings
    monitor: Monitor
    plots: Any  # report.plots: auto | true | false
    ema_beta: float
    optimizer: Callable[..., torch.optim.Optimizer]
    scheduler: Callable[..., Any] | None
    packed: bool  # whether the fits can train packed (the optimizer's and scheduler's classes)
    unpacked_reason: str | None
    class_weight: Any  # loss.class_weight: None | "balanced" | one weight per class
    init: Any  # ``init`` and ``model.layer_inits``: how each fit's weights start
    layer_inits: Any
    _network: dict[str, Any] = field(repr=False)  # model, embedding, activation, loss, trainer
    _head: Any = field(repr=False)
    _criterion: Any = field(repr=False)
    _callbacks: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, cfg: DictConfig) -> Recipe:
        """Check ``cfg`` (one error lists every problem) and read it."""
        check_config(cfg)
        resolved = to_container(cfg)
        callbacks = resolved.pop("callbacks", None) or {}  # code: no checkpoint holds it
        data, trainer, cv = resolved["data"], resolved["trainer"], resolved["cv"]
        optimizer = instantiate(cfg.optim, _convert_="all")
        scheduler = instantiate(cfg.scheduler, _convert_="all")
        packed, reason = packable(optimizer.func, getattr(scheduler, "func", None))
        return cls(
            config=resolved,
            yaml=OmegaConf.to_yaml(cfg, resolve=True),
            data=DataSettings(
                source=data["source"],
                group=data.get("group"),
                duplicates=data.get("duplicates", "keep"),
                missing=data.get("missing", "error"),
                standardize=data["standardize"],
                scaler=data.get("scaler"),
                val_size=data["val_size"],
                test_size=data["test_size"],
                embed_above=(data.get("category_embedding") or {}).get("above"),
                category_d_embedding=(data.get("category_embedding") or {}).get("d_embedding", 8),
            ),
            plan=PlanSettings(
                folds=cv["folds"],
                repeats=cv["repeats"],
                keep=cv["keep"],
                seeds=trainer["seeds"],
                seed=trainer["seed"],
            ),
            trainer=TrainerSettings(
                epochs=trainer["epochs"],
                batch_size=trainer["batch_size"],
                grad_clip=trainer["grad_clip"],
                l1=trainer["l1"],
                seed=trainer["seed"],
                deterministic=trainer["deterministic"],
                device=trainer["device"],
                threads=trainer["threads"],
                calibrate=trainer["calibrate"],
                resume=trainer["resume"],
            ),
            monitor=Monitor(resolved["monitor"]),
            plots=resolved["report"]["plots"],
            ema_beta=resolved["report"]["ema_beta"],
            optimizer=optimizer,
            scheduler=scheduler,
            packed=packed,
            unpacked_reason=reason,
            class_weight=resolved["loss"].get("class_weight"),
            init=resolved["init"],
            layer_inits=resolved["model"].get("layer_inits"),
            _network={
                "embedding": resolved.get("embedding"),
                **{key: resolved[key] for key in ("model", "activation", "loss", "trainer")},
            },
            _head=resolved["loss"]["head"],
            _criterion=resolved["loss"]["criterion"],
            _callbacks=callbacks,
        )

    @property
    def fits(self) -> int:
        return self.plan.fits

    # ------------------------------------------------------------------ built per run

    def head(self, schema: Schema) -> Head:
        """The loss's head for the schema's classes; an order-reading head needs ordered
        classes."""
        head = instantiate(self._head, num_classes=schema.num_classes)
        if head.needs_order and not schema.ordered:
            raise ConfigError(
                f"loss.head ({type(head).__name__}) reads the classes as ranks, but the "
                f"schema's label {schema.label!r} is not ordered (ordered: false); use "
                "loss=cross_entropy"
            )
        weights = self.class_weight
        if isinstance(weights, list) and len(weights) != schema.num_classes:
            raise ConfigError(
                f"loss.class_weight: {len(weights)} weight(s) for the {schema.num_classes} "
                f"classes of {schema.label!r} ({', '.join(map(str, schema.classes))})"
            )
        return head

    def class_weights(self, labels: list[torch.Tensor], classes: int) -> torch.Tensor | None:
        """Each fit's class weights ``[fits, classes]`` from its training ``labels``, or None
        (``loss.class_weight=null``). ``balanced``: ``n / (classes * count)``, as
        scikit-learn's ``compute_class_weight``; a class a fit never sees weighs 0."""
        if self.class_weight is None:
            return None
        if self.class_weight != "balanced":
            return torch.tensor([self.class_weight] * len(labels), dtype=torch.float32)
        rows = []
        for y in labels:
            count = torch.bincount(y.cpu(), minlength=classes).double()
            weight = torch.where(count > 0, len(y) / (classes * count.clamp_min(1)), 0.0)
            rows.append(weight.float())
        return torch.stack(rows)

    def network(self, prep: Preprocessor, num_classes: int, members: int) -> NetworkSpec:
        """The network of ``members`` fits for the inputs ``prep`` gives (its width, its
        numeric columns first, its embedded categorical codes last) and the classes, refused
        over the budgets (:func:`~pricenet.nn.spec.network_spec`)."""
        sizes = prep.embedded_sizes
        categories = CategorySpec(sizes, self.data.category_d_embedding) if sizes else None
        numeric = len(prep.numeric_names)
        return network_spec(self._network, prep.width, num_classes, members, numeric, categories)

    @property
    def bins(self) -> str | None:
        """How a piecewise-linear embedding's bins are fitted (quantile | tree), or None."""
        node = self._network["embedding"] or {}
        return node.get("bins") if node.get("kind") == "piecewise_linear" else None

    def criterion(self) -> torch.nn.Module:
        """A fresh loss module (``loss.criterion``)."""
        return instantiate(self._criterion)

    def groups(self, fits: int) -> list[list[int]]:
        """Which fits train together: all in one packed fit, or one by one when the
        optimizer or scheduler class cannot be packed exactly (one log line says why)."""
        if self.packed or fits == 1:
            return [list(range(fits))]
        log.info("fitting %d models sequentially, not packed: %s", fits, self.unpacked_reason)
        return [[m] for m in range(fits)]

    def callbacks(self, run: Any, per_fit: bool | None = None) -> list[Any]:
        """The ``callbacks`` group's callbacks, in order, built afresh: each ``_partial_``
        node completed with ``run`` (a factory may give None: nothing to do in this run), a
        plain node as built; null nodes are dropped. ``per_fit``: only those whose target
        declares ``per_fit = True`` (policy that belongs to one fit), or only the others;
        None: all."""
        built = []
        for name, node in self._callbacks.items():
            if node is None:
                continue
            if per_fit is not None and _per_fit(node) != per_fit:
                continue
            made = instantiate(node, _convert_="all")
            if isinstance(made, functools.partial):
                made = made(run)
            if made is None:
                continue
            if not any(callable(getattr(made, hook, None)) for hook in HOOKS):
                raise ConfigError(
                    f"callbacks.{name} ({type(made).__name__}) has none of the hooks "
                    f"{', '.join(HOOKS)}: it would never run"
                )
            built.append(made)
        return built


def _per_fit(node: Mapping) -> bool:
    """Whether a callback node's target declares ``per_fit = True``, read before building."""
    return getattr(get_object(node["_target_"]), "per_fit", False) is True
