"""Scoring a run's members: each on its held-out rows, their summary, and calibration.

Each member's best weights are scored on rows it never saw; a temperature per member is
fitted on its validation rows (:mod:`pricenet.run.calibration`) and its effect measured on the
held-out rows. With several members, ``metrics.json`` leads with their means and gains a
``cv`` (or ``seeds``) block: mean, std and 95% interval, and the pooled confusion matrix.

Every run also states its table's repeated feature rows (``duplicates``) and the leakage
check (``leakage``): how many held-out rows had an identical feature row among the rows their
own fit trained or selected on. Grouping (the default) makes it 0; ``data.duplicates=keep``
counts it and warns.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pricenet.atomic import json_value
from pricenet.engine.loop import Trainer
from pricenet.nn.model import count_parameters
from pricenet.run.fits import Fitted, Prepared
from pricenet.run.metrics import classification_report
from pricenet.run.plan import PlannedFit
from pricenet.run.recipe import PlanSettings, Recipe
from pricenet.run.summary import headline, summarize
from pricenet.tables.duplicates import scan, seen_in_training

log = logging.getLogger("pricenet")


def _member_record(member: PlannedFit, trainer: Trainer, index: int) -> dict[str, Any]:
    state = trainer.state.members[index]
    best = state.best_epoch - 1
    record: dict[str, Any] = {
        "seed": member.seed,
        "fold": member.fold,
        "repeat": member.repeat,
        "rows": {"train": len(member.train), "val": len(member.val), "test": len(member.test)},
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "error": state.error,
    }
    if state.error is None and best >= 0:
        record["val_acc"] = state.history["val_acc"][best]
        record["val_loss"] = state.history["val_loss"][best]
    return record


def evaluate(recipe: Recipe, prepared: Prepared, fitted: Fitted) -> dict[str, Any]:
    """Each member's best weights on its held-out rows, the summary, and calibration."""
    from pricenet.run.calibration import calibratable, fit_temperatures

    schema = prepared.table.schema
    records, held = [], []
    # every member's test and validation outputs: one batched pass per trainer and split
    outputs_of = {}
    for group, trainer in zip(fitted.groups, fitted.trainers, strict=True):
        tests = trainer.outputs([prepared.tests[m][0] for m in group])
        vals = trainer.outputs([prepared.members[m].x_val for m in group])
        outputs_of.update(zip(group, zip(tests, vals, strict=True), strict=True))
    for m, member in enumerate(prepared.plan):
        records.append(_member_record(member, *fitted.member(m)))
    # every calibrated member's temperature in one joint fit (1.0 for the others)
    head = fitted.trainers[0].head
    calibrate = recipe.trainer.calibrate and calibratable(head)
    calibrated = [m for m, r in enumerate(records) if calibrate and r["error"] is None]
    temperatures = [1.0] * len(records)
    found = fit_temperatures(
        [outputs_of[m][1] for m in calibrated],
        [prepared.members[m].y_val for m in calibrated],
        head,
    )
    for m, t in zip(calibrated, found, strict=True):
        temperatures[m] = t
    for m, record in enumerate(records):
        trainer, index = fitted.member(m)
        y_test = prepared.tests[m][1]
        outputs, temperature = outputs_of[m][0], temperatures[m]
        if record["error"] is None and len(y_test):
            loss = _test_loss(trainer, index, outputs, y_test)
            pred = trainer.head.decode(outputs).cpu().numpy()
            report = classification_report(
                y_test.cpu().numpy(), pred, schema.num_classes, labels=schema.classes
            )
            record.update(
                test_acc=report["accuracy"],
                test_macro_f1=report["macro_f1"],
                test_loss=loss,
                test=report,
            )
            held.append((outputs, y_test, temperature))
    return {
        "records": records,
        "temperatures": temperatures,
        "calibration": _calibration(prepared, fitted, held),
        "held": held,
    }


def _test_loss(trainer: Trainer, index: int, outputs: torch.Tensor, y: torch.Tensor) -> float:
    """The held-out loss as the trainer's validation loss is: the criterion's mean over the
    rows, weighted by class with ``loss.class_weight``."""
    per_row = trainer.criterion(outputs, trainer.head.encode(y))
    per_row = per_row.reshape(len(y), -1).mean(1)
    if trainer.class_weights is None:
        return float(per_row.mean())
    weight = trainer.class_weights[index][y]
    return float((per_row * weight).sum() / weight.sum().clamp_min(1e-12))


