"""PreprocessModule: the one preprocessing (training, Predictor, export, attributions) gives
the outputs of the numpy implementation it replaced, on every kind of column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from pricenet.errors import ConfigError, DataError
from pricenet.inference.predictor import Predictor
from pricenet.run.fits import load_data, plan_for, prepare
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe
from pricenet.tables import Feature, Preprocessor, Schema, validate_frame
from pricenet.tables.prep import MISSING_CODE, UNKNOWN_CODE, PreprocessModule

SCHEMA = Schema(
    (
        Feature("age", "numeric"),
        Feature("rooms", "integer"),
        Feature("flag", "binary"),
        Feature("color", "categorical", categories=("red", "green", "blue"), unknown="map"),
        Feature("size", "categorical", categories=("s", "m", "l")),
    ),
    "y",
    (0, 1),
    True,
)


def mixed(n: int, seed: int) -> pd.DataFrame:
    """Rows of every kind of column, with gaps in numeric, integer and categorical ones."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).astype(np.float32),
            "rooms": rng.integers(1, 7, n).astype(float),
            "flag": rng.integers(0, 2, n).astype(float),
            "color": rng.choice(["red", "green", "blue"], n).astype(object),
            "size": rng.choice(["s", "m", "l"], n).astype(object),
            "y": rng.integers(0, 2, n),
        }
    )
    frame.loc[[1, 7, n - 10], "age"] = np.nan
    frame.loc[[4], "rooms"] = np.nan
    frame.loc[[2, 9], "color"] = None
    frame.loc[[n - 1], "size"] = None
    return frame


def numpy_transform(prep: Preprocessor, frame: pd.DataFrame) -> np.ndarray:
    """The numpy implementation PreprocessModule replaced (pricenet before issue 17's item 4),
    kept as the reference: impute, standardize in float32, one-hot, was-missing."""
    n = len(frame)
    x = frame[list(prep.numeric_names)].to_numpy(dtype=np.float32)
    absent = np.isnan(x)
    x = np.where(absent, prep.numeric_fill, x)
    blocks = [(x - prep.numeric_mean) / prep.numeric_std]
    missing_of = {name: absent[:, i] for i, name in enumerate(prep.numeric_names)}
    for c in prep.categorical:
        column = frame[c.name].astype(object)
        gone = column.isna().to_numpy(dtype=bool)
        missing_of[c.name] = gone
        filled = column.where(~gone, c.fill).to_numpy(dtype=object)
        codes = pd.Index(c.categories, dtype=object).get_indexer(filled)
        codes[codes < 0] = len(c.categories)
        block = np.zeros((n, c.width), dtype=np.float32)
        block[np.arange(n), codes] = 1.0
        blocks.append(block)
    blocks += [missing_of[name].astype(np.float32)[:, None] for name in prep.indicators]
    return np.concatenate(blocks, axis=1)


@pytest.fixture
def fitted() -> tuple[Preprocessor, pd.DataFrame]:
    """A preprocessor fitted on 30 rows under impute, and 52 rows to transform: its own,
    and new ones with unknown colours (mapped) and gaps in every kind of column."""
    table = validate_frame(mixed(40, 0), SCHEMA, missing="impute")
    prep = Preprocessor.fit(table.frame.iloc[:30], SCHEMA, missing="impute")
    new = mixed(12, 1)
    new.loc[[0, 5], "color"] = "pink"
    new.loc[3, "age"] = np.nan
    new.loc[6, "size"] = None
    rows = pd.concat([table.frame, validate_frame(new, SCHEMA, missing="impute").frame])
    return prep, rows.reset_index(drop=True)


def test_every_kind_of_column_gives_the_old_numbers_bit_for_bit(fitted):
    prep, rows = fitted
    assert prep.indicators == ("age", "rooms", "color")  # size's gap is not in the 30 rows
    got = prep.transform(rows)
    expected = numpy_transform(prep, rows)
    assert got.dtype == np.float32 and got.shape == (52, 13) == expected.shape
    np.testing.assert_array_equal(got, expected)
    # spot checks the reference could share a mistake on
    names = prep.output_names
    pink = rows.index[rows["color"] == "pink"]
    assert got[pink, names.index("color=<unknown>")].tolist() == [1.0, 1.0]
    gaps = rows["age"].isna().to_numpy()
    assert (got[:, names.index("age:missing")] == gaps).all()
    filled = (prep.numeric_fill[0] - prep.numeric_mean[0]) / prep.numeric_std[0]
    assert (got[gaps, 0] == filled).all()
    size_gap = rows.index[rows["size"].isna()]
    fill_slot = names.index(f"size={prep.categorical[1].fill}")
    assert got[size_gap, fill_slot].tolist() == [1.0] * len(size_gap)


