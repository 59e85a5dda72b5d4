"""Any table, not one (issue 10): tables no one here wrote, class values of any kind,
categorical features, missing values, and the phone-price numbers unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_cli

from pricenet.errors import ConfigError, DataError
from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
GOLDEN = Path(__file__).parent / "golden" / "default_metrics.json"


def sklearn_table(name: str, string_labels: bool = False) -> pd.DataFrame:
    """One of scikit-learn's bundled datasets as a frame with a ``target`` column."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    frame = pd.DataFrame(bunch.data, columns=[c.replace(" ", "_") for c in bunch.feature_names])
    frame["target"] = bunch.target_names[bunch.target] if string_labels else bunch.target
    return frame


def csv_cfg(compose_cfg, path: Path, *overrides: str):
    return compose_cfg(
        "data=csv", f"data.path={path}", "data.label=target", *LEAN, *overrides, shrink=False
    )


# --------------------------------------------------------------------------- the guard


def test_the_phone_price_defaults_give_the_same_numbers_as_before(compose_cfg, tmp_path):
    """The default run (synthetic phone data, mobile_price schema) reproduces the metrics it
    gave before the schema became a config (tests/golden): every count and accuracy to the
    last digit; losses to 1e-6 relative, since a float32 mean over rows may round one ulp
    apart on another CPU's vector width (seen: 0.20044826 here against 0.20044827)."""
    metrics, _ = run(compose_cfg("trainer.device=cpu", *LEAN, shrink=False), tmp_path / "run")
    golden = json.loads(GOLDEN.read_text())
    for key in ("val_acc", "test_acc", "test_macro_f1"):
        assert metrics[key] == golden[key], key
    for key in ("val_loss", "test_loss"):
        assert metrics[key] == pytest.approx(golden[key], rel=1e-6, abs=0), key
    for key in ("best_epoch", "epochs_run", "stopped_early", "parameters"):
        assert metrics[key] == golden[key], key
    assert metrics["test"]["confusion_matrix"] == golden["confusion_matrix"]
    assert metrics["history"]["train_loss"] == pytest.approx(golden["train_loss"], rel=1e-6, abs=0)
    assert metrics["history"]["val_acc"] == golden["val_acc_curve"]


