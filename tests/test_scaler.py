"""data.scaler: standard, quantile (TabM's noisy quantiles to a normal) and robust (RealMLP's
median/IQR with smooth clipping), each against its scikit-learn oracle, fitted on training rows
only, stored in the checkpoint and inside the exported graph."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import train
from hydra.utils import instantiate
from scipy.special import ndtri
from sklearn.preprocessing import QuantileTransformer, RobustScaler

from pricenet.config.config import check_config
from pricenet.errors import ConfigError, exit_on_user_error
from pricenet.inference.predictor import Predictor
from pricenet.run.fits import load_data, plan_for, prepare
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe
from pricenet.tables import MOBILE_PRICE, Feature, Preprocessor, Schema, make_synthetic, read_csv
from pricenet.tables.prep import (
    PreprocessModule,
    lower_normal_quantile,
    quantile_fit_values,
    resolve_scaler,
)
from pricenet.tables.splits import stratified_split

ORACLE = 1e-5  # the brief's tolerance against scikit-learn (float32 output)
PARITY = 1e-5  # ONNX against the Predictor, as tests/test_export.py


def phone_rows(n: int = 600, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """The synthetic phone table and its training rows (a stratified split)."""
    table = make_synthetic(n, seed=seed)
    train_rows, _, _ = stratified_split(table.labels, 0.15, 0.15, 0)
    return table.frame, train_rows


def as_float32(frame: pd.DataFrame) -> np.ndarray:
    """What pricenet reads: float32 values (the oracles get the same, as float64)."""
    return frame.to_numpy(dtype=np.float32).astype(np.float64)


def quantile_oracle(frame: pd.DataFrame, train_rows: np.ndarray) -> np.ndarray:
    """scikit-learn's QuantileTransformer in TabM's setting, fitted on the same noisy values."""
    n = len(train_rows)
    oracle = QuantileTransformer(
        n_quantiles=max(min(n // 30, 1000), 10), output_distribution="normal", subsample=10**9
    )
    oracle.fit(quantile_fit_values(as_float32(frame.iloc[train_rows])))
    return oracle.transform(as_float32(frame))


def robust_oracle(frame: pd.DataFrame, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RobustScaler (an IQR of 0 replaced by the std, as documented) + the smooth clipping;
    also the columns whose IQR was 0."""
    fitted = as_float32(frame.iloc[train_rows])
    oracle = RobustScaler().fit(fitted)
    flat = np.percentile(fitted, 75, axis=0) == np.percentile(fitted, 25, axis=0)
    oracle.scale_ = np.where(flat, fitted.std(axis=0), oracle.scale_)
    z = oracle.transform(as_float32(frame))
    return z / np.sqrt(1 + (z / 3) ** 2), flat


# --------------------------------------------------------------------------- the oracles


def test_the_normal_quantile_function_is_scipys():
    p = torch.cat([torch.logspace(-7, np.log10(0.5), 20_000, dtype=torch.float64)])
    np.testing.assert_allclose(lower_normal_quantile(p).numpy(), ndtri(p.numpy()), atol=1e-13)


def test_quantile_matches_scikit_learn_on_training_and_other_rows():
    frame, train_rows = phone_rows()
    prep = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="quantile")
    got = prep.transform(frame)
    expected = quantile_oracle(frame, train_rows)
    assert np.abs(got[train_rows] - expected[train_rows]).max() <= ORACLE
    assert np.abs(got - expected).max() <= ORACLE  # held-out rows too: same interpolation
    # a continuous feature's training scores are a normal's: mean 0, std 1, within the clip
    ram = got[train_rows, list(MOBILE_PRICE.feature_names).index("ram")]
    assert abs(ram.mean()) < 0.01 and abs(ram.std() - 1) < 0.1
    assert np.abs(got).max() <= 5.2


def test_quantile_matches_scikit_learn_on_the_shared_data(real_csv):
    table = read_csv(real_csv, MOBILE_PRICE)
    train_rows, _, _ = stratified_split(table.labels, 0.15, 0.15, 0)
    prep = Preprocessor.fit(table.frame.iloc[train_rows], MOBILE_PRICE, scaler="quantile")
    expected = quantile_oracle(table.frame, train_rows)
    assert np.abs(prep.transform(table) - expected).max() <= ORACLE


def test_ties_spread_by_the_noise_map_to_the_middle_of_their_range():
    """n_cores takes 8 values: without the noise every tied row would map to one end."""
    frame, train_rows = phone_rows()
    prep = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="quantile")
    column = prep.numeric_names.index("n_cores")
    values = frame["n_cores"].to_numpy()[train_rows]
    got = prep.transform(frame.iloc[train_rows])[:, column]
    share_below = (values < 4).mean() + (values == 4).mean() / 2
    assert got[values == 4][0] == pytest.approx(ndtri(share_below), abs=0.05)


