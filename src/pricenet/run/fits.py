"""The members of a run (its fits): data, plan, preprocessing, and fitting them.

A member is one fit of the model: its own training, validation and held-out rows (see
:mod:`pricenet.run.plan`), its own :class:`~pricenet.tables.Preprocessor` fitted on its training
rows, its own seed. :func:`fit` trains every member in one packed model, or one by one when
the config cannot be packed exactly (one log line says why).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from pricenet.checkpoints.restore import Resume
from pricenet.config.config import to_container
from pricenet.config.monitor import Monitor
from pricenet.engine.callbacks import RunContext
from pricenet.engine.fit_state import check_sequential_state, check_trainer_state
from pricenet.engine.loop import MemberData, Sequential, Trainer
from pricenet.engine.memberwise import packable
from pricenet.engine.reporting import close_reporters
from pricenet.errors import CheckpointError, ConfigError, DataError, DivergenceError
from pricenet.nn.heads import Head
from pricenet.nn.model import build_model
from pricenet.nn.spec import network_spec
from pricenet.run.plan import PlannedFit, make_plan, split_groups
from pricenet.tables import Preprocessor, Schema, Table
from pricenet.tables.duplicates import apply_policy
from pricenet.tables.sources import load_table

log = logging.getLogger("pricenet")


def build_head(cfg: DictConfig, schema: Schema) -> Head:
    """The loss's head for the schema's classes; an order-reading head needs ordered classes."""
    head = instantiate(cfg.loss.head, num_classes=schema.num_classes)
    if head.needs_order and not schema.ordered:
        raise ConfigError(
            f"loss.head ({type(head).__name__}) reads the classes as ranks, but the schema's "
            f"label {schema.label!r} is not ordered (ordered: false); use loss=cross_entropy"
        )
    return head


def load_data(cfg: DictConfig) -> Table:
    """The labelled table the data config describes (generated, or read and validated), its
    repeated feature rows found and handled as ``data.duplicates`` says (a config written
    before that key existed keeps them, as it did)."""
    data = to_container(cfg.data)
    table = load_table(data["source"])
    group = data.get("group")
    if group is not None and table.groups is None:
        raise DataError(
            f"{table.source}: column {group!r} (data.group): not in the table; "
            "name a column of the CSV (data=csv)"
        )
    table, found = apply_policy(table, data.get("duplicates", "keep"))
    table = replace(table, duplicates=found)
    if table.labels is None:
        raise DataError(f"{table.source}: no {table.schema.label!r} column to train on")
    if len(np.unique(table.labels)) < 2:
        only = table.schema.decode_labels(table.labels[:1])[0]
        raise DataError(
            f"{table.source}: column {table.schema.label!r}: every row has class {only!r}; "
            "at least two classes are needed to train"
        )
    return table


@dataclass
class Prepared:
    """The data side of a run: the table, its plan, and each member's tensors."""

    table: Table
    plan: list[PlannedFit]
    preprocessors: list[Preprocessor]
    members: list[MemberData]
    tests: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def width(self) -> int:
        return self.preprocessors[0].width


def plan_for(cfg: DictConfig, table: Table) -> list[PlannedFit]:
    """The run's members (see :mod:`pricenet.run.plan`)."""
    return make_plan(
        table.labels,
        table.schema,
        groups=split_groups(table, cfg.data.get("group")),
        cv=cfg.cv,
        val_size=cfg.data.val_size,
        test_size=cfg.data.test_size,
        seed=cfg.trainer.seed,
        seeds=cfg.trainer.seeds,
        source=table.source,
    )