@torch.no_grad()
def member_outputs(trainer: Trainer, index: int, x: torch.Tensor) -> torch.Tensor:
    """Member ``index``'s outputs ``(n, outputs)`` on its own rows ``x`` (best weights)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    padded = torch.zeros(model.members, len(x), x.shape[1], device=x.device)
    padded[index] = x
    out = model(padded)[index]
    model.train(was_training)
    return out


def _calibration(prepared: Prepared, fitted: Fitted, held: list) -> dict[str, Any] | None:
    """ECE and NLL on the held-out rows, pooled over members, before and after scaling."""
    from pricenet.run.calibration import calibratable, calibration_report

    head = fitted.trainers[0].head
    if not held or not calibratable(head):
        return None
    outputs = torch.cat([o for o, _, _ in held]).cpu()
    scaled = torch.cat([o / t for o, _, t in held]).cpu()
    labels = torch.cat([y for _, y, _ in held]).cpu()
    before = calibration_report(outputs, labels, head, 1.0)
    after = calibration_report(scaled, labels, head, 1.0)
    with torch.no_grad():
        curves = (head.probabilities(outputs), head.probabilities(scaled), labels)
    temperatures = [t for _, _, t in held]
    return {
        "temperature": temperatures[0] if len(temperatures) == 1 else temperatures,
        "split": "test",
        "rows": before["rows"],
        "ece_before": before["ece_before"],
        "ece_after": after["ece_before"],
        "nll_before": before["nll_before"],
        "nll_after": after["nll_before"],
        "reliability": curves,
    }


SUMMARY_KEYS = {
    "acc": "test_acc",
    "macro_f1": "test_macro_f1",
    "loss": "test_loss",
    "val_acc": "val_acc",
}


def summarize_members(plan: PlanSettings, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``cv`` (or ``seeds``) block: mean, std and 95% interval over the members."""
    if len(records) < 2:
        return None
    fits = [
        {short: r.get(key) for short, key in SUMMARY_KEYS.items()}
        for r in records
        if r["error"] is None
    ]
    matrices = [np.asarray(r["test"]["confusion_matrix"]) for r in records if r.get("test")]
    block = {
        **summarize(fits, list(SUMMARY_KEYS)),
        "members": len(records),
        "diverged": sum(r["error"] is not None for r in records),
        "confusion_matrix": sum(matrices).tolist() if matrices else None,
    }
    if plan.folds:
        block.update(folds=plan.folds, repeats=plan.repeats, seeds=plan.seeds)
    else:
        block.update(seeds=plan.seeds)
    return block


def metrics_of(
    recipe: Recipe, prepared: Prepared, fitted: Fitted, evaluation: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json: one model's figures as always; with several, their summary on top."""
    records = evaluation["records"]
    first = records[0]
    state = fitted.trainers[0].state
    metrics: dict[str, Any] = {
        "status": "done",
        "monitor": recipe.monitor.name,
        "selection_split": "val" if len(prepared.members[0].y_val) else "train",
        "val_acc": first.get("val_acc"),
        "val_loss": first.get("val_loss"),
        "test_acc": first.get("test_acc"),
        "test_loss": first.get("test_loss"),
        "test_macro_f1": first.get("test_macro_f1"),
        "test": first.get("test"),
        "best_epoch": first["best_epoch"],
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "parameters": count_parameters(fitted.trainers[0].model) // fitted.trainers[0].count,
        "history": state.history,
        "classes": json_value(list(prepared.table.schema.classes)),
    }
    plan = recipe.plan
    summary = summarize_members(plan, records)
    if summary is not None:
        # With several fits, the headline figures are their means (the held-out folds' in cv).
        for short, key in SUMMARY_KEYS.items():
            metrics[key] = summary[short]["mean"] if summary[short] else None
        metrics["test"] = None
        metrics["best_epoch"] = first["best_epoch"]
        if not plan.folds:
            summary["ensemble_acc"] = _ensemble_accuracy(fitted, evaluation["held"])
        metrics["cv" if plan.folds else "seeds"] = summary
        metrics["members"] = records
        metrics["headline"] = headline(plan.label, summary)
    calibration = evaluation["calibration"]
    metrics["calibration"] = (
        {k: v for k, v in calibration.items() if k != "reliability"} if calibration else None
    )
    found = prepared.table.duplicates or scan(prepared.table, "keep")
    metrics["duplicates"] = found.report()
    metrics["leakage"] = leakage(prepared, found.codes, found.policy)
    if summary is not None:
        summary["leakage"] = metrics["leakage"]["seen_in_training"]
        for record, seen in zip(records, metrics["leakage"]["per_fit"], strict=True):
            record["leaked_test_rows"] = seen
    return metrics


def leakage(prepared: Prepared, codes: np.ndarray, policy: str) -> dict[str, Any]:
    """The leakage check: held-out rows whose features equal a row their fit trained or
    selected on (its training or validation rows), per fit and in all; logged."""
    per_fit = [
        seen_in_training(codes, m.test, np.concatenate([m.train, m.val])) for m in prepared.plan
    ]
    held = sum(len(m.test) for m in prepared.plan)
    seen = sum(per_fit)
    if seen:
        log.warning(
            "%d of %d held-out rows (%.1f%%) have an identical feature row in their own fit's "
            "training rows (data.duplicates=%s): held-out scores flatter models that memorise",
            seen,
            held,
            100 * seen / held,
            policy,
        )
    elif held and len(np.unique(codes)) < len(codes):
        log.info("leakage check: no held-out row has an identical feature row in its fit's rows")
    return {
        "held_out_rows": held,
        "seen_in_training": seen,
        "share": seen / held if held else 0.0,
        "per_fit": per_fit,
    }


def _ensemble_accuracy(fitted: Fitted, held: list) -> float | None:
    """Seed repeats share one test split: the accuracy of their ensemble on it (the model
    ``best.pt`` keeps), beside the members' mean."""
    if len(held) < 2:
        return None
    head = fitted.trainers[0].head
    outputs = torch.stack([o / t for o, _, t in held])
    pred = head.decode(head.combine(outputs))
    return float((pred == held[0][1]).float().mean())