def test_robust_matches_scikit_learn_and_the_smooth_clipping():
    frame, train_rows = phone_rows()
    prep = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="robust")
    expected, flat = robust_oracle(frame, train_rows)
    assert np.abs(prep.transform(frame) - expected).max() <= ORACLE
    assert np.abs(prep.transform(frame)).max() < 3


def test_robust_spread_falls_back_to_the_std_then_one():
    schema = Schema((Feature("rare", "binary"), Feature("same", "numeric")), "y", (0, 1), True)
    frame = pd.DataFrame({"rare": [0.0] * 9 + [1.0] * 3 + [0.0] * 8, "same": [5.0] * 20})
    prep = Preprocessor.fit(frame, schema, scaler="robust")
    assert prep.numeric_std[0] == pytest.approx(np.std(frame["rare"]))  # IQR 0
    assert prep.numeric_std[1] == 1.0  # IQR 0, std 0
    np.testing.assert_array_equal(prep.transform(frame)[:, 1], 0.0)


@pytest.mark.parametrize("scaler", ["quantile", "robust"])
def test_a_constant_or_empty_training_column_maps_to_zero(scaler):
    schema = Schema((Feature("same", "numeric"), Feature("gone", "numeric")), "y", (0, 1), True)
    fit = pd.DataFrame({"same": [2.0] * 40, "gone": [np.nan] * 40})
    prep = Preprocessor.fit(fit, schema, scaler=scaler, missing="impute")
    rows = pd.DataFrame({"same": [2.0, -1e30, 1e30], "gone": [np.nan, 0.0, np.nan]})
    got = prep.transform(rows)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0, :2], [0.0, 0.0])


def numpy_reference(prep: Preprocessor, frame: pd.DataFrame) -> np.ndarray:
    """The numeric block as numpy computes it from the fitted statistics (float64)."""
    x = frame[list(prep.numeric_names)].to_numpy(dtype=np.float32).astype(np.float64)
    x = np.where(np.isnan(x), prep.numeric_fill.astype(np.float64), x)
    if prep.scaler == "quantile":
        columns = []
        for j, (knots, levels) in enumerate(zip(prep.knots, prep.levels, strict=True)):
            level = np.interp(x[:, j], knots, levels) if len(knots) > 1 else np.full(len(x), 0.5)
            columns.append(ndtri(np.clip(level, 1e-7, 1 - 1e-7)))
        return np.stack(columns, axis=1)
    z = (x - prep.numeric_mean) / prep.numeric_std
    return z / np.sqrt(1 + (z / 3) ** 2) if prep.scaler == "robust" else z


@pytest.mark.parametrize("scaler", ["standard", "quantile", "robust", "none"])
def test_the_torch_module_equals_the_numpy_path_with_gaps(scaler):
    """Imputed values are scaled like any other; beyond the training range both agree too."""
    frame, train_rows = phone_rows(400, seed=5)
    holes = frame.copy()
    holes.loc[holes.index[::7], "ram"] = np.nan
    holes.loc[holes.index[::11], "battery_power"] = np.nan
    holes.loc[holes.index[:3], "px_width"] = [-1e6, 1e7, 2.5e4]  # far outside training
    prep = Preprocessor.fit(holes.iloc[train_rows], MOBILE_PRICE, scaler=scaler, missing="impute")
    got = prep.transform(holes)[:, : len(prep.numeric_names)]
    np.testing.assert_allclose(got, numpy_reference(prep, holes), rtol=1e-6, atol=1e-6)


def test_standard_is_the_old_scaler_bit_for_bit():
    frame, train_rows = phone_rows()
    default = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE)
    named = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="standard")
    np.testing.assert_array_equal(named.transform(frame), default.transform(frame))
    off = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, standardize=False)
    assert off.scaler == "none"
    np.testing.assert_array_equal(off.transform(frame), frame.to_numpy(np.float32))


def test_members_with_different_knot_counts_share_one_module():
    """Padded knots: each member's slice is its own transform, to the bit."""
    frame, train_rows = phone_rows(900)
    small = Preprocessor.fit(frame.iloc[train_rows[:200]], MOBILE_PRICE, scaler="quantile")
    large = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="quantile")
    assert len(small.knots[0]) < len(large.knots[0])
    both = PreprocessModule([small, large]).transform(frame)
    np.testing.assert_array_equal(both[0].numpy(), small.transform(frame))
    np.testing.assert_array_equal(both[1].numpy(), large.transform(frame))
    robust = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="robust")
    with pytest.raises(ConfigError, match=r"^preprocessors\[1\]: its inputs .*scaler\) differ"):
        PreprocessModule([small, robust])


