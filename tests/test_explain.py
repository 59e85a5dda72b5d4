"""The tutorial's figures, drawn from pricenet's own configs; a model's feature importance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FEATURES, assert_png, full_disk_on_savefig

from pricenet.atomic import WriteError
from pricenet.errors import ConfigError
from pricenet.explain import ExplainOptions, explain, lr_curve, main, plot_ema
from pricenet.inference.attribution import (
    Attributions,
    HeldOut,
    class_attributions,
    permutation_importance,
    plot_features,
)
from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run
from pricenet.tables import make_synthetic

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")


def test_every_figure_is_a_valid_png(tmp_path):
    written = explain(
        ["activations", "schedulers", "ema"], ExplainOptions(out_dir=str(tmp_path), epochs=40)
    )
    assert [p.name for p in written] == ["activations.png", "schedulers.png", "ema.png"]
    for path in written:
        assert_png(path, min_size=(800, 500))


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("step", [1e-3] * 30 + [5e-4] * 30 + [2.5e-4] * 10),
        ("multistep", [1e-3] * 50 + [3e-4] * 20),
        ("none", [1e-3] * 70),
        # the made-up val accuracy is flat from epoch 17 on: patience 10, then halve
        ("plateau", [1e-3] * 28 + [5e-4] * 11 + [2.5e-4] * 11 + [1.25e-4] * 11 + [6.25e-5] * 9),
    ],
)
def test_lr_curves_follow_the_scheduler_configs(compose_cfg, scheduler, expected):
    cfg = compose_cfg(f"scheduler={scheduler}", "trainer.epochs=70", "optim.lr=0.001")
    assert lr_curve(cfg, 70) == pytest.approx(expected)


def permutation_only(features: list[str]) -> Attributions:
    """Hand-made attributions of ``features`` (no model needed to draw them)."""
    drops = np.linspace(0.3, 0.0, len(features))
    return Attributions(
        features=features,
        classes=[0, 1, 2, 3],
        method="permutation",
        baseline_accuracy=0.9,
        permutation_mean=drops,
        permutation_std=drops / 10,
        per_class=None,
        rows=100,
        repeats=5,
        source="hand-made",
    )


@pytest.mark.parametrize("figure", ["ema", "features"])
def test_a_figure_is_written_whole_or_not_at_all(tmp_path, monkeypatch, figure):
    """explain's and the attributions' figures go through plots.save_png: a drawing that
    fails half-way (a full disk) keeps the old picture and is one WriteError line."""
    path = tmp_path / f"{figure}.png"
    draw = {
        "ema": lambda: plot_ema(path),
        "features": lambda: plot_features(permutation_only(FEATURES), path),
    }[figure]
    assert_png(draw(), min_size=(600, 400))
    old = path.read_bytes()
    full_disk_on_savefig(monkeypatch)
    with pytest.raises(WriteError, match="No space left on device"):
        draw()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_command_draws_only_the_named_figure(tmp_path, capsys):
    main(["ema", f"out_dir={tmp_path}"])
    assert [p.name for p in tmp_path.iterdir()] == ["ema.png"]
    assert f"wrote {tmp_path / 'ema.png'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["losses"], "unknown figure 'losses'"), (["epochs=0"], "epochs=0 is invalid")],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"out_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- features


@pytest.mark.parametrize("figure", ["ema", "features"])
def test_unwritable_out_dir_fails_before_any_work(tmp_path, capsys, figure):
    (tmp_path / "afile").write_text("x")
    for out_dir, message in (
        ("/proc/pricenet-no/explain", "out_dir=/proc/pricenet-no/explain: cannot write in /proc"),
        (str(tmp_path / "afile"), "is not a directory"),
    ):
        # the checkpoint does not exist: the folder is refused before it is looked at
        args = [figure, f"out_dir={out_dir}", "checkpoint=/nonexistent/best.pt"]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["features"], "features: missing checkpoint=..."),
        (["features", "checkpoint=x", "repeats=0"], "repeats=0 is invalid"),
        (["features", "checkpoint=x", "steps=0"], "steps=0 is invalid"),
    ],
)
def test_bad_feature_options_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"out_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


class _RamOnly:
    """A stand-in predictor whose label depends on ram alone."""

    feature_names = ["ram", "blue"]
    label_name = "price_range"
    class_labels = [0, 1]

    def predict(self, frame):
        return pd.DataFrame({"price_range": (frame["ram"].to_numpy() > 0.5).astype(int)})


def test_permutation_importance_sees_only_the_feature_used():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"ram": rng.random(400), "blue": rng.integers(0, 2, 400)})
    rows = HeldOut(frame, (frame["ram"].to_numpy() > 0.5).astype(int), "memory")
    base, mean, std = permutation_importance(_RamOnly(), rows, repeats=5, seed=1)
    assert base == 1.0
    assert mean[1] == 0.0 and std[1] == 0.0  # shuffling blue changes no prediction
    assert 0.4 < mean[0] < 0.6 and std[0] > 0  # shuffled ram: about half the rows wrong


def test_integrated_gradients_of_a_linear_map_are_exact():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    ig, _ = class_attributions("integrated_gradients", layer, x, None, 2, steps=4)
    expected = layer.weight.detach()[None] * (x - x.mean(dim=0))[:, None, :]  # baseline: mean
    assert torch.allclose(ig, expected, atol=1e-6)


def test_integrated_gradients_add_up_to_the_change_in_probability(compose_cfg, tmp_path):
    run(compose_cfg("report.plots=false", "model=mlp"), tmp_path / "run")
    module = Predictor.from_checkpoint(tmp_path / "run").probability_module()
    x = torch.tensor(make_synthetic(50, seed=3).frame.to_numpy(np.float32))
    ig, _ = class_attributions("integrated_gradients", module, x, None, 4, steps=256)
    with torch.no_grad():
        change = module(x) - module(x.mean(dim=0, keepdim=True))
    assert ig.shape == (50, 4, 20)
    assert (ig.sum(dim=2) - change).abs().max() < 2e-3  # completeness
    assert change.abs().max() > 0.05  # and it is not trivially 0 = 0


def test_features_on_a_labelled_csv_and_the_run_folder_default(compose_cfg, tmp_path, capsys):
    run(compose_cfg("report.plots=false"), tmp_path / "run")
    make_synthetic(120, seed=7).to_frame().to_csv(tmp_path / "rows.csv", index=False)
    main(["features", f"checkpoint={tmp_path / 'run'}", f"data={tmp_path / 'rows.csv'}"])
    out = capsys.readouterr().out
    assert f"{tmp_path / 'rows.csv'} (120 rows)" in out
    table = pd.read_csv(tmp_path / "run" / "features.csv")
    assert sorted(table["feature"]) == sorted(FEATURES)
    assert table["rank"].tolist() == list(range(1, 21))
    assert table["permutation_mean"].is_monotonic_decreasing
    assert [c for c in table.columns if c.startswith("ig_abs_")] == [
        "ig_abs_mean",
        "ig_abs_0",
        "ig_abs_1",
        "ig_abs_2",
        "ig_abs_3",
    ]
    assert_png(tmp_path / "run" / "features.png", min_size=(800, 500))


def test_features_need_labels_in_the_csv(compose_cfg, tmp_path, capsys):
    run(compose_cfg("report.plots=false"), tmp_path / "run")
    make_synthetic(30).to_frame(with_labels=False).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(SystemExit):
        main(["features", f"checkpoint={tmp_path / 'run'}", f"data={tmp_path / 'rows.csv'}"])
    assert "column 'price_range' missing" in capsys.readouterr().err


def test_top_features_on_the_shared_data(compose_cfg, real_csv, tmp_path, capsys):
    cfg = compose_cfg(
        "experiment=recommended",
        "data=csv",
        f"data.path={real_csv}",
        "report.plots=false",
        "trainer.device=cpu",
        shrink=False,
    )
    run(cfg, tmp_path / "run")
    main(["features", f"checkpoint={tmp_path / 'run' / 'best.pt'}", f"out_dir={tmp_path / 'x'}"])
    table = pd.read_csv(tmp_path / "x" / "features.csv")
    top = table["feature"].head(4).tolist()
    assert set(top) == {"ram", "battery_power", "px_height", "px_width"}, table.head(6)
    assert top[0] == "ram"
    # the 4th most important still clearly above the 5th
    assert table["permutation_mean"][3] > 3 * max(table["permutation_mean"][4], 0.01)
    assert "top features: ram" in capsys.readouterr().out


def _wine(path, n: int = 160) -> None:
    """A small table with a categorical feature that matters and a label named quality."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "alcohol": rng.normal(10, 1, n).round(2),
            "color": rng.choice(["red", "white"], n),
        }
    )
    frame["quality"] = (frame["alcohol"] > 10).astype(int) + (frame["color"] == "red") * 2 + 5
    frame.to_csv(path, index=False)


