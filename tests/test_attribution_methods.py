"""Captum's attribution methods (``method=``): each finds the feature that decides the label."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from pricenet.explain import main
from pricenet.inference.attribution import (
    METHODS,
    HeldOut,
    attribute,
    class_attributions,
    run_test_rows,
)
from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")


def _train(out: Path, *overrides: str) -> Path:
    """A run trained in ``out`` (composed here: module fixtures cannot use ``compose_cfg``)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose("config", overrides=["trainer.device=cpu", *LEAN, *overrides])
    GlobalHydra.instance().clear()
    run(cfg, out)
    return out


def _informative(n: int = 600) -> pd.DataFrame:
    """``signal`` decides the label (its quartile); three noise columns decide nothing."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "noise_a": rng.normal(0, 1, n).round(3),
            "signal": rng.normal(0, 1, n).round(3),
            "noise_b": rng.uniform(0, 10, n).round(3),
            "noise_c": rng.normal(5, 2, n).round(3),
        }
    )
    quartiles = np.quantile(frame["signal"], [0.25, 0.5, 0.75])
    frame["label"] = np.searchsorted(quartiles, frame["signal"])
    return frame


@pytest.fixture(scope="module")
def informative_run(tmp_path_factory) -> tuple[Predictor, HeldOut]:
    folder = tmp_path_factory.mktemp("informative")
    frame = _informative()
    frame.to_csv(folder / "rows.csv", index=False)
    _train(
        folder / "run",
        "data=csv",
        f"data.path={folder / 'rows.csv'}",
        "data.label=label",
        "trainer.epochs=40",
    )
    rows = HeldOut(frame.drop(columns="label"), frame["label"].to_numpy(), "memory")
    return Predictor.from_checkpoint(folder / "run"), rows


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_ranks_the_informative_feature_first(informative_run, method):
    predictor, rows = informative_run
    result = attribute(predictor, rows, method, repeats=3, steps=16, samples=5)
    table = result.table()
    assert table["feature"][0] == "signal", table
    assert table["permutation_mean"][0] > 0.3  # shuffled, about 3 rows in 4 change class
    if method == "permutation":
        assert [c for c in table.columns if "_abs_" in c] == []
        return
    prefix = METHODS[method][0]
    by_attribution = table.sort_values(f"{prefix}_abs_mean", ascending=False)
    assert by_attribution["feature"].tolist()[0] == "signal"
    # the signal's attribution well above every noise column's
    values = by_attribution[f"{prefix}_abs_mean"].to_numpy()
    assert values[0] > 2 * values[1], by_attribution
    assert [c for c in table.columns if c.startswith(f"{prefix}_abs_")] == [
        f"{prefix}_abs_{k}" for k in ("mean", 0, 1, 2, 3)
    ]


def test_integrated_gradients_equal_captums_on_per_row_outputs(informative_run):
    """The summed-batch forward (fast) gives what Captum gives on per-row outputs with target=."""
    from captum.attr import IntegratedGradients

    predictor, rows = informative_run
    module = predictor.probability_module()
    x = torch.tensor(rows.frame.to_numpy(np.float32))[:50]
    fast, _ = class_attributions("integrated_gradients", module, x, None, 4, steps=32)
    ig = IntegratedGradients(module)
    per_row = [
        ig.attribute(x, x.mean(dim=0, keepdim=True), target=k, n_steps=32, method="riemann_middle")
        for k in range(4)
    ]
    assert torch.allclose(fast, torch.stack(per_row, dim=1), atol=1e-6)
    assert fast.abs().max() > 0.1


def test_categorical_features_are_ablated_to_their_most_frequent_category(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {"alcohol": rng.normal(10, 1, n).round(2), "color": rng.choice(["red", "white"], n)}
    )
    frame["quality"] = (frame["alcohol"] > 10).astype(int) + (frame["color"] == "red") * 2
    frame.to_csv(tmp_path / "wine.csv", index=False)
    _train(
        tmp_path / "run",
        "data=csv",
        f"data.path={tmp_path / 'wine.csv'}",
        "data.label=quality",
        "trainer.epochs=30",
    )
    for method, prefix in (("feature_ablation", "ablation"), ("shapley_value_sampling", "shapley")):
        main(["features", f"checkpoint={tmp_path / 'run'}", f"method={method}", "repeats=2"])
        assert "categorical features" not in capsys.readouterr().out  # no IG-only note
        table = pd.read_csv(tmp_path / "run" / "features.csv").set_index("feature")
        # color moves two of the four classes: its attribution is defined and large
        assert table.loc["color", f"{prefix}_abs_mean"] > 0.1, table
        assert table.loc["alcohol", f"{prefix}_abs_mean"] > 0.01, table


def test_shapley_value_sampling_is_seeded(informative_run):
    predictor, rows = informative_run
    module = predictor.probability_module()
    x = torch.tensor(rows.frame.to_numpy(np.float32))[:60]

    def shapley(seed: int) -> torch.Tensor:
        return class_attributions(
            "shapley_value_sampling", module, x, None, 4, samples=3, seed=seed
        )[0]

    first = shapley(0)
    assert torch.equal(first, shapley(0))
    assert not torch.equal(first, shapley(1))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    shapley(2)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is left alone


def test_a_missing_value_has_no_attribution(tmp_path):
    frame = _informative(300)
    frame.loc[::5, "signal"] = np.nan
    frame.to_csv(tmp_path / "rows.csv", index=False)
    args = ("data=csv", f"data.path={tmp_path / 'rows.csv'}", "data.label=label")
    _train(tmp_path / "run", *args, "data.missing=impute", "trainer.epochs=10")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    rows = HeldOut(frame.drop(columns="label"), frame["label"].to_numpy(), "memory")
    x = torch.tensor(frame.drop(columns="label").to_numpy(np.float32))
    raw, _ = class_attributions("feature_ablation", predictor.probability_module(), x, None, 4)
    missing = x[:, 1].isnan()
    assert raw[missing][:, :, 1].abs().max() == 0  # Captum's: 0, which would dilute the mean
    result = attribute(predictor, rows, "feature_ablation", repeats=1)
    expected = raw[~missing][:, :, 1].abs().mean(dim=0).numpy()
    assert np.allclose(result.per_class[:, 1], expected) and expected.max() > 0.05
    for method in ("integrated_gradients", "shapley_value_sampling"):
        result = attribute(predictor, rows, method, repeats=1, steps=8, samples=3)
        assert np.isfinite(result.per_class).all(), (method, result.per_class)


def test_an_unknown_method_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "checkpoint=x", "method=lime", f"out_dir={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method='lime' is unknown: choose from integrated_gra" in err


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory) -> Path:
    from conftest import SHARED_CSV

    if not SHARED_CSV.is_file():
        pytest.skip(f"{SHARED_CSV} not present")
    folder = tmp_path_factory.mktemp("shared")
    return _train(folder / "run", "experiment=recommended", "data=csv", f"data.path={SHARED_CSV}")


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_ranks_ram_first_on_the_shared_data(shared_run, method):
    predictor = Predictor.from_checkpoint(shared_run)
    rows = run_test_rows(shared_run, predictor.schema)
    start = time.perf_counter()
    result = attribute(predictor, rows, method)
    seconds = time.perf_counter() - start
    table = result.table()
    column = f"{result.prefix}_abs_mean" if result.prefix else "permutation_mean"
    ranked = table.sort_values(column, ascending=False)
    top = ranked[["feature", column]].head(4).to_numpy().tolist()
    print(f"{method}: {seconds:.2f} s on {result.rows} rows; top 4 by {column}: {top}")
    assert ranked["feature"].iloc[0] == "ram", ranked.head(6)
    assert ranked[column].iloc[0] > 2 * ranked[column].iloc[1]


@pytest.mark.parametrize(
    ("method", "steps", "chunk"),
    [
        ("integrated_gradients", 16, 64),  # 4 rows of 16 steps a pass
        ("integrated_gradients", 100, 64),  # one row's steps over two passes
        ("feature_ablation", 16, 10),  # 2 rows of 4 perturbations (+ the rows themselves)
        ("shapley_value_sampling", 16, 10),
    ],
)
def test_attributions_run_a_bounded_number_of_rows_a_pass(informative_run, method, steps, chunk):
    predictor, rows = informative_run
    module = predictor.probability_module()
    x = torch.tensor(rows.frame.to_numpy(np.float32))[:37]
    passes: list[int] = []
    module.register_forward_pre_hook(lambda _m, args: passes.append(args[0].shape[0]))
    options = {"steps": steps, "samples": 3, "seed": 1}
    chunked, _ = class_attributions(method, module, x, None, 4, chunk_rows=chunk, **options)
    assert passes and max(passes) <= chunk, sorted(set(passes))
    passes.clear()
    whole, _ = class_attributions(method, module, x, None, 4, chunk_rows=10**6, **options)
    assert max(passes) == len(x) * (steps if method == "integrated_gradients" else 4)
    assert chunked.shape == whole.shape == (37, 4, 4)
    assert torch.allclose(chunked, whole, atol=1e-6), (chunked - whole).abs().max()
    assert chunked.abs().max() > 0.01