def prepare(
    cfg: DictConfig, table: Table, plan: list[PlannedFit], device: torch.device
) -> Prepared:
    """Fit each member's preprocessor on its training rows; its rows as tensors on ``device``."""
    frame, labels = table.frame, torch.from_numpy(table.labels)
    missing = to_container(cfg.data).get("missing", "error")
    # Every member gets a was-missing input for the same columns, so all share one width.
    gaps = [name for name in frame.columns if frame[name].isna().any()]
    preprocessors, members, tests = [], [], []
    for member in plan:
        prep = Preprocessor.fit(
            frame.iloc[member.train],
            table.schema,
            standardize=cfg.data.standardize,
            missing=missing,
            indicators=gaps,
        )
        x = prep.module().transform(frame)[0]  # the one preprocessing, on every row at once

        def tensors(rows: np.ndarray, x: torch.Tensor = x) -> tuple[Any, Any]:
            return x[torch.as_tensor(rows, dtype=torch.long)].to(device), labels[rows].to(device)

        preprocessors.append(prep)
        members.append(MemberData(*tensors(member.train), *tensors(member.val)))
        tests.append(tensors(member.test))
    return Prepared(table, plan, preprocessors, members, tests)


def warn_absent_classes(prepared: Prepared) -> None:
    schema = prepared.table.schema
    for member, data in zip(prepared.plan, prepared.members, strict=True):
        absent = sorted(set(range(schema.num_classes)) - set(data.y_train.unique().tolist()))
        if absent:
            names = ", ".join(map(str, schema.decode_labels(np.array(absent))))
            log.warning(
                "%s: the training rows of %s have no example of class(es) %s: the model "
                "cannot learn them",
                prepared.table.source,
                member.name,
                names,
            )
            return


# --------------------------------------------------------------------------- fit


def build_callbacks(cfg: DictConfig, run: RunContext, per_fit: bool | None = None) -> list[Any]:
    """The ``callbacks`` group's callbacks, in order: each ``_partial_`` node completed with
    ``run`` (a factory may give None: nothing to do in this run), a plain node as built;
    null nodes are dropped. ``per_fit``: only those whose target declares ``per_fit = True``
    (policy that belongs to one fit), or only the others; None: all."""
    nodes = cfg.get("callbacks") or {}
    built = []
    for name, node in nodes.items():
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


def _per_fit(node: DictConfig) -> bool:
    """Whether a callback node's target declares ``per_fit = True``, read before building."""
    return getattr(get_object(node["_target_"]), "per_fit", False) is True


HOOKS = ("on_fit_start", "on_epoch_end", "on_fit_end")


def _factories(cfg: DictConfig) -> tuple[Any, Any]:
    """The optimizer and scheduler factories (``_partial_`` nodes) of ``cfg``."""
    return instantiate(cfg.optim, _convert_="all"), instantiate(cfg.scheduler, _convert_="all")


def member_groups(cfg: DictConfig, members: int) -> list[list[int]]:
    """Which members train together: all in one packed fit, or one by one when the optimizer
    or scheduler class cannot be packed exactly (then one log line says why)."""
    optimizer, scheduler = _factories(cfg)
    packed, reason = packable(optimizer.func, getattr(scheduler, "func", None))
    if packed or members == 1:
        return [list(range(members))]
    log.info("fitting %d models sequentially, not packed: %s", members, reason)
    return [[m] for m in range(members)]


def build_trainer(
    cfg: DictConfig,
    prepared: Prepared,
    group: list[int] | None = None,
    callbacks: list[Any] | None = None,
    run: RunContext | None = None,
) -> Trainer:
    """Head, criterion, packed model and optimizer for the members in ``group``, with the
    config's per-fit callbacks (best weights, early stopping, the scheduler), then
    ``callbacks``."""
    group = list(range(len(prepared.plan))) if group is None else group
    schema = prepared.table.schema
    device = prepared.members[0].x_train.device
    head = build_head(cfg, schema)
    criterion = instantiate(cfg.loss.criterion).to(device)
    spec = network_spec(cfg, prepared.width, schema.num_classes, members=len(group))
    generators = [torch.Generator().manual_seed(prepared.plan[m].seed) for m in group]
    model = build_model(cfg, spec, generators).to(device)
    optimizer_factory, scheduler_factory = _factories(cfg)
    run = run if run is not None else RunContext(monitor=cfg.monitor)
    run = replace(run, scheduler=scheduler_factory)
    callbacks = [*build_callbacks(cfg, run, per_fit=True), *(callbacks or [])]
    tcfg = cfg.trainer
    return Trainer(
        model,
        head,
        criterion,
        optimizer_factory(model.parameters()),
        [prepared.members[m] for m in group],
        generators=generators,
        epochs=tcfg.epochs,
        batch_size=tcfg.batch_size,
        grad_clip=tcfg.grad_clip,
        l1=tcfg.l1,
        monitor=Monitor(cfg.monitor),
        callbacks=callbacks,
    )