def test_far_values_saturate_instead_of_overflowing():
    """The input limits still refuse absurd values, but neither scaler can overflow: a
    quantile input is clipped at +-5.2 and a robust one tends to +-3."""
    frame, train_rows = phone_rows()
    far = frame.iloc[:2].copy()
    far["ram"] = [-3.0e38, 3.0e38]
    quantile = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="quantile")
    column = quantile.numeric_names.index("ram")
    np.testing.assert_allclose(quantile.transform(far)[:, column], [-5.19933758, 5.19933758])
    robust = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="robust")
    np.testing.assert_array_equal(robust.transform(far)[:, column], [-3.0, 3.0])
    low, high = robust.input_limits(1e6)
    median = np.median(frame["ram"].to_numpy(np.float32)[train_rows])
    assert (low[column] + high[column]) / 2 == pytest.approx(median)


# --------------------------------------------------------------------------- training rows only


@pytest.mark.parametrize("scaler", ["quantile", "robust"])
def test_poisoning_the_rows_a_fit_does_not_train_on_changes_nothing(compose_cfg, scaler):
    recipe = Recipe.of(compose_cfg(f"data.scaler={scaler}", "cv=kfold", "cv.folds=2"))
    assert recipe.data.scaler == scaler
    table = load_data(recipe.data)
    plan = plan_for(recipe, table)
    clean = prepare(recipe, table, plan, torch.device("cpu"))
    frame = table.frame.copy()
    held = np.setdiff1d(np.arange(len(frame)), plan[0].train)
    frame.iloc[held, :] = frame.iloc[held, :] * 1000 + 7
    poisoned = prepare(recipe, replace(table, frame=frame), plan, torch.device("cpu"))
    before, after = clean.preprocessors[0], poisoned.preprocessors[0]
    assert before.scaler == scaler
    for key, value in before.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(after.state_dict()[key], value, rtol=0, atol=0)
        elif key in ("knots", "levels"):
            for a, b in zip(after.state_dict()[key], value, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(poisoned.members[0].x_train, clean.members[0].x_train)
    # the control: member 1 trains on some of the poisoned rows, and its fit moved
    assert not np.array_equal(
        poisoned.preprocessors[1].numeric_std, clean.preprocessors[1].numeric_std
    )


# --------------------------------------------------------------------------- runs and checkpoints


@pytest.mark.parametrize("scaler", ["quantile", "robust"])
def test_a_run_trains_stores_and_predicts_with_the_scaler(compose_cfg, tmp_path, scaler):
    metrics, test_rows = train(
        compose_cfg, tmp_path / "run", f"data.scaler={scaler}", "trainer.epochs=12"
    )
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    prep = predictor.preprocessors[0]
    assert prep.scaler == scaler and (len(prep.knots) == 20) == (scaler == "quantile")
    probabilities = predictor.predict_proba(test_rows)
    labels = test_rows["price_range"].to_numpy()
    accuracy = (probabilities.argmax(axis=1) == labels).mean()
    assert accuracy == pytest.approx(metrics["test_acc"], abs=1e-9)
    assert accuracy > 0.6  # 4 classes: it learned something through the scaled inputs
    # the stored state, round-tripped, transforms like the fitted one
    back = Preprocessor.from_state_dict(prep.state_dict(), "prep", predictor.schema)
    np.testing.assert_array_equal(back.transform(test_rows), prep.transform(test_rows))


def test_a_state_written_before_scalers_loads_by_its_standardize():
    frame, train_rows = phone_rows(200)
    for standardize, scaler in ((True, "standard"), (False, "none")):
        prep = Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, standardize=standardize)
        state = prep.state_dict()
        old = {k: v for k, v in state.items() if k not in ("scaler", "knots", "levels")}
        old.update(version=1, standardize=standardize)
        back = Preprocessor.from_state_dict(old, "ckpt.prep", MOBILE_PRICE)
        assert back.scaler == scaler
        np.testing.assert_array_equal(back.transform(frame), prep.transform(frame))
    with pytest.raises(ConfigError, match=r"^ckpt.prep.knots: unknown key"):
        Preprocessor.from_state_dict({**old, "knots": []}, "ckpt.prep", MOBILE_PRICE)


