"""The members of a run (its fits): data, plan, preprocessing, and fitting them.

A member is one fit of the model: its own training, validation and held-out rows (see
:mod:`pricenet.plan`), its own :class:`~pricenet.tables.Preprocessor` fitted on its training
rows, its own seed. :func:`fit` trains every member in one packed model, or one by one when
the config cannot be packed exactly (one log line says why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pricenet.config import to_container
from pricenet.engine import MemberData, Trainer, member_groups
from pricenet.errors import CheckpointError, ConfigError, DataError, DivergenceError
from pricenet.heads import Head
from pricenet.model import build_model
from pricenet.plan import Member, make_plan, split_groups
from pricenet.restore import Resume
from pricenet.spec import network_spec
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
    plan: list[Member]
    preprocessors: list[Preprocessor]
    members: list[MemberData]
    tests: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def width(self) -> int:
        return self.preprocessors[0].width


def plan_for(cfg: DictConfig, table: Table) -> list[Member]:
    """The run's members (see :mod:`pricenet.plan`)."""
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


def prepare(cfg: DictConfig, table: Table, plan: list[Member], device: torch.device) -> Prepared:
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


def build_trainer(
    cfg: DictConfig,
    prepared: Prepared,
    group: list[int] | None = None,
    callbacks: list[Any] | None = None,
) -> Trainer:
    """Head, criterion, packed model, optimizer and scheduler for the members in ``group``."""
    group = list(range(len(prepared.plan))) if group is None else group
    schema = prepared.table.schema
    device = prepared.members[0].x_train.device
    head = build_head(cfg, schema)
    criterion = instantiate(cfg.loss.criterion).to(device)
    spec = network_spec(cfg, prepared.width, schema.num_classes, members=len(group))
    generators = [torch.Generator().manual_seed(prepared.plan[m].seed) for m in group]
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
        [prepared.members[m] for m in group],
        epochs=tcfg.epochs,
        batch_size=tcfg.batch_size,
        patience=tcfg.patience,
        grad_clip=tcfg.grad_clip,
        l1=tcfg.l1,
        monitor=cfg.monitor,
        generators=generators,
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


def fit(
    cfg: DictConfig,
    prepared: Prepared,
    callbacks: list[Any],
    resumed: Resume | None,
) -> Fitted:
    """Train every member: packed in one trainer, or one trainer per member (the fallback)."""
    groups = member_groups(cfg, len(prepared.plan))
    trainers = []
    for group in groups:
        trainer = build_trainer(cfg, prepared, group, callbacks if len(groups) == 1 else [])
        if resumed is not None:
            try:
                trainer.load_state_dict(resumed.state)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise CheckpointError(
                    f"trainer.resume={cfg.trainer.resume}: its state does not fit this run "
                    f"({first or type(err).__name__})"
                ) from err
            log.info("resumed from %s at epoch %d", cfg.trainer.resume, trainer.state.epoch)
        try:
            trainer.fit()
        except DivergenceError as err:
            err.trainer = trainer  # the caller keeps what the fit reached before diverging
            raise
        trainer.use_best_weights()
        trainers.append(trainer)
    return Fitted(groups, trainers)
