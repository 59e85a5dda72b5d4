"""What a run leaves behind to predict with: ``best.pt``.

Every checkpoint of a run holds the same description (:func:`checkpoint_meta`: network spec,
schema, each fit's preprocessing, the flat settings, the data's fingerprint). ``best.pt`` adds
the weights: the fits as one ensemble (diverged ones left out), a refit on all labelled rows,
or nothing (``cv.keep``); and when every fit diverged, the best weights reached before.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from pricenet.checkpoints.checkpoint import BEST, flatten_settings, save_checkpoint
from pricenet.errors import DivergenceError
from pricenet.nn.packed import stack_members
from pricenet.nn.spec import NetworkSpec
from pricenet.run.calibration import calibratable, fit_temperature
from pricenet.run.evaluation import member_outputs
from pricenet.run.fits import Fitted, Prepared, build_trainer, prepare
from pricenet.run.plan import refit_member, split_groups
from pricenet.run.recipe import Recipe

log = logging.getLogger("pricenet")


def checkpoint_meta(
    prepared: Prepared, spec: NetworkSpec, resolved: dict, sha: str
) -> dict[str, Any]:
    """What every checkpoint of the run holds besides weights and trainer state."""
    return {
        "network": spec.to_dict(),
        "schema": prepared.table.schema.to_dict(),
        "preprocessors": [p.state_dict() for p in prepared.preprocessors],
        "settings": flatten_settings(resolved),
        "data_sha256": sha,
    }


def keep_model(
    recipe: Recipe,
    prepared: Prepared,
    fitted: Fitted,
    evaluation: dict[str, Any],
    meta: dict[str, Any],
    run_dir: Path,
) -> Path | None:
    """``best.pt``: the members as one ensemble (diverged ones left out), a refit, or none."""
    keep = recipe.plan.keep
    if keep == "none":
        return None
    if keep == "refit":
        return refit(recipe, prepared, meta, run_dir)
    kept = [m for m, r in enumerate(evaluation["records"]) if r["error"] is None]
    states = []
    for m in kept:
        trainer, index = fitted.member(m)
        states.append({k: v[index : index + 1] for k, v in trainer.best_state().items()})
    spec = NetworkSpec.from_dict({**meta["network"], "members": len(kept)})
    epochs = [evaluation["records"][m]["best_epoch"] for m in kept]
    payload = {
        **meta,
        "network": spec.to_dict(),
        "preprocessors": [meta["preprocessors"][m] for m in kept],
        "temperatures": [float(evaluation["temperatures"][m]) for m in kept],
        "model": {k: v.cpu() for k, v in stack_members(states).items()},
        "epoch": epochs[0] if len(epochs) == 1 else epochs,
    }
    return save_checkpoint(run_dir / BEST, payload)


def refit(recipe: Recipe, prepared: Prepared, meta: dict[str, Any], run_dir: Path) -> Path:
    """``cv.keep=refit``: one more fit on every labelled row, saved as the run's model."""
    table = prepared.table
    member = refit_member(
        table.labels,
        table.schema,
        recipe.data.val_size,
        recipe.plan.seed,
        table.source,
        groups=split_groups(table, recipe.data.group),
    )
    device = prepared.members[0].x_train.device
    spec = replace(prepared.spec, members=1)
    single = prepare(recipe, table, [member], device, prepared.head, spec)
    trainer = build_trainer(recipe, single)
    trainer.fit()
    trainer.use_best_weights()
    temperature = 1.0
    data = single.members[0]
    if recipe.trainer.calibrate and calibratable(trainer.head) and len(data.y_val):
        temperature = fit_temperature(
            member_outputs(trainer, 0, data.x_val), data.y_val, trainer.head
        )
    log.info("refit on all %d labelled rows: best epoch %d", len(table), trainer.state.best_epoch)
    payload = {
        **meta,
        "network": spec.to_dict(),
        "preprocessors": [single.preprocessors[0].state_dict()],
        "temperatures": [float(temperature)],
        "model": {k: v.cpu() for k, v in trainer.best_state().items()},
        "epoch": trainer.state.best_epoch,
    }
    return save_checkpoint(run_dir / BEST, payload)


def keep_diverged(err: DivergenceError, meta: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Every fit diverged: ``best.pt`` keeps the best weights reached before (when an epoch
    was good); returns metrics.json's failed record, with the epochs that went well."""
    trainer = getattr(err, "trainer", None)
    failed: dict[str, Any] = {"status": "failed", "error": str(err)}
    if trainer is not None:
        state = trainer.state
        failed.update(epochs_run=state.epoch, best_epoch=state.best_epoch, history=state.history)
        epochs = [m.best_epoch for m in state.members]
        if min(epochs) >= 1:
            payload = {
                **meta,
                "temperatures": [1.0] * trainer.count,
                "model": {k: v.cpu() for k, v in trainer.best_state().items()},
                "epoch": epochs[0] if len(epochs) == 1 else epochs,
            }
            save_checkpoint(run_dir / BEST, payload)
    return failed