def _quantile_state() -> dict:
    frame, train_rows = phone_rows(200)
    return Preprocessor.fit(frame.iloc[train_rows], MOBILE_PRICE, scaler="quantile").state_dict()


def _set_knot(j: int, value: float):
    def edit(state: dict) -> None:
        state["knots"][0] = state["knots"][0].clone()
        state["knots"][0][j] = value

    return edit


BAD_QUANTILE_STATES = [
    ("no-knots", lambda s: s.update(knots=[]), "ckpt.prep.knots: 0 entries, expected 20"),
    ("knots-not-list", lambda s: s.update(knots="x"), "ckpt.prep.knots: expected a list"),
    ("nan-knot", _set_knot(1, float("nan")), "ckpt.prep.knots[0]: has NaN or infinite"),
    ("unsorted", _set_knot(1, -1e9), "ckpt.prep.knots[0]: not strictly increasing"),
    (
        "int-knots",
        lambda s: s["knots"].__setitem__(0, torch.arange(3)),
        "ckpt.prep.knots[0]: expected a float tensor, got torch.int64",
    ),
    (
        "2d-knots",
        lambda s: s["knots"].__setitem__(0, torch.ones(2, 2)),
        "ckpt.prep.knots[0]: expected a 1-d float tensor",
    ),
    (
        "too-many",
        lambda s: s["knots"].__setitem__(0, torch.arange(2000.0)),
        "ckpt.prep.knots[0]: 2000 values, expected 1..1000",
    ),
    (
        "short-levels",
        lambda s: s["levels"].__setitem__(0, s["levels"][0][:-1]),
        "ckpt.prep.levels[0]:",
    ),
    (
        "level-above-1",
        lambda s: s["levels"].__setitem__(0, s["levels"][0] * 2),
        "ckpt.prep.levels[0]: not non-decreasing within [0, 1]",
    ),
    ("scaler-not-str", lambda s: s.update(scaler=1), "ckpt.prep.scaler: 1 is not one of"),
    ("knots-for-robust", lambda s: s.update(scaler="robust"), "ckpt.prep.knots: 20 entries"),
]


@pytest.mark.parametrize(
    ("edit", "message"),
    [c[1:] for c in BAD_QUANTILE_STATES],
    ids=[c[0] for c in BAD_QUANTILE_STATES],
)
def test_damaged_quantile_states_are_one_line_errors(edit, message):
    state = _quantile_state()
    edit(state)
    with pytest.raises(ConfigError) as caught:
        Preprocessor.from_state_dict(state, "ckpt.prep", MOBILE_PRICE)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("scaler", ["standard", "quantile", "robust"])
def test_onnx_graph_matches_the_predictor(compose_cfg, tmp_path, scaler):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from pricenet.export import INPUT, main, onnx_session, read_schema

    cfg = compose_cfg("report.plots=false", f"data.scaler={scaler}", "trainer.seeds=2")
    run(cfg, tmp_path / "run")
    frame = instantiate(cfg.data.source).to_frame()
    frame.loc[:2, "ram"] = [-100_000, 100_000, 4500]  # beyond the training range: the clamps
    main([f"checkpoint={tmp_path / 'run'}", f"output={tmp_path / 'model.onnx'}"])
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    expected = predictor.predict_proba(frame)
    features = frame[read_schema(tmp_path / "model.onnx").feature_names].to_numpy(np.float32)
    got = onnx_session(tmp_path / "model.onnx").run(None, {INPUT: features})[0]
    assert np.abs(got - expected).max() <= PARITY
    assert len(np.unique(got.round(6))) > 8  # real probabilities, not a constant


# --------------------------------------------------------------------------- config


def test_an_unknown_scaler_is_one_error_line(compose_cfg, tmp_path, capsys):
    cfg = compose_cfg("data.scaler=minmax")
    with pytest.raises(ConfigError, match="^data.scaler='minmax': expected one of standard, "):
        check_config(cfg)
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(run)(cfg, tmp_path / "run")
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: data.scaler='minmax': expected one of standard, quantile, robust, none\n"
    )
    assert not (tmp_path / "run" / "best.pt").exists()


def test_standardize_false_means_none_and_contradicts_the_others(compose_cfg):
    assert resolve_scaler("standard", standardize=False) == "none"
    assert resolve_scaler(None, standardize=True) == "standard"
    with pytest.raises(ConfigError, match="^data.standardize=false contradicts data.scaler=robust"):
        check_config(compose_cfg("data.standardize=false", "data.scaler=robust"))
    check_config(compose_cfg("experiment=tutorial", "data.scaler=none"))  # no complaint
