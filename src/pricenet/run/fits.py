"""The members of a run (its fits): data, plan, preprocessing, and fitting them.

A member is one fit of the model: its own training, validation and held-out rows (see
:mod:`pricenet.run.plan`), its own :class:`~pricenet.tables.Preprocessor` fitted on its training
rows, its own seed. Everything here reads the run's :class:`~pricenet.run.recipe.Recipe`,
never the config. :func:`fit` trains every member in one packed model, or one by one when
the config cannot be packed exactly (one log line says why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pricenet.checkpoints.restore import Resume
from pricenet.engine.callbacks import RunContext
from pricenet.engine.fit_state import check_sequential_state, check_trainer_state
from pricenet.engine.loop import MemberData, Sequential, Trainer
from pricenet.engine.reporting import close_reporters
from pricenet.errors import CheckpointError, DataError, DivergenceError, first_line
from pricenet.nn.heads import Head
from pricenet.nn.model import build_model
from pricenet.nn.spec import NetworkSpec
from pricenet.run.plan import PlannedFit, make_plan, split_groups
from pricenet.run.recipe import DataSettings, Recipe
from pricenet.tables import Preprocessor, Table
from pricenet.tables.duplicates import apply_policy
from pricenet.tables.sources import load_table

log = logging.getLogger("pricenet")


def load_data(data: DataSettings) -> Table:
    """The labelled table the data settings describe (generated, or read and validated), its
    repeated feature rows found and handled as ``data.duplicates`` says (a config written
    before that key existed keeps them, as it did)."""
    table = load_table(data.source)
    group = data.group
    if group is not None and table.groups is None:
        raise DataError(
            f"{table.source}: column {group!r} (data.group): not in the table; "
            "name a column of the CSV (data=csv)"
        )
    table, found = apply_policy(table, data.duplicates)
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
    """The data side of a run: the table, its plan, each member's tensors, and what the
    table sizes: the head (its classes) and the network of every fit (its input width)."""

    table: Table
    plan: list[PlannedFit]
    preprocessors: list[Preprocessor]
    members: list[MemberData]
    tests: list[tuple[torch.Tensor, torch.Tensor]]
    head: Head
    spec: NetworkSpec
    class_weights: torch.Tensor | None = None  # [fits, classes] (loss.class_weight)

    @property
    def width(self) -> int:
        return self.preprocessors[0].width


def plan_for(recipe: Recipe, table: Table) -> list[PlannedFit]:
    """The run's members (see :mod:`pricenet.run.plan`)."""
    plan = recipe.plan
    return make_plan(
        table.labels,
        table.schema,
        groups=split_groups(table, recipe.data.group),
        cv={"folds": plan.folds, "repeats": plan.repeats, "keep": plan.keep},
        val_size=recipe.data.val_size,
        test_size=recipe.data.test_size,
        seed=plan.seed,
        seeds=plan.seeds,
        source=table.source,
    )


def fit_preprocessor(data: DataSettings, table: Table, rows: Any) -> Preprocessor:
    """A preprocessor fitted on the table's ``rows``. Every fit gets a was-missing input for
    the same columns (those with a gap anywhere in the table), so all share one width."""
    frame = table.frame
    gaps = [name for name in frame.columns if frame[name].isna().any()]
    return Preprocessor.fit(
        frame.iloc[rows],
        table.schema,
        scaler=data.scaler,
        standardize=data.standardize,
        missing=data.missing,
        indicators=gaps,
        embed_above=data.embed_above,
    )


