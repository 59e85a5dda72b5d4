"""Cross-validation, seed repeats and ensembles (issue 9): the plan, the run, the checkpoint."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from helpers import LABEL
from omegaconf import open_dict

from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from pricenet.errors import CheckpointError, ConfigError
from pricenet.inference.predictor import Predictor
from pricenet.nn.packed import select_members
from pricenet.run.fits import build_trainer, load_data, plan_for, prepare
from pricenet.run.pipeline import job_value, run
from pricenet.run.recipe import Recipe
from pricenet.tables import make_synthetic

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
SMALL = ("data.n_rows=200", "trainer.epochs=3", "model.hidden=[16]", *LEAN)


def test_kfold_plan_is_stratified_disjoint_and_covers_every_row_once(compose_cfg):
    cfg = compose_cfg("cv=kfold", "cv.repeats=2", "trainer.seeds=2", *SMALL)
    table = load_data(Recipe.of(cfg).data)
    plan = plan_for(Recipe.of(cfg), table)
    assert len(plan) == 5 * 2 * 2
    assert [m.seed for m in plan] == list(range(20))  # every fit has a seed of its own
    for repeat in (0, 1):
        held = [m.test for m in plan if m.repeat == repeat][::2]  # one seed per fold
        assert sorted(np.concatenate(held)) == list(range(200))
    for member in plan:
        rows = [set(member.train), set(member.val), set(member.test)]
        assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
        assert len(rows[0]) + len(rows[1]) + len(rows[2]) == 200
        counts = np.bincount(table.labels[member.test], minlength=4)
        assert counts.max() - counts.min() <= 1  # stratified: 10 of each class
    first, second = plan[0].test, plan[10].test  # repeat 1 reshuffles the folds
    assert set(first) != set(second)


def test_the_folds_are_scikit_learns_stratified_kfold_seeded_per_repeat(compose_cfg):
    from sklearn.model_selection import StratifiedKFold

    cfg = compose_cfg("cv=kfold", "cv.repeats=2", "trainer.seed=7", *SMALL)
    table = load_data(Recipe.of(cfg).data)
    plan = plan_for(Recipe.of(cfg), table)
    states = np.random.default_rng(7).integers(0, 2**32 - 1, size=2)
    for repeat, state in enumerate(states):
        splitter = StratifiedKFold(5, shuffle=True, random_state=int(state))
        expected = [test for _, test in splitter.split(np.zeros(200), table.labels)]
        got = [m.test for m in plan if m.repeat == repeat]
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_the_held_out_fold_never_reaches_training_or_selection(compose_cfg):
    """Poison every member's held-out rows: the fit, best epochs and weights do not change.

    If anything in training, early stopping or epoch selection read those rows, the NaNs
    would spread into a loss and change (or break) the result.
    """
    cfg = compose_cfg("cv=kfold", "cv.folds=4", "trainer.patience=1", *SMALL)
    table = load_data(Recipe.of(cfg).data)
    plan = plan_for(Recipe.of(cfg), table)

    def fitted(poison: bool):
        torch.manual_seed(0)
        prepared = prepare(Recipe.of(cfg), table, plan, torch.device("cpu"))
        if poison:
            prepared.tests = [(torch.full_like(x, float("nan")), y) for x, y in prepared.tests]
        trainer = build_trainer(Recipe.of(cfg), prepared)
        trainer.fit()
        return trainer

    clean, poisoned = fitted(False), fitted(True)
    assert [m.best_epoch for m in clean.state.members] == [
        m.best_epoch for m in poisoned.state.members
    ]
    for key, value in clean.best_state().items():
        torch.testing.assert_close(poisoned.best_state()[key], value, rtol=0, atol=0)
    assert all(torch.isfinite(v).all() for v in poisoned.best_state().values())


def test_a_cv_run_reports_its_folds_and_leaves_an_ensemble(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg("cv=kfold", "cv.repeats=2", *SMALL)
    with caplog.at_level(logging.INFO, logger="pricenet"):
        metrics, artifacts = run(cfg, tmp_path / "run")
    block = metrics["cv"]
    assert (block["folds"], block["repeats"], block["members"], block["diverged"]) == (5, 2, 10, 0)
    accs = [m["test_acc"] for m in metrics["members"]]
    assert block["acc"]["mean"] == pytest.approx(np.mean(accs))
    assert block["acc"]["std"] == pytest.approx(np.std(accs, ddof=1))
    low, high = block["acc"]["ci95"]
    assert low < block["acc"]["mean"] < high
    assert metrics["test_acc"] == block["acc"]["mean"]
    assert sum(map(sum, block["confusion_matrix"])) == 400  # every row held out twice
    assert [m["fold"] for m in metrics["members"]] == [0, 1, 2, 3, 4] * 2
    assert metrics["headline"] in caplog.text and metrics["headline"].startswith("cv 5x2: acc ")
    assert json.loads(artifacts["metrics.json"].read_text())["cv"]["members"] == 10

    best = load_checkpoint(artifacts["best.pt"])
    assert best["network"]["members"] == 10
    assert len(best["preprocessors"]) == len(best["temperatures"]) == 10
    assert job_value(metrics) == block["acc"]["mean"]  # a sweep ranks by the CV mean


@pytest.mark.parametrize("loss", ["cross_entropy", "coral"])
def test_an_ensemble_predicts_the_mean_of_its_members(compose_cfg, tmp_path, loss):
    cfg = compose_cfg("cv=kfold", "cv.folds=3", f"loss={loss}", *SMALL)
    _, artifacts = run(cfg, tmp_path / "run")
    frame = make_synthetic(60, seed=11).to_frame().drop(columns=[LABEL])
    ensemble = Predictor.from_checkpoint(artifacts["best.pt"])
    payload = load_checkpoint(artifacts["best.pt"])
    payload.pop("format_version")
    members = []
    for m in range(3):
        single = {
            **payload,
            "network": {**payload["network"], "members": 1},
            "model": select_members(payload["model"], [m]),
            "preprocessors": [payload["preprocessors"][m]],
            "temperatures": [payload["temperatures"][m]],
            "epoch": payload["epoch"][m],
        }
        path = save_checkpoint(tmp_path / f"member{m}.pt", single)
        members.append(Predictor.from_checkpoint(path).predict_proba(frame))
    np.testing.assert_allclose(ensemble.predict_proba(frame), np.mean(members, axis=0), atol=1e-6)
    result = ensemble.predict(frame)
    assert list(result.columns) == ["id", LABEL, "prob_0", "prob_1", "prob_2", "prob_3"]


def test_an_ensemble_round_trips_through_the_predict_command(compose_cfg, tmp_path):
    from conftest import run_cli

    run(compose_cfg("cv=kfold", "cv.folds=3", *SMALL), tmp_path / "run")
    table = make_synthetic(50, seed=4)
    table.to_frame().to_csv(tmp_path / "rows.csv", index=False)
    result = run_cli(
        f"checkpoint={tmp_path / 'run'}",
        f"input={tmp_path / 'rows.csv'}",
        f"output={tmp_path / 'pred.csv'}",
        cwd=tmp_path,
        module="pricenet.predict",
    )
    assert result.returncode == 0, result.stderr
    import pandas as pd

    pred = pd.read_csv(tmp_path / "pred.csv")
    expected = Predictor.from_checkpoint(tmp_path / "run").predict(table.to_frame())
    assert pred[LABEL].tolist() == expected[LABEL].tolist()
    assert f"accuracy {(pred[LABEL].to_numpy() == table.labels).mean():.4f}" in result.stdout


def test_seeds_report_their_spread_and_keep_their_ensemble(compose_cfg, tmp_path):
    metrics, artifacts = run(compose_cfg("trainer.seeds=3", *SMALL), tmp_path / "run")
    assert metrics["seeds"]["seeds"] == 3 and metrics["seeds"]["acc"]["n"] == 3
    assert [m["seed"] for m in metrics["members"]] == [0, 1, 2]
    assert len({m["test_acc"] for m in metrics["members"]} | {-1}) >= 2
    assert len({(m["rows"]["test"]) for m in metrics["members"]}) == 1  # one shared split
    assert load_checkpoint(artifacts["best.pt"])["network"]["members"] == 3
    # The ensemble's accuracy on the shared test split is the kept model's, as predict sees it.
    cfg = compose_cfg("trainer.seeds=3", *SMALL)
    table = load_data(Recipe.of(cfg).data)
    test = plan_for(Recipe.of(cfg), table)[0].test
    frame = table.to_frame().iloc[test]
    predicted = Predictor.from_checkpoint(artifacts["best.pt"]).predict(frame)[LABEL].to_numpy()
    expected = float((predicted == frame[LABEL].to_numpy()).mean())
    assert metrics["seeds"]["ensemble_acc"] == pytest.approx(expected)


def test_keep_refit_and_none(compose_cfg, tmp_path):
    _, refit = run(compose_cfg("cv=kfold", "cv.folds=3", "cv.keep=refit", *SMALL), tmp_path / "a")
    assert load_checkpoint(refit["best.pt"])["network"]["members"] == 1
    assert Predictor.from_checkpoint(tmp_path / "a").members == 1
    _, none = run(compose_cfg("cv=kfold", "cv.folds=3", "cv.keep=none", *SMALL), tmp_path / "b")
    assert "best.pt" not in none and not (tmp_path / "b" / "best.pt").exists()


def test_plateau_falls_back_to_sequential_fits_and_says_so(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg("cv=kfold", "cv.folds=3", "scheduler=plateau", *SMALL)
    with caplog.at_level(logging.INFO, logger="pricenet"):
        metrics, _ = run(cfg, tmp_path / "run")
    assert "fitting 3 models sequentially, not packed: scheduler=plateau" in caplog.text
    assert metrics["cv"]["members"] == 3


def test_lbfgs_cv_runs_one_model_at_a_time(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg(
        "experiment=recommended", "cv=kfold", "cv.folds=3", "data.n_rows=400", *LEAN, shrink=False
    )
    with caplog.at_level(logging.INFO, logger="pricenet"):
        metrics, _ = run(cfg, tmp_path / "run")
    assert "not packed: optim=lbfgs" in caplog.text
    assert metrics["cv"]["acc"]["mean"] > 0.9


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["cv=kfold", "cv.folds=1"], ConfigError, "cv.folds=1 is invalid: must be an integer >= 2"),
        (["cv=kfold", "cv.repeats=0"], ConfigError, "cv.repeats=0 is invalid"),
        (["trainer.seeds=0"], ConfigError, "trainer.seeds=0 is invalid"),
        (["cv=kfold", "cv.keep=best"], ConfigError, "cv.keep='best' is invalid"),
        (["cv=kfold", "cv.folds=100", "data.n_rows=200"], ConfigError, "cv.folds=100"),
    ],
)
def test_bad_cv_settings_are_one_line_errors(compose_cfg, tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        run(compose_cfg(*SMALL, *overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "best.pt").exists()


def test_an_ensemble_whose_members_disagree_on_the_schema_is_refused(compose_cfg, tmp_path):
    _, artifacts = run(compose_cfg("cv=kfold", "cv.folds=3", *SMALL), tmp_path / "run")
    payload = load_checkpoint(artifacts["best.pt"])
    payload.pop("format_version")
    payload["preprocessors"][1]["numeric"] = list(reversed(payload["preprocessors"][1]["numeric"]))
    path = save_checkpoint(tmp_path / "odd.pt", payload)
    with pytest.raises(CheckpointError, match=r"odd\.pt: .*preprocessors\[1\]"):
        Predictor.from_checkpoint(path)


def test_a_diverged_member_is_reported_and_left_out_of_the_ensemble(
    compose_cfg, tmp_path, monkeypatch
):
    """One of fold 1's training rows holds an infinite value, so its loss is not finite from the
    first step: it is reported and excluded; the other folds make the summary and ensemble."""
    from pricenet.run import fits, pipeline

    real = fits.prepare

    def blown_up(*args, **kwargs):
        prepared = real(*args, **kwargs)
        if len(prepared.members) == 3:
            prepared.members[1].x_train[0, 0] = float("inf")
        return prepared

    monkeypatch.setattr(pipeline, "prepare", blown_up)
    cfg = compose_cfg("cv=kfold", "cv.folds=3", *SMALL)
    metrics, artifacts = run(cfg, tmp_path / "run")
    errors = [m["error"] for m in metrics["members"]]
    assert errors[0] is None and errors[2] is None
    assert "member 1: training diverged at epoch 1" in errors[1]
    assert metrics["cv"]["diverged"] == 1 and metrics["cv"]["acc"]["n"] == 2
    assert metrics["test_acc"] == pytest.approx(
        np.mean([metrics["members"][0]["test_acc"], metrics["members"][2]["test_acc"]])
    )
    assert load_checkpoint(artifacts["best.pt"])["network"]["members"] == 2


def test_the_config_is_read_once_and_the_network_and_head_built_once(
    compose_cfg, tmp_path, monkeypatch
):
    """After the recipe is read, the run never looks at the config again (it is emptied
    here), and a CV run sizes its network and builds its head once, not once per fit."""
    from pricenet.run import pipeline

    read = pipeline.Recipe.of
    calls = {"network": 0, "head": 0}

    def read_then_forget(cfg):
        recipe = read(cfg)
        with open_dict(cfg):
            for key in list(cfg.keys()):
                del cfg[key]
        return recipe

    def counted(name):
        original = getattr(pipeline.Recipe, name)

        def call(self, *args, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)

        return call

    monkeypatch.setattr(pipeline.Recipe, "of", staticmethod(read_then_forget))
    for name in calls:
        monkeypatch.setattr(pipeline.Recipe, name, counted(name))
    cfg = compose_cfg("cv=kfold", "cv.folds=3", "cv.keep=refit", *SMALL)
    metrics, artifacts = run(cfg, tmp_path / "run")
    assert len(cfg) == 0  # the run went on without it
    assert metrics["cv"]["members"] == 3 and artifacts["best.pt"].is_file()
    assert calls == {"network": 1, "head": 1}  # the refit reuses both