# --------------------------------------------------------------------------- real tables


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "strings", "minimum"),
    [("iris", True, 0.85), ("wine", False, 0.85), ("breast_cancer", False, 0.9)],
)
def test_sklearn_tables_train_and_predict_through_the_commands(tmp_path, name, strings, minimum):
    frame = sklearn_table(name, strings)
    frame.to_csv(tmp_path / "table.csv", index=False)
    trained = run_cli(
        "data=csv",
        f"data.path={tmp_path / 'table.csv'}",
        "data.label=target",
        "trainer.epochs=60",
        "cv=kfold",
        "cv.folds=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        *LEAN,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    classes = sorted(set(frame["target"]))
    assert metrics["classes"] == classes
    assert metrics["cv"]["acc"]["mean"] >= minimum

    frame.drop(columns="target").to_csv(tmp_path / "rows.csv", index=False)
    predicted = run_cli(
        f"checkpoint={tmp_path / 'run'}",
        f"input={tmp_path / 'rows.csv'}",
        f"output={tmp_path / 'pred.csv'}",
        cwd=tmp_path,
        module="pricenet.predict",
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["id", "target", *[f"prob_{c}" for c in classes]]
    assert set(pred["target"]) <= set(classes)  # the original label values, strings included
    assert (pred["target"].to_numpy() == frame["target"].to_numpy()).mean() >= minimum
    assert pred["id"].tolist() == list(range(1, len(frame) + 1))


def test_integer_classes_not_starting_at_zero(compose_cfg, tmp_path):
    frame = sklearn_table("wine")
    frame["target"] = frame["target"] + 3  # wine-quality style: 3, 4, 5
    frame.to_csv(tmp_path / "wine.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "wine.csv", "trainer.epochs=40")
    metrics, artifacts = run(cfg, tmp_path / "run")
    assert metrics["classes"] == [3, 4, 5]
    assert sorted(metrics["test"]["per_class"]) == ["3", "4", "5"]
    assert metrics["test_acc"] >= 0.85
    result = Predictor.from_checkpoint(tmp_path / "run").predict(frame.drop(columns="target"))
    assert set(result["target"]) <= {3, 4, 5} and "prob_5" in result.columns
    assert (result["target"].to_numpy() == frame["target"].to_numpy()).mean() >= 0.85


def colour_table(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """A numeric feature and a categorical one that both carry the label."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, rows)
    colour = np.array(["red", "green", "blue"])[label]
    noisy = rng.random(rows) < 0.2
    colour[noisy] = rng.choice(["red", "green", "blue"], noisy.sum())
    return pd.DataFrame(
        {"size": label + rng.normal(0, 0.6, rows), "colour": colour, "target": label}
    )


def test_categorical_features_are_one_hot_and_unseen_values_are_named(compose_cfg, tmp_path):
    colour_table().to_csv(tmp_path / "colours.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "colours.csv", "trainer.epochs=40")
    metrics, _ = run(cfg, tmp_path / "run")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    assert predictor.schema.feature("colour").kind == "categorical"
    assert predictor.preprocessors[0].width == 1 + 3  # size + one column per colour
    assert metrics["test_acc"] >= 0.8

    rows = pd.DataFrame({"size": [0.1, 2.0, 1.0], "colour": ["red", "blue", "purple"]})
    with pytest.raises(DataError, match=r"column 'colour', row 2: 'purple' is not one of"):
        predictor.predict(rows)


def test_an_unknown_category_maps_to_unknown_when_the_schema_says_so(compose_cfg, tmp_path):
    colour_table().to_csv(tmp_path / "colours.csv", index=False)
    schema = {
        "label": "target",
        "classes": [0, 1, 2],
        "ordered": False,
        "features": [
            {"name": "size", "kind": "numeric"},
            {
                "name": "colour",
                "kind": "categorical",
                "categories": ["red", "green", "blue"],
                "unknown": "map",
            },
        ],
    }
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    cfg = csv_cfg(compose_cfg, tmp_path / "colours.csv", f"data.schema={tmp_path / 'schema.yaml'}")
    run(cfg, tmp_path / "run")
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    rows = pd.DataFrame({"size": [0.1, 2.0], "colour": ["purple", "blue"]})
    result = predictor.predict(rows)
    assert len(result) == 2 and predictor.preprocessors[0].width == 1 + 3 + 1


def holes_table(tmp_path: Path) -> Path:
    frame = colour_table(seed=1)
    frame["size"] = frame["size"].astype(object)
    frame.loc[[5, 17, 40], "size"] = ""
    frame.to_csv(tmp_path / "holes.csv", index=False)
    return tmp_path / "holes.csv"


def test_missing_values_are_refused_by_default_naming_file_column_line(compose_cfg, tmp_path):
    path = holes_table(tmp_path)
    with pytest.raises(DataError, match=r"holes\.csv: column 'size', line 7: empty cell"):
        run(csv_cfg(compose_cfg, path), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_values_are_imputed_from_training_rows_with_a_was_missing_input(
    compose_cfg, tmp_path
):
    path = holes_table(tmp_path)
    metrics, _ = run(
        csv_cfg(compose_cfg, path, "data.missing=impute", "trainer.epochs=30"), tmp_path / "run"
    )
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    prep = predictor.preprocessors[0]
    assert prep.indicators == ("size",) and "size:missing" in prep.output_names
    rows = pd.DataFrame({"size": [np.nan, 2.0], "colour": ["red", "blue"]})
    result = predictor.predict(rows)
    assert result["target"].notna().all()
    assert metrics["status"] == "done"


def test_an_ordinal_loss_on_unordered_classes_is_refused(compose_cfg, tmp_path):
    sklearn_table("iris", string_labels=True).to_csv(tmp_path / "iris.csv", index=False)
    cfg = csv_cfg(compose_cfg, tmp_path / "iris.csv", "loss=coral")
    with pytest.raises(ConfigError, match="reads the classes as ranks, but the schema's label"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- bad input


def _phone_csv(tmp_path: Path) -> Path:
    from pricenet.tables import make_synthetic

    make_synthetic(60, seed=2).to_frame().to_csv(tmp_path / "phones.csv", index=False)
    return tmp_path / "phones.csv"


BAD = {
    "label-missing": (["data.label=quality"], "column 'quality', line 1: missing from the header"),
    "one-class": ([], "every row has the value 1"),
    "schema-column-missing": (
        ["data/schema=mobile_price", "data.path={tmp}/few.csv"],
        "column 'ram'",
    ),
    "text-in-numeric": (["data/schema=mobile_price", "data.path={tmp}/text.csv"], "'lots'"),
    "unknown-kind": (["data.schema={tmp}/odd.yaml"], "kind"),
}


@pytest.mark.slow
def test_bad_tables_are_one_line_errors_with_no_successful_run_folder(tmp_path):
    phones = pd.read_csv(_phone_csv(tmp_path))
    one = phones.copy()
    one["price_range"] = 1
    one.to_csv(tmp_path / "one.csv", index=False)
    phones.drop(columns=["ram"]).to_csv(tmp_path / "few.csv", index=False)
    text = phones.astype(object)
    text.loc[3, "ram"] = "lots"
    text.to_csv(tmp_path / "text.csv", index=False)
    (tmp_path / "odd.yaml").write_text(
        yaml.safe_dump(
            {
                "label": "price_range",
                "classes": [0, 1, 2, 3],
                "ordered": True,
                "features": [{"name": "ram", "kind": "fuzzy"}],
            }
        )
    )
    for case, (overrides, message) in BAD.items():
        data = tmp_path / ("one.csv" if case == "one-class" else "phones.csv")
        args = [o.format(tmp=tmp_path) for o in overrides]
        result = run_cli(
            "data=csv",
            f"data.path={data}",
            *args,
            f"hydra.run.dir={tmp_path / case}",
            *LEAN,
            cwd=tmp_path,
        )
        assert result.returncode == 2, (case, result.stderr[-1500:])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (case, result.stderr[-1500:])
        metrics = tmp_path / case / "metrics.json"
        assert not metrics.exists() or json.loads(metrics.read_text())["status"] == "failed"


def test_predict_input_whose_columns_do_not_match_is_one_line(compose_cfg, tmp_path, capsys):
    from pricenet.predict import main

    run(compose_cfg(*LEAN), tmp_path / "run")
    pd.read_csv(_phone_csv(tmp_path)).drop(columns=["ram", "wifi"]).to_csv(
        tmp_path / "rows.csv", index=False
    )
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                f"checkpoint={tmp_path / 'run'}",
                f"input={tmp_path / 'rows.csv'}",
                f"output={tmp_path / 'out.csv'}",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'ram', 'wifi'" in err and "missing from the header" in err
    assert not (tmp_path / "out.csv").exists()
