"""Preprocessor (fit on train only, impute, one-hot, state checks), splits, folds, synthetic."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from pricenet.errors import ConfigError, DataError
from pricenet.tables import (
    MOBILE_PRICE,
    Feature,
    Preprocessor,
    Schema,
    make_synthetic,
    stratified_kfold,
    stratified_split,
    validate_frame,
)

# --------------------------------------------------------------------------- synthetic


def test_synthetic_golden_checksum():
    table = make_synthetic(2000, 0.05, 0)
    digest = hashlib.sha256(table.numeric_array().tobytes() + table.labels.tobytes()).hexdigest()
    assert digest[:16] == GOLDEN


GOLDEN = "a215bdeefeae299f"


# --------------------------------------------------------------------------- preprocessor


def test_mobile_price_transform_is_the_standard_scaler_bit_for_bit():
    """(x - mean) / std with float32 torch reductions over the training rows, as pricenet
    always scaled: the mobile-price numbers did not move with the schema."""
    table = make_synthetic(500, seed=3)
    train, _, _ = stratified_split(table.labels, 0.15, 0.15, 0)
    x = torch.from_numpy(np.ascontiguousarray(table.frame.to_numpy(np.float32)))
    mean, std = x[train].mean(dim=0), x[train].std(dim=0, unbiased=False)
    prep = Preprocessor.fit(table.frame.iloc[train], MOBILE_PRICE)
    np.testing.assert_array_equal(prep.transform(table), ((x - mean) / std).numpy())
    assert prep.width == 20 and prep.output_names == MOBILE_PRICE.feature_names
    np.testing.assert_array_equal(prep.numeric_mean, mean.numpy())
    off = Preprocessor.fit(table.frame.iloc[train], MOBILE_PRICE, standardize=False)
    np.testing.assert_array_equal(off.transform(table), x.numpy())


SCHEMA = Schema(
    (
        Feature("age", "numeric"),
        Feature("flag", "binary"),
        Feature("color", "categorical", categories=("red", "green", "blue"), unknown="map"),
        Feature("size", "categorical", categories=("s", "m")),
    ),
    "y",
    (0, 1),
    True,
)


def frame_of(**columns) -> pd.DataFrame:
    base = {
        "age": [10.0, 20.0, np.nan, 40.0],
        "flag": [0, 1, 1, 0],
        "color": ["red", "blue", None, "blue"],
        "size": ["s", "m", "m", "s"],
        "y": [0, 1, 0, 1],
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_impute_one_hot_and_indicators():
    table = validate_frame(frame_of(), SCHEMA, missing="impute")
    prep = Preprocessor.fit(table, SCHEMA, missing="impute")
    assert prep.output_names == (
        "age",
        "flag",
        "color=red",
        "color=green",
        "color=blue",
        "color=<unknown>",
        "size=s",
        "size=m",
        "age:missing",
        "color:missing",
    )
    assert prep.numeric_fill[0] == pytest.approx(70 / 3)
    x = prep.transform(table)
    assert x.shape == (4, prep.width) and x.dtype == np.float32
    filled = np.array([10, 20, 70 / 3, 40])
    np.testing.assert_allclose(x[:, 0], (filled - filled.mean()) / filled.std(), rtol=1e-6)
    np.testing.assert_array_equal(
        x[:, 2:6], [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]]
    )
    np.testing.assert_array_equal(x[:, 8], [0, 0, 1, 0])
    np.testing.assert_array_equal(x[:, 9], [0, 0, 1, 0])
    unseen = validate_frame(frame_of(color=["pink", "red", "red", "red"]), SCHEMA, missing="impute")
    np.testing.assert_array_equal(prep.transform(unseen)[0, 2:6], [0, 0, 0, 1])


def test_fit_uses_training_rows_only():
    columns = {"age": [1.0, 2.0, 3.0, 1000.0], "color": ["red", "blue", "red", None]}
    table = validate_frame(frame_of(**columns), SCHEMA, missing="impute")
    prep = Preprocessor.fit(table.frame.iloc[:3], SCHEMA)
    assert prep.numeric_mean[0] == pytest.approx(2.0)
    assert prep.indicators == ()


def test_missing_values_need_impute():
    table = validate_frame(frame_of(), SCHEMA, missing="impute")
    with pytest.raises(DataError, match="column 'age': missing values need data.missing=impute"):
        Preprocessor.fit(table, SCHEMA)


def test_state_dict_round_trip_is_plain():
    table = validate_frame(frame_of(), SCHEMA, missing="impute")
    prep = Preprocessor.fit(table, SCHEMA, missing="impute")
    state = prep.state_dict()
    for key, value in state.items():
        assert isinstance(value, torch.Tensor | str | bool | int | list), key
    back = Preprocessor.from_state_dict(state, "ckpt.prep", SCHEMA)
    np.testing.assert_array_equal(back.transform(table), prep.transform(table))
    assert back.output_names == prep.output_names


def _state() -> dict:
    table = validate_frame(frame_of(), SCHEMA, missing="impute")
    return Preprocessor.fit(table, SCHEMA, missing="impute").state_dict()


BAD_STATES = [
    ("no-mean", lambda s: s.pop("mean"), "ckpt.prep.mean: missing"),
    ("extra-key", lambda s: s.update(code="x"), "ckpt.prep.code: unknown key"),
    ("wrong-width", lambda s: s.update(std=torch.ones(3)), "ckpt.prep.std: shape (3,), expected"),
    ("nan-std", lambda s: s.update(std=torch.tensor([np.nan, 1.0])), "ckpt.prep.std: has NaN"),
    ("zero-std", lambda s: s.update(std=torch.zeros(2)), "ckpt.prep.std: every value must be"),
    ("list-mean", lambda s: s.update(mean=[0.0, 0.0]), "ckpt.prep.mean: expected a float tensor"),
    (
        "int-mean",
        lambda s: s.update(mean=torch.zeros(2, dtype=torch.int64)),
        "ckpt.prep.mean: expected a float tensor, got torch.int64",
    ),
    ("bad-missing", lambda s: s.update(missing="drop"), "ckpt.prep.missing: 'drop' is not"),
    ("version", lambda s: s.update(version=3), "ckpt.prep.version: 3 is not 1 or 2"),
    ("bad-scaler", lambda s: s.update(scaler="minmax"), "ckpt.prep.scaler: 'minmax' is not one"),
    ("stray-knots", lambda s: s.update(knots=[torch.ones(2)]), "ckpt.prep.knots: 1 entries"),
    ("string-categorical", lambda s: s.update(categorical="x"), "ckpt.prep.categorical: expected"),
    (
        "fill-not-category",
        lambda s: s["categorical"][0].update(fill="pink"),
        "ckpt.prep.categorical[0].fill: 'pink' is not one of the categories",
    ),
    (
        "stray-indicator",
        lambda s: s.update(indicators=["zzz"]),
        "ckpt.prep.indicators: 'zzz' is not a feature",
    ),
    ("not-a-dict", lambda s: s.clear() or s.update(x=1), "ckpt.prep.x: unknown key"),
]


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in BAD_STATES], ids=[c[0] for c in BAD_STATES]
)
def test_from_state_dict_refuses_damaged_states(edit, message):
    state = _state()
    edit(state)
    with pytest.raises(ConfigError) as caught:
        Preprocessor.from_state_dict(state, "ckpt.prep", SCHEMA)
    assert str(caught.value).startswith(message), str(caught.value)


def test_from_state_dict_checks_the_schema():
    with pytest.raises(ConfigError, match="ckpt.prep.numeric: .* do not match the schema's"):
        Preprocessor.from_state_dict(_state(), "ckpt.prep", MOBILE_PRICE)
    with pytest.raises(ConfigError, match="^ckpt.prep: expected a mapping"):
        Preprocessor.from_state_dict([1, 2], "ckpt.prep")


# --------------------------------------------------------------------------- splits


# sha256 prefixes of (train, val, test) of the split pricenet has always made (before the
# tables package): the same rows for the same seed.
SPLITS = {
    0: ["9d7a9665ec66", "dd3ea50359f3", "03d224f30084"],
    1: ["4e939ae256bd", "3dc4d4486c0b", "8bfb56ca68ec"],
    17: ["706d6ea7c63e", "2dfa8b6c03f3", "2d8f4e0a4ac6"],
}


def test_stratified_split_is_unchanged():
    labels = make_synthetic(500, seed=2).labels
    for seed, expected in SPLITS.items():
        parts = stratified_split(labels, 0.15, 0.2, seed)
        assert [hashlib.sha256(p.tobytes()).hexdigest()[:12] for p in parts] == expected


def test_split_errors_name_the_label_and_class():
    with pytest.raises(DataError, match=r"^f: column 'quality': every row has class 5;"):
        stratified_split(
            np.zeros(10, dtype=np.int64), 0.1, 0.1, 0, source="f", label="quality", classes=(5, 6)
        )


def test_kfold_is_stratified_disjoint_and_covering():
    labels = np.repeat(np.arange(3), [30, 20, 11])
    folds = stratified_kfold(labels, 5, 2, seed=0, source="f")
    assert len(folds) == 10
    for r in range(2):
        tests = [test for _, test in folds[r * 5 : (r + 1) * 5]]
        np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(len(labels)))
        for train, test in folds[r * 5 : (r + 1) * 5]:
            assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == 61
            counts = np.bincount(labels[test], minlength=3)
            assert counts[0] == 6 and counts[1] == 4 and counts[2] in (2, 3)  # shares kept
    assert not np.array_equal(folds[0][1], folds[5][1])  # repeats reshuffle
    again = stratified_kfold(labels, 5, 2, seed=0, source="f")
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


@pytest.mark.parametrize(
    ("folds", "repeats", "message"),
    [
        (1, 1, "cv.folds=1: must be an integer of at least 2"),
        (3, 0, "cv.repeats=0: must be an integer of at least 1"),
        (12, 1, "cv.folds=12: f: class 2 has only 11 row(s); every fold needs one"),
        (True, 1, "cv.folds=True: must be an integer"),
    ],
)
def test_kfold_config_errors(folds, repeats, message):
    labels = np.repeat(np.arange(3), [30, 20, 11])
    with pytest.raises(ConfigError) as caught:
        stratified_kfold(labels, folds, repeats, seed=0, source="f")
    assert str(caught.value).startswith(message)
