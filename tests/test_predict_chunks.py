"""The Predictor runs its model over at most ``PREDICT_ROWS`` rows at a time, and a row's
prediction does not depend on the rows that share its pass: chunked, per chunk and in one pass
give the same bits, for every kind of model (batch norm, temperatures, ensembles, TabM with
numeric embeddings, categorical inputs)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers import LABEL, train

from pricenet.errors import DataError
from pricenet.inference.predictor import Predictor
from pricenet.nn.spec import PREDICT_ROWS
from pricenet.tables import MOBILE_PRICE

ROWS = 3 * PREDICT_ROWS + 7
PROBS = [f"prob_{k}" for k in range(4)]
TABM = ("model=tabm", "model.k=4", "model.width=32", "model.blocks=2")
PLE = ("embedding=piecewise_linear", "embedding.n_bins=8", "embedding.d_embedding=4")

# Models whose every layer computes a row the same whatever rows share its pass.
EXACT = {
    "mlp_calibrated": ("trainer.calibrate=true",),
    "batch_norm": ("model.batch_norm=true", "model.dropout=0.2"),
    "cv_ensemble": ("cv=kfold", "cv.folds=3"),
    "coral_periodic": ("loss=coral", "embedding=periodic"),
}
# Models with a batched matmul (bmm) over few columns, whose CPU kernel rounds the rows of a
# pass's last partial block (a handful of rows) differently, and TabM's layers, which pick
# their arithmetic by the pass's size: a pass's full blocks are the same bits, its tail rows
# agree to float32 rounding.
ROUNDING = {
    "tabm_embedding": (*TABM, *PLE),
    "mlp_piecewise_linear": PLE,
}


def _many_rows(frame: pd.DataFrame, rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows resampled from ``frame``'s features, each jittered so no two are equal."""
    rng = np.random.default_rng(seed)
    features = frame[list(MOBILE_PRICE.feature_names)]
    many = features.iloc[rng.integers(0, len(features), rows)].reset_index(drop=True)
    numeric = [f.name for f in MOBILE_PRICE.features if f.kind == "numeric"]
    many[numeric] = many[numeric] * rng.uniform(0.95, 1.05, (rows, len(numeric)))
    return many


def _record_batches(predictor: Predictor) -> list[int]:
    """The row count of every forward pass of ``predictor``'s network, recorded."""
    sizes: list[int] = []
    predictor.network.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[1]))
    return sizes


def _predictions(compose_cfg, tmp_path, overrides) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small run's predictions of ROWS rows, chunked and in one pass; checks on the way
    that the passes are PREDICT_ROWS rows and the chunks are predict()'s of each chunk."""
    _, frame = train(compose_cfg, tmp_path / "run", *overrides)
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    many = _many_rows(frame)
    sizes = _record_batches(predictor)
    chunked = predictor.predict(many)
    assert sizes == [PREDICT_ROWS] * 3 + [7]
    assert chunked[LABEL].nunique() > 1  # a model that answers, not a constant

    pieces = [
        predictor.predict(many.iloc[start : start + PREDICT_ROWS])
        for start in range(0, ROWS, PREDICT_ROWS)
    ]
    pd.testing.assert_frame_equal(chunked, pd.concat(pieces), check_exact=True)
    proba = predictor.predict_proba(many)
    assert np.array_equal(proba, chunked[PROBS].to_numpy())

    predictor.chunk_rows = ROWS  # one pass over every row: what predict did before
    sizes.clear()
    whole = predictor.predict(many)
    assert sizes == [ROWS]
    return chunked, whole


@pytest.mark.parametrize("model", list(EXACT))
def test_chunked_predictions_are_the_bits_of_one_pass(compose_cfg, tmp_path, model):
    chunked, whole = _predictions(compose_cfg, tmp_path, EXACT[model])
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


@pytest.mark.parametrize("model", list(ROUNDING))
def test_chunked_predictions_of_bmm_models_agree_to_rounding(compose_cfg, tmp_path, model):
    chunked, whole = _predictions(compose_cfg, tmp_path, ROUNDING[model])
    full = 3 * PREDICT_ROWS  # the rows of full chunks: the one pass's bits
    pd.testing.assert_frame_equal(chunked.iloc[:full], whole.iloc[:full], check_exact=True)
    assert chunked[LABEL].tolist() == whole[LABEL].tolist()
    assert np.abs(chunked[PROBS].to_numpy() - whole[PROBS].to_numpy()).max() <= 1e-6


def test_a_categorical_table_predicts_the_same_in_chunks(compose_cfg, tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, 300)
    colours = np.array(["red", "green", "blue"])[label]
    table = pd.DataFrame({"size": label + rng.normal(0, 0.6, 300), "colour": colours})
    table.loc[[3, 9], "colour"] = ""
    table["target"] = label
    table.to_csv(tmp_path / "colours.csv", index=False)
    from pricenet.run.pipeline import run

    cfg = compose_cfg(
        "data=csv",
        f"data.path={tmp_path / 'colours.csv'}",
        "data.label=target",
        "data.missing=impute",
        "trainer.epochs=2",
        "report.plots=false",
    )
    run(cfg, tmp_path / "run")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    rows = 2 * PREDICT_ROWS + 1
    many = pd.DataFrame(
        {
            "size": rng.normal(1, 1, rows),
            "colour": rng.choice(["red", "green", "blue", None], rows),
        }
    )
    chunked = predictor.predict(many)
    predictor.chunk_rows = rows
    pd.testing.assert_frame_equal(chunked, predictor.predict(many), check_exact=True)


def test_chunks_are_the_chunk_size_and_errors_name_the_tables_row(compose_cfg, tmp_path):
    _, frame = train(compose_cfg, tmp_path / "run")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    predictor.chunk_rows = 100
    sizes = _record_batches(predictor)
    many = _many_rows(frame, 250)
    result = predictor.predict(many)
    assert sizes == [100, 100, 50] and len(result) == 250

    # a row the model overflows on, in the third chunk, is named by its row in the table
    sizes.clear()
    network = predictor.network
    original = network.forward

    def overflowing(x):
        out = original(x)
        if len(sizes) == 3:
            out[:, 10] = float("inf")
        return out

    network.forward = overflowing
    with pytest.raises(DataError, match=r"data row 211: the model's outputs are not finite"):
        predictor.predict(many)
    network.forward = original

    # an input that overflows once standardized (past the Predictor's clamp), also by its row
    table = predictor.table(many)
    frame = table.frame.copy()
    frame.loc[frame.index[230], "m_dep"] = -3.4e38
    with pytest.raises(DataError, match=r"^column 'm_dep', row 231: -3.4e\+38 overflows float32"):
        predictor.outputs(replace(table, frame=frame))


def test_predict_command_writes_every_chunk(compose_cfg, tmp_path):
    from pricenet.predict import main

    _, frame = train(compose_cfg, tmp_path / "run")
    many = _many_rows(frame, PREDICT_ROWS + 5)
    many.to_csv(tmp_path / "many.csv", index=False)
    main(
        [
            f"checkpoint={tmp_path / 'run'}",
            f"input={tmp_path / 'many.csv'}",
            f"output={tmp_path / 'pred.csv'}",
        ]
    )
    written = pd.read_csv(tmp_path / "pred.csv")
    expected = Predictor.from_checkpoint(tmp_path / "run").predict(many)
    assert written["id"].tolist() == list(range(1, len(many) + 1))
    assert written[LABEL].tolist() == expected[LABEL].tolist()
    assert np.abs(written[PROBS].to_numpy() - expected[PROBS].to_numpy()).max() <= 5e-7
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
