"""Predict: the CSV command and the Python API reproduce the run's test accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from helpers import LABEL, train

from pricenet.errors import DataError
from pricenet.inference.predictor import Predictor
from pricenet.predict import main


@pytest.fixture
def trained(compose_cfg, tmp_path):
    return (tmp_path / "run", *train(compose_cfg, tmp_path / "run"))


def test_predict_round_trip_through_the_command(trained, tmp_path):
    run_dir, metrics, frame = trained
    held = frame.pop(LABEL).to_numpy()
    columns = list(np.random.default_rng(0).permutation(frame.columns))
    assert columns != list(frame.columns)
    frame[columns].to_csv(tmp_path / "test.csv", index=False)

    result = run_cli(
        f"checkpoint={run_dir / 'best.pt'}",
        f"input={tmp_path / 'test.csv'}",
        f"output={tmp_path / 'pred.csv'}",
        cwd=tmp_path,
        module="pricenet.predict",
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" not in result.stdout  # no labels in the input

    pred = pd.read_csv(tmp_path / "pred.csv", dtype={"id": str})
    assert list(pred.columns) == ["id", "price_range", "prob_0", "prob_1", "prob_2", "prob_3"]
    assert pred["id"].tolist() == frame["id"].tolist()
    assert (pred["price_range"].to_numpy() == held).mean() == metrics["test_acc"]
    probs = pred[[f"prob_{k}" for k in range(4)]].to_numpy()
    assert probs.sum(axis=1) == pytest.approx(np.ones(len(pred)), abs=1e-5)
    assert (probs.argmax(axis=1) == pred["price_range"].to_numpy()).all()


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "mse"])
def test_api_matches_test_accuracy_for_every_head(compose_cfg, tmp_path, loss):
    metrics, frame = train(compose_cfg, tmp_path / "run", f"loss={loss}")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    frame = frame.drop(columns="id").set_index(pd.Index(range(100, 100 + len(frame))))
    result = predictor.predict(frame)
    assert result.index.tolist() == frame.index.tolist()
    assert result["id"].tolist() == frame.index.tolist()
    assert (result[LABEL] == frame[LABEL]).mean() == metrics["test_acc"]
    assert predictor.predict_proba(frame).shape == (len(frame), 4)


@pytest.mark.parametrize(
    "loss",
    [
        "cross_entropy",
        "mse",
        "bce",
        "coral",
    ],
)
def test_probabilities_sum_to_one(compose_cfg, tmp_path, loss):
    _, frame = train(compose_cfg, tmp_path / "run", f"loss={loss}")
    proba = Predictor.from_checkpoint(tmp_path / "run").predict_proba(frame)
    assert proba.sum(axis=1) == pytest.approx(np.ones(len(frame)), abs=1e-5)


def test_labelled_csv_prints_accuracy_and_output_is_not_overwritten(trained, tmp_path, capsys):
    run_dir, metrics, frame = trained
    frame.to_csv(tmp_path / "labelled.csv", index=False)
    args = [f"checkpoint={run_dir}", f"input={tmp_path / 'labelled.csv'}"]
    main([*args, f"output={tmp_path / 'pred.csv'}"])
    assert f"accuracy {metrics['test_acc']:.4f}" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"output={tmp_path / 'pred.csv'}"])
    assert exit_info.value.code == 2
    assert "already exists; pass overwrite=true" in capsys.readouterr().err
    main([*args, f"output={tmp_path / 'pred.csv'}", "overwrite=true"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="ram"), "column 'ram', line 1: missing from the header"),
        (lambda f: f.rename(columns={"fc": "front_camera"}), "column 'fc'"),
    ],
)
def test_mismatched_columns_are_refused(trained, tmp_path, capsys, change, message):
    run_dir, _, frame = trained
    change(frame).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit) as exit_info:
        main([f"checkpoint={run_dir}", f"input={tmp_path / 'bad.csv'}", f"output={tmp_path}/o.csv"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint=x", "input=y"], "missing output=..."),
        (["chekpoint=x"], "Key 'chekpoint' not in"),
        (["best.pt"], "'best.pt': expected key=value"),
        (["checkpoint=nope.pt", "input=a.csv", "output=b.csv"], "nope.pt: checkpoint not found"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_dataframe_without_a_feature_is_refused(trained):
    run_dir, _, frame = trained
    with pytest.raises(DataError, match="column 'ram': missing from the DataFrame"):
        Predictor.from_checkpoint(run_dir).predict(frame.drop(columns="ram"))


def test_last_checkpoint_predicts_too(trained):
    run_dir, _, frame = trained
    result = Predictor.from_checkpoint(run_dir / "last.pt").predict(frame)
    assert len(result) == len(frame)


def test_a_dict_of_unequal_columns_is_one_data_error_quoting_pandas_first_line():
    from pricenet.inference.predictor import as_frame

    with pytest.raises(DataError) as refused:
        as_frame({"ram": [1, 2], "battery_power": [3]})
    assert str(refused.value) == (
        "rows given as a dict cannot form a table (All arrays must be of the same length)"
    )