def test_a_model_with_categorical_features_is_explained(compose_cfg, tmp_path, capsys):
    _wine(tmp_path / "wine.csv")
    cfg = compose_cfg(
        "data=csv",
        f"data.path={tmp_path / 'wine.csv'}",
        "data.label=quality",
        *LEAN,
        "trainer.epochs=30",
    )
    run(cfg, tmp_path / "run")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    with pytest.raises(ConfigError, match="no numeric raw values"):  # what explain called before
        predictor.validate(pd.read_csv(tmp_path / "wine.csv"))

    main(["features", f"checkpoint={tmp_path / 'run'}", "repeats=3", "steps=8"])
    out = capsys.readouterr().out
    assert "categorical features (color) are ranked by permutation importance only" in out
    table = pd.read_csv(tmp_path / "run" / "features.csv").set_index("feature")
    assert table.loc["color", "permutation_mean"] > 0.1  # it decides two of the four classes
    assert np.isnan(table.loc["color", "ig_abs_mean"])
    assert table.loc["alcohol", "ig_abs_mean"] > 0


def test_the_data_csv_goes_through_the_hardened_reader(compose_cfg, tmp_path, capsys):
    run(compose_cfg(*LEAN), tmp_path / "run")
    rows = make_synthetic(40, seed=2).to_frame()
    rows.to_csv(tmp_path / "semicolons.csv", index=False, sep=";")
    assert len(pd.read_csv(tmp_path / "semicolons.csv").columns) == 1  # what explain read before
    main(["features", f"checkpoint={tmp_path / 'run'}", f"data={tmp_path / 'semicolons.csv'}"])
    assert "semicolons.csv (40 rows)" in capsys.readouterr().out

    bad = rows.astype(object)
    bad.iloc[2, bad.columns.get_loc("ram")] = "lots"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit):
        main(["features", f"checkpoint={tmp_path / 'run'}", f"data={tmp_path / 'bad.csv'}"])
    err = capsys.readouterr().err
    assert "bad.csv: column 'ram', line 4: 'lots' is not a number" in err, err