def test_the_module_reads_codes_and_marks_refused_rows():
    """unknown=error, missing=error: transform refuses in one line; forward (a graph cannot
    raise) still computes the row (an unknown value one-hots to zeros, a missing one to the
    training mode) and refused() marks it."""
    schema = Schema(
        (Feature("x", "numeric"), Feature("c", "categorical", categories=("a", "b"))),
        "y",
        (0, 1),
        True,
    )
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.4], "c": ["a", "b", "b"], "y": [0, 1, 0]})
    prep = Preprocessor.fit(frame, schema)
    module = prep.module()
    features = torch.tensor([[1.0], [2.0], [3.0]])
    codes = torch.tensor([[1], [UNKNOWN_CODE], [MISSING_CODE]])
    x = module(features, codes)[0]
    assert x[:, 1:].tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 1.0]]  # mode: b
    assert module.refused(codes).tolist() == [False, True, True]
    with pytest.raises(DataError, match=r"^column 'c', row 2: 'z' is not one of the categories"):
        prep.transform(frame.assign(c=["a", "z", "b"]))
    with pytest.raises(DataError, match=r"^column 'c': missing values need data.missing=impute"):
        prep.transform(frame.assign(c=["a", None, "b"]))
    with pytest.raises(DataError, match=r"^column 'x': missing values need data.missing=impute"):
        prep.transform(frame.assign(x=[1.0, np.nan, 2.0]))
    with pytest.raises(DataError, match=r"^column 'x', row 3: -3.4e\+38 overflows float32"):
        prep.transform(frame.assign(x=[1.0, 2.0, -3.4e38]))


def test_members_stack_and_must_share_one_layout(fitted):
    prep, rows = fitted
    other = Preprocessor.fit(rows.iloc[10:], SCHEMA, missing="impute", indicators=prep.indicators)
    stacked = PreprocessModule([prep, other]).transform(rows)
    assert stacked.shape == (2, 52, 13)
    np.testing.assert_array_equal(stacked[0].numpy(), prep.transform(rows))
    np.testing.assert_array_equal(stacked[1].numpy(), numpy_transform(other, rows))
    narrow = Preprocessor.fit(rows.iloc[:30], SCHEMA, missing="impute", indicators=["age"])
    with pytest.raises(ConfigError, match=r"^preprocessors\[1\]: its inputs .* differ from"):
        PreprocessModule([prep, narrow])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace
def test_traced_module_equals_eager(fitted):
    prep, rows = fitted
    module = prep.module().eval()
    features, codes = module.inputs(rows)
    traced = torch.jit.trace(module, (features, codes), check_trace=False)
    half = slice(0, 17)  # another batch size than traced with
    torch.testing.assert_close(
        traced(features[half], codes[half]), module(features[half], codes[half]), rtol=0, atol=0
    )


def test_training_predictor_and_export_run_the_same_module(compose_cfg, tmp_path):
    """prepare() gives each member the module's output on its rows, bit for bit the old
    numpy path; the Predictor's probability module holds the same PreprocessModule."""
    cfg = compose_cfg("cv=kfold", "cv.folds=2")
    table = load_data(Recipe.of(cfg).data)
    plan = plan_for(Recipe.of(cfg), table)
    prepared = prepare(Recipe.of(cfg), table, plan, torch.device("cpu"))
    for member, prep, data in zip(plan, prepared.preprocessors, prepared.members, strict=True):
        expected = numpy_transform(prep, table.frame.iloc[member.train])
        np.testing.assert_array_equal(data.x_train.numpy(), expected)
        np.testing.assert_array_equal(
            data.x_val.numpy(), numpy_transform(prep, table.frame.iloc[member.val])
        )

    run(compose_cfg("report.plots=false"), tmp_path / "run")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    module = predictor.probability_module()
    assert isinstance(predictor.preprocess, PreprocessModule)
    assert module.preprocess is predictor.preprocess
    frame = instantiate(cfg.data.source).to_frame()
    features = torch.from_numpy(frame[list(predictor.feature_names)].to_numpy(np.float32))
    with torch.no_grad():
        np.testing.assert_array_equal(module(features).numpy(), predictor.predict_proba(frame))
