"""Learned embeddings of categorical features with many values (issue 19, item 3).

A categorical feature with more categories than ``data.category_embedding.above`` reaches the
network as one code column, looked up in a learned table per fit, instead of a one-hot block:
the lookup is torch's ``nn.Embedding`` fit by fit, fits share nothing, the code column follows
the one-hot rules (unknown slot, missing as the fill), the choice survives the checkpoint,
the Predictor and ONNX, and crafted checkpoints and bad settings are one-line errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_refused_before_the_run
from torch import nn

from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from pricenet.errors import CheckpointError, ConfigError
from pricenet.inference.predictor import Predictor
from pricenet.nn.categories import PackedCategoryEmbedding
from pricenet.nn.network import Network
from pricenet.nn.spec import NetworkSpec
from pricenet.run.pipeline import run
from pricenet.tables.prep import Preprocessor
from pricenet.tables.schema import Feature, Schema

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
CITIES = 40


def _cities(rows: int, seed: int = 0) -> pd.DataFrame:
    """A table whose label depends mostly on a 40-valued ``city``, a little on ``x``."""
    rng = np.random.default_rng(seed)
    city = rng.integers(0, CITIES, rows)
    effect = rng.normal(0, 1.5, CITIES)
    x = rng.normal(size=rows)
    score = effect[city] + 0.5 * x + rng.normal(0, 0.3, rows)
    return pd.DataFrame(
        {
            "city": [f"c{c:02d}" for c in city],
            "x": x,
            "color": rng.choice(["red", "green", "blue"], rows),
            "y": np.digitize(score, [-1.0, 0.0, 1.0]),
        }
    )


@pytest.fixture
def cities_csv(tmp_path):
    path = tmp_path / "cities.csv"
    _cities(600).to_csv(path, index=False)
    return path


def _schema(unknown: str = "error") -> Schema:
    return Schema(
        features=(
            Feature("x", "numeric"),
            Feature("city", "categorical", categories=tuple(f"c{c:02d}" for c in range(CITIES))),
            Feature("color", "categorical", categories=("blue", "green", "red"), unknown=unknown),
        ),
        label="y",
        classes=(0, 1, 2, 3),
        ordered=True,
    )


# ------------------------------------------------------------------ the packed lookup


def test_each_fit_is_torchs_embedding_of_its_own_table():
    torch.manual_seed(0)
    layer = PackedCategoryEmbedding(3, [5, 7], 4)
    codes = torch.stack([torch.randint(0, 5, (3, 11)), torch.randint(0, 7, (3, 11))], -1)
    out = layer(codes.float())
    assert out.shape == (3, 11, 8)
    for m in range(3):
        for j, (start, size) in enumerate([(0, 5), (5, 7)]):
            oracle = nn.Embedding(size, 4)
            with torch.no_grad():
                oracle.weight.copy_(layer.weight[m, start : start + size])
            expected = oracle(codes[m, :, j])
            torch.testing.assert_close(out[m, :, 4 * j : 4 * j + 4], expected, rtol=0, atol=0)


def test_a_fit_starts_the_same_in_any_packing_and_shares_nothing():
    packed = PackedCategoryEmbedding(3, [6], 2)
    packed.init_members([torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    alone = PackedCategoryEmbedding(1, [6], 2)
    alone.init_members([torch.Generator().manual_seed(9)])
    torch.testing.assert_close(packed.weight[2], alone.weight[0], rtol=0, atol=0)
    bound = 1 / 2**0.5  # uniform in +-1/sqrt(d)
    assert packed.weight.abs().max() <= bound and packed.weight.abs().max() > 0.5 * bound
    # a gradient on fit 0's output reaches fit 0's table only
    packed(torch.tensor([[1.0], [4.0]]))[0].sum().backward()
    grad = packed.weight.grad
    assert grad[0].abs().sum() > 0 and not grad[1:].any()
    assert grad[0, [1, 4]].abs().sum() == grad[0].abs().sum()  # only the rows looked up


def test_a_code_outside_its_features_range_is_clamped_into_it():
    layer = PackedCategoryEmbedding(2, [3, 4], 2)
    wild = layer(torch.tensor([[-5.0, 99.0]]))
    tame = layer(torch.tensor([[0.0, 3.0]]))
    torch.testing.assert_close(wild, tame, rtol=0, atol=0)


# ------------------------------------------------------------------ the code column


def test_a_feature_over_the_threshold_becomes_one_code_column_last():
    frame = _cities(200)
    prep = Preprocessor.fit(frame, _schema(), embed_above=16)
    assert [c.embedded for c in prep.categorical] == [True, False]
    assert prep.embedded_sizes == (CITIES,)
    assert prep.width == 1 + 3 + 1  # x, color's one-hot, city's code
    assert prep.output_names == ("x", "color=blue", "color=green", "color=red", "city")
    x = prep.transform(frame)
    expected = frame["city"].str[1:].astype(int).to_numpy(np.float32)
    np.testing.assert_array_equal(x[:, -1], expected)
    # null: one-hot as before; 2: color's three categories are over it too
    assert Preprocessor.fit(frame, _schema(), embed_above=None).width == 1 + CITIES + 3
    low = Preprocessor.fit(frame, _schema(), embed_above=2)
    assert low.embedded_sizes == (CITIES, 3) and low.width == 3
    assert low.output_names == ("x", "city", "color")


def test_missing_and_unknown_values_take_the_fill_and_the_unknown_slot():
    frame = _cities(200)
    frame.loc[frame.index[:3], "color"] = None
    prep = Preprocessor.fit(frame, _schema(unknown="map"), embed_above=2, missing="impute")
    assert prep.embedded_sizes == (CITIES, 4)  # color: 3 categories and the unknown slot
    fill = ("blue", "green", "red").index(prep.categorical[1].fill)
    rows = frame.iloc[:5].copy()
    rows.loc[rows.index[3], "color"] = "purple"
    x = prep.transform(rows)
    assert x[:3, -1].tolist() == [fill] * 3
    assert x[3, -1] == 3  # the unknown slot, after the categories
    assert x[:, prep.output_names.index("color:missing")].tolist() == [1, 1, 1, 0, 0]


def test_the_state_round_trips_and_an_older_state_is_one_hot():
    frame = _cities(200)
    prep = Preprocessor.fit(frame, _schema(), embed_above=16)
    state = prep.state_dict()
    again = Preprocessor.from_state_dict(state, "p", _schema())
    np.testing.assert_array_equal(again.transform(frame), prep.transform(frame))
    for c in state["categorical"]:
        del c["embedded"]
    assert Preprocessor.from_state_dict(state, "p").width == 1 + CITIES + 3
    state["categorical"][0]["embedded"] = "yes"
    with pytest.raises(ConfigError, match=r"p\.categorical\[0\]\.embedded: 'yes' is not true"):
        Preprocessor.from_state_dict(state, "p")


# ------------------------------------------------------------------ runs


def _train(compose_cfg, tmp_path, csv, *overrides):
    cfg = compose_cfg(
        "data=csv",
        f"data.path={csv}",
        "data.label=y",
        "trainer.epochs=25",
        "trainer.calibrate=false",
        *overrides,
        *LEAN,
    )
    metrics, _ = run(cfg, tmp_path / "run")
    return metrics, Predictor.from_checkpoint(tmp_path / "run")


def _spec(run_dir) -> NetworkSpec:
    return NetworkSpec.from_dict(load_checkpoint(run_dir / "best.pt")["network"])


@pytest.mark.parametrize(
    "model",
    [
        ("model.hidden=[32]",),
        (
            "model=tabm",
            "model.k=4",
            "model.width=32",
            "model.blocks=2",
            "embedding=piecewise_linear",
            "embedding.n_bins=8",
            "embedding.d_embedding=4",
        ),
    ],
    ids=["mlp", "tabm-ple"],
)
def test_a_run_embeds_the_city_and_round_trips_through_best_pt_and_onnx(
    compose_cfg, tmp_path, cities_csv, model
):
    metrics, predictor = _train(compose_cfg, tmp_path, cities_csv, *model, "cv=kfold", "cv.folds=3")
    network = predictor.network
    assert isinstance(network, Network) and network.categories is not None
    assert network.categories.sizes == (CITIES,) and network.categories.weight.shape[0] == 3
    assert _spec(tmp_path / "run").categories.d_embedding == 8
    frame = pd.read_csv(cities_csv)
    # the city's code is read: changing only the city changes the probabilities
    moved = frame.assign(city=frame["city"].map(lambda c: f"c{(int(c[1:]) + 1) % CITIES:02d}"))
    assert np.abs(predictor.predict_proba(moved) - predictor.predict_proba(frame)).max() > 0.05
    assert metrics["test_acc"] > 0.6  # 4 classes: the city carries most of the label

    pytest.importorskip("onnxruntime")
    from pricenet.export import main, onnx_inputs, onnx_session, read_schema

    main([f"checkpoint={tmp_path / 'run'}", f"output={tmp_path / 'model.onnx'}"])
    path = tmp_path / "model.onnx"
    got = onnx_session(path).run(None, onnx_inputs(read_schema(path), frame))[0]
    assert np.abs(got - predictor.predict_proba(frame)).max() <= 1e-5


def test_one_hot_and_embedding_differ_only_in_how_the_city_enters(
    compose_cfg, tmp_path, cities_csv
):
    _, hot = _train(compose_cfg, tmp_path / "a", cities_csv, "data.category_embedding.above=null")
    assert not isinstance(hot.network, Network)  # a plain MLP over 1 + 40 + 3 inputs
    spec = _spec(tmp_path / "a" / "run")
    assert spec.in_features == 1 + CITIES + 3 and spec.categories is None
    _, coded = _train(
        compose_cfg, tmp_path / "b", cities_csv, "data.category_embedding.d_embedding=3"
    )
    spec = _spec(tmp_path / "b" / "run")
    assert spec.in_features == 1 + 3 + 1 and spec.backbone_inputs == 1 + 3 + 3
    assert isinstance(coded.network, Network)


@pytest.fixture
def cities_run(compose_cfg, tmp_path, cities_csv):
    _train(compose_cfg, tmp_path, cities_csv, "model.hidden=[16]", "trainer.epochs=2")
    return tmp_path / "run"


def _flip_embedded(payload: dict) -> None:
    payload["preprocessors"][0]["categorical"][0]["embedded"] = False


def _sizes(value):
    def edit(payload: dict) -> None:
        payload["network"]["categories"]["sizes"] = value

    return edit


def _d(payload: dict) -> None:
    payload["network"]["categories"]["d_embedding"] = 10**6


def _weight(payload: dict) -> None:
    payload["model"]["categories.weight"] = payload["model"]["categories.weight"][:, :-1]


CRAFTED = {
    "one-hot preprocessor": (_flip_embedded, r"preprocessors\[0\] gives .* inputs|embeds \[40\]"),
    "size 0": (_sizes([0]), r"network\.categories\.sizes\[0\]: 0 is not in 1\.\.1000000"),
    "size 10**9": (_sizes([10**9]), r"network\.categories\.sizes\[0\]: 1000000000 is not in"),
    "sizes not a list": (_sizes("40"), r"network\.categories\.sizes: expected a list"),
    "other size": (_sizes([41]), r"network\.categories embeds \[41\]"),
    "d_embedding": (_d, r"network\.categories\.d_embedding: 1000000 is not in 1\.\.1024"),
    "weight shape": (_weight, r"categories\.weight.*shape"),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_checkpoints_are_refused_with_one_line(cities_run, tmp_path, case):
    edit, message = CRAFTED[case]
    payload = load_checkpoint(cities_run / "best.pt")
    payload.pop("format_version")
    Predictor.from_checkpoint(save_checkpoint(tmp_path / "clean.pt", payload))  # loads as is
    edit(payload)
    path = save_checkpoint(tmp_path / "best.pt", payload)
    with pytest.raises(CheckpointError, match=message) as caught:
        Predictor.from_checkpoint(path)
    assert "\n" not in str(caught.value), str(caught.value)


BAD = {
    "above -1": (("data.category_embedding.above=-1",), r"data\.category_embedding\.above=-1"),
    "d 0": (("data.category_embedding.d_embedding=0",), r"category_embedding\.d_embedding=0 is"),
    "budget": (
        ("data.category_embedding.d_embedding=1024", "trainer.max_parameters=20000"),
        r"over trainer\.max_parameters of 20,000",
    ),
    "tabular with coral": (
        ("experiment=tabular", "loss=coral"),
        r"loss\.label_smoothing=0\.1: only loss=cross_entropy smooths its targets .*; set "
        r"loss\.label_smoothing=0",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_settings_are_one_error_line_and_exit_2(
    compose_cfg, tmp_path, cities_csv, capsys, case
):
    overrides, message = BAD[case]
    cfg = compose_cfg("data=csv", f"data.path={cities_csv}", "data.label=y", *overrides, *LEAN)
    assert_refused_before_the_run(cfg, tmp_path / "run", message, capsys)


def test_the_city_is_explained_as_one_feature_and_matters_most(
    compose_cfg, tmp_path, cities_csv, capsys
):
    pytest.importorskip("captum")
    from pricenet.explain import main

    _train(compose_cfg, tmp_path, cities_csv)
    main(
        [
            "features",
            f"checkpoint={tmp_path / 'run'}",
            "method=feature_ablation",
            f"data={cities_csv}",
            f"out_dir={tmp_path / 'explain'}",
            "repeats=2",
        ]
    )
    assert "accuracy" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "explain" / "features.csv")
    assert set(table["feature"]) == {"city", "x", "color"}
    column = next(c for c in table.columns if c.endswith("_abs_mean"))
    ranked = table.sort_values(column, ascending=False)["feature"].tolist()
    assert ranked[0] == "city", table  # the label is mostly the city's


def test_a_text_column_of_more_values_than_max_categories_is_left_out(
    compose_cfg, tmp_path, caplog
):
    from pricenet.run.fits import load_data
    from pricenet.run.recipe import Recipe

    frame = _cities(300)
    frame["city"] = frame["city"].str.replace("c", "city-")  # 40 distinct texts
    path = tmp_path / "cities.csv"
    frame.to_csv(path, index=False)
    data = ("data=csv", f"data.path={path}", "data.label=y")
    table = load_data(Recipe.of(compose_cfg(*data, "data.max_categories=39")).data)
    assert table.schema.feature_names == ("x", "color")
    assert "column 'city': text with 40 distinct values (more than 39)" in caplog.text
    table = load_data(Recipe.of(compose_cfg(*data)).data)  # 50 by default
    assert table.schema.feature_names == ("city", "x", "color")
    with pytest.raises(ConfigError, match=r"data\.max_categories=0 is invalid"):
        Recipe.of(compose_cfg(*data, "data.max_categories=0"))


def test_a_cv_run_with_an_embedded_city_resumes_to_the_same_weights(
    compose_cfg, tmp_path, cities_csv
):
    settings = (
        "data=csv",
        f"data.path={cities_csv}",
        "data.label=y",
        "cv=kfold",
        "cv.folds=3",
        "trainer.device=cpu",
        "trainer.deterministic=true",
        "trainer.threads=1",
        "model.hidden=[16]",
        *LEAN,
    )
    full, artifacts = run(compose_cfg(*settings, "trainer.epochs=6"), tmp_path / "full")
    _, first = run(compose_cfg(*settings, "trainer.epochs=3"), tmp_path / "first")
    resume = f"trainer.resume={first['last.pt']}"
    resumed, again = run(compose_cfg(*settings, "trainer.epochs=6", resume), tmp_path / "again")
    assert resumed == full
    best = load_checkpoint(artifacts["best.pt"])["model"]
    restored = load_checkpoint(again["best.pt"])["model"]
    assert "categories.weight" in best
    for key, value in best.items():
        assert torch.equal(restored[key], value), key