def prepare(
    recipe: Recipe,
    table: Table,
    plan: list[PlannedFit],
    device: torch.device,
    head: Head | None = None,
    spec: NetworkSpec | None = None,
) -> Prepared:
    """Fit each member's preprocessor on its training rows; its rows as tensors on ``device``.
    ``head`` and ``spec``: the run's, when it has built them already (else built here)."""
    frame, labels = table.frame, torch.from_numpy(table.labels)
    preprocessors, members, tests = [], [], []
    for member in plan:
        prep = fit_preprocessor(recipe.data, table, member.train)
        x = prep.module().transform(frame)[0]  # the one preprocessing, on every row at once

        def tensors(rows: np.ndarray, x: torch.Tensor = x) -> tuple[Any, Any]:
            return x[torch.as_tensor(rows, dtype=torch.long)].to(device), labels[rows].to(device)

        preprocessors.append(prep)
        members.append(MemberData(*tensors(member.train), *tensors(member.val)))
        tests.append(tensors(member.test))
    width, classes = preprocessors[0].width, table.schema.num_classes
    if spec is None:
        spec = recipe.network(preprocessors[0], classes, len(plan))
    if (spec.in_features, spec.num_classes, spec.members) != (width, classes, len(plan)):
        raise ValueError(f"the network {spec} does not fit the prepared data")
    head = recipe.head(table.schema) if head is None else head
    weights = recipe.class_weights([m.y_train for m in members], classes)
    if weights is not None:
        weights = weights.to(device)
    return Prepared(table, plan, preprocessors, members, tests, head, spec, weights)


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
    recipe: Recipe,
    prepared: Prepared,
    group: list[int] | None = None,
    callbacks: list[Any] | None = None,
    run: RunContext | None = None,
) -> Trainer:
    """Criterion, packed model and optimizer for the members in ``group``, with the
    recipe's per-fit callbacks (best weights, early stopping, the scheduler), then
    ``callbacks``."""
    group = list(range(len(prepared.plan))) if group is None else group
    device = prepared.members[0].x_train.device
    spec = replace(prepared.spec, members=len(group))
    generators = [torch.Generator().manual_seed(prepared.plan[m].seed) for m in group]
    bins = fit_bins(recipe, prepared, group)
    model = build_model(spec, generators, recipe.init, recipe.layer_inits, bins).to(device)
    run = run if run is not None else RunContext(monitor=recipe.monitor)
    run = replace(run, scheduler=recipe.scheduler)
    callbacks = [*recipe.callbacks(run, per_fit=True), *(callbacks or [])]
    settings = recipe.trainer
    return Trainer(
        model,
        prepared.head,
        recipe.criterion().to(device),
        recipe.optimizer(model.parameters()),
        [prepared.members[m] for m in group],
        generators=generators,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        grad_clip=settings.grad_clip,
        l1=settings.l1,
        monitor=recipe.monitor,
        callbacks=callbacks,
        class_weights=None if prepared.class_weights is None else prepared.class_weights[group],
    )


def fit_bins(recipe: Recipe, prepared: Prepared, group: list[int]) -> list[list[Any]] | None:
    """Each fit's piecewise-linear bins, on its own training rows only (None: no such
    embedding): its numeric inputs, and for tree bins its labels."""
    embedding = prepared.spec.embedding
    if recipe.bins is None or embedding is None:
        return None
    from pricenet.nn.embeddings import fit_bins as fit_one

    bins = []
    for m in group:
        data = prepared.members[m]
        x = data.x_train[:, : embedding.numeric]
        y = data.y_train if recipe.bins == "tree" else None
        bins.append(fit_one(x, embedding.max_bins, recipe.bins, y))
    return bins


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


def fit(recipe: Recipe, prepared: Prepared, run: RunContext, resumed: Resume | None) -> Fitted:
    """Train every member with the recipe's callbacks: packed in one trainer, or one trainer
    per member (the fallback), driven together so that the run's callbacks see one fit."""
    groups = recipe.groups(len(prepared.plan))
    callbacks = recipe.callbacks(run, per_fit=False)
    try:
        if len(groups) == 1:
            trainer = build_trainer(recipe, prepared, groups[0], callbacks, run)
            loop: Trainer | Sequential = trainer
            trainers = [trainer]
        else:  # each member its own per-fit callbacks, built afresh from the recipe
            trainers = [build_trainer(recipe, prepared, group, run=run) for group in groups]
            loop = Sequential(trainers, callbacks)
        if resumed is not None:
            _load(loop, resumed, recipe.trainer.resume)
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


def _load(loop: Trainer | Sequential, resumed: Resume, where: str | None) -> None:
    try:
        loop.load_state_dict(resumed.state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise CheckpointError(
            f"trainer.resume={where}: its state does not fit this run "
            f"({first_line(err) or type(err).__name__})"
        ) from err
    log.info("resumed from %s at epoch %d", where, loop.state.epoch)


def check_resume(recipe: Recipe, resumed: Resume, train_sizes: list[int]) -> None:
    """Refuse, before anything is built for real, a saved trainer state that the trainer(s)
    this recipe builds could not continue exactly: packed, one state checked against the
    checkpoint's network; fitted one by one, each member's against its own slice of it."""
    network = resumed.network
    where = str(resumed.file)
    groups = recipe.groups(network.members)
    run = RunContext(monitor=recipe.monitor, scheduler=recipe.scheduler)

    def checker(model: Any, sizes: list[int]) -> Any:
        optimizer = recipe.optimizer(model.parameters())
        probe = SimpleNamespace(model=model, optimizer=optimizer, count=model.members)
        policy = {}
        for callback in recipe.callbacks(run, per_fit=True):
            if getattr(callback, "stateful", False):
                callback.bind(probe)
                policy[callback.name] = callback

        def check(state: Any, where: str, key: str = "trainer") -> None:
            check_trainer_state(
                state,
                model=model,
                optimizer=optimizer,
                policy=policy,
                monitor=recipe.monitor,
                where=where,
                train_sizes=sizes,
                batch_size=recipe.trainer.batch_size,
                key=key,
            )

        return check

    if len(groups) == 1:
        checker(network, train_sizes)(resumed.state, where)
    else:
        checks = [checker(network.member(m), [train_sizes[m]]) for m in range(network.members)]
        check_sequential_state(resumed.state, checks, where)