@dataclass
class Fitted:
    """The trainers of a run and which members each fitted."""

    groups: list[list[int]]
    trainers: list[Trainer]

    def member(self, m: int) -> tuple[Trainer, int]:
        """The trainer that fitted member ``m`` and ``m``'s index inside it."""
        for group, trainer in zip(self.groups, self.trainers, strict=True):
            if m in group:
                return trainer, group.index(m)
        raise IndexError(m)


def fit(cfg: DictConfig, prepared: Prepared, run: RunContext, resumed: Resume | None) -> Fitted:
    """Train every member with the config's callbacks: packed in one trainer, or one trainer
    per member (the fallback), driven together so that the run's callbacks see one fit."""
    groups = member_groups(cfg, len(prepared.plan))
    callbacks = build_callbacks(cfg, run, per_fit=False)
    try:
        if len(groups) == 1:
            trainer = build_trainer(cfg, prepared, groups[0], callbacks, run)
            loop: Trainer | Sequential = trainer
            trainers = [trainer]
        else:  # each member its own per-fit callbacks, built afresh from the config
            trainers = [build_trainer(cfg, prepared, group, run=run) for group in groups]
            loop = Sequential(trainers, callbacks)
        if resumed is not None:
            _load(loop, resumed, cfg)
        try:
            loop.fit()
        except DivergenceError as err:
            err.trainer = loop  # the caller keeps what the fit reached before diverging
            raise
    finally:
        close_reporters(callbacks)
    for trainer in trainers:
        trainer.use_best_weights()
    return Fitted(groups, trainers)


def _load(loop: Trainer | Sequential, resumed: Resume, cfg: DictConfig) -> None:
    try:
        loop.load_state_dict(resumed.state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"trainer.resume={cfg.trainer.resume}: its state does not fit this run "
            f"({first or type(err).__name__})"
        ) from err
    log.info("resumed from %s at epoch %d", cfg.trainer.resume, loop.state.epoch)


def check_resume(cfg: DictConfig, resumed: Resume, train_sizes: list[int]) -> None:
    """Refuse, before anything is built for real, a saved trainer state that the trainer(s)
    this config builds could not continue exactly: packed, one state checked against the
    checkpoint's network; fitted one by one, each member's against its own slice of it."""
    network = resumed.network
    where = str(resumed.file)
    groups = member_groups(cfg, network.members)
    run = RunContext(monitor=cfg.monitor, scheduler=_factories(cfg)[1])

    def checker(model: Any, sizes: list[int]) -> Any:
        optimizer = _factories(cfg)[0](model.parameters())
        probe = SimpleNamespace(model=model, optimizer=optimizer, count=model.members)
        policy = {}
        for callback in build_callbacks(cfg, run, per_fit=True):
            if getattr(callback, "stateful", False):
                callback.bind(probe)
                policy[callback.name] = callback

        def check(state: Any, where: str, key: str = "trainer") -> None:
            check_trainer_state(
                state,
                model=model,
                optimizer=optimizer,
                policy=policy,
                monitor=Monitor(cfg.monitor),
                where=where,
                train_sizes=sizes,
                batch_size=cfg.trainer.batch_size,
                key=key,
            )

        return check

    if len(groups) == 1:
        checker(network, train_sizes)(resumed.state, where)
    else:
        checks = [checker(network.member(m), [train_sizes[m]]) for m in range(network.members)]
        check_sequential_state(resumed.state, checks, where)
