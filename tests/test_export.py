"""Export: onnxruntime and TorchScript reproduce the Predictor's probabilities for every head."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_cli
from helpers import FEATURES, LABEL
from hydra.utils import instantiate

from pricenet.errors import CheckpointError
from pricenet.export import (
    CATEGORIES,
    INPUT,
    ExportOptions,
    GraphMetadata,
    export,
    main,
    onnx_inputs,
    onnx_session,
    read_schema,
)
from pricenet.inference.predictor import Predictor
from pricenet.run.pipeline import run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

HEADS = ["cross_entropy", "bce", "coral", "mse", "l1", "smooth_l1"]
PARITY = 1e-5


def train_tiny(compose_cfg, run_dir, *overrides: str) -> pd.DataFrame:
    """Train a small run; return its whole synthetic table as a Kaggle frame."""
    cfg = compose_cfg("report.plots=false", *overrides)
    run(cfg, run_dir)
    return instantiate(cfg.data.source).to_frame().drop(columns=[LABEL])


def onnx_probabilities(path, frame: pd.DataFrame) -> np.ndarray:
    session = onnx_session(path)
    features = frame[read_schema(path).feature_names].to_numpy(dtype=np.float32)
    return session.run(None, {INPUT: features})[0]


@pytest.mark.parametrize("loss", HEADS)
def test_onnx_matches_predictor_for_every_head(compose_cfg, tmp_path, loss):
    frame = train_tiny(compose_cfg, tmp_path / "run", f"loss={loss}")
    main([f"checkpoint={tmp_path / 'run'}", f"output={tmp_path / 'model.onnx'}"])

    expected = Predictor.from_checkpoint(tmp_path / "run").predict_proba(frame)
    got = onnx_probabilities(tmp_path / "model.onnx", frame)
    assert got.shape == (200, 4)
    assert np.abs(got - expected).max() <= PARITY
    if loss in ("mse", "l1", "smooth_l1"):  # regression heads: one-hot on the decoded class
        assert set(np.unique(got)) <= {0.0, 1.0}
    else:
        assert len(np.unique(got.round(6))) > 8  # real probabilities, not a constant


def test_onnx_carries_the_schema_as_metadata(compose_cfg, tmp_path):
    train_tiny(compose_cfg, tmp_path / "run")
    path = export(ExportOptions(checkpoint=str(tmp_path / "run"), output=str(tmp_path / "m.onnx")))
    schema = read_schema(path)
    assert schema.feature_names == list(FEATURES)
    assert schema.class_labels == [0, 1, 2, 3]
    assert schema.label_name == LABEL
    session = onnx_session(path)
    (graph_input,) = session.get_inputs()
    assert graph_input.name == INPUT
    assert graph_input.shape[1] == len(FEATURES) and isinstance(graph_input.shape[0], str)


def test_onnx_parity_on_the_shared_data(compose_cfg, real_csv, tmp_path):
    cfg = compose_cfg(
        "experiment=recommended",
        "data=csv",
        f"data.path={real_csv}",
        "report.plots=false",
        "trainer.device=cpu",
        shrink=False,
    )
    metrics, _ = run(cfg, tmp_path / "run")
    assert metrics["test_acc"] >= 0.95
    main([f"checkpoint={tmp_path / 'run' / 'best.pt'}", f"output={tmp_path / 'model.onnx'}"])
    frame = pd.read_csv(real_csv)
    expected = Predictor.from_checkpoint(tmp_path / "run").predict_proba(frame)
    got = onnx_probabilities(tmp_path / "model.onnx", frame)
    assert got.shape == (len(frame), 4)
    assert np.abs(got - expected).max() <= PARITY
    accuracy = (got.argmax(axis=1) == frame[LABEL].to_numpy()).mean()
    assert accuracy >= 0.95


@pytest.mark.parametrize("loss", ["cross_entropy", "coral", "mse"])
def test_torchscript_matches_predictor(compose_cfg, tmp_path, loss):
    frame = train_tiny(compose_cfg, tmp_path / "run", f"loss={loss}")
    main([f"checkpoint={tmp_path / 'run'}", f"output={tmp_path / 'm.ts'}", "format=torchscript"])
    extra = {"pricenet.json": ""}
    module = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    meta = json.loads(extra["pricenet.json"])
    assert json.loads(meta["pricenet.feature_names"]) == list(FEATURES)
    features = torch.as_tensor(frame[list(FEATURES)].to_numpy(dtype=np.float32))
    with torch.no_grad():
        got = module(features).numpy()
    expected = Predictor.from_checkpoint(tmp_path / "run").predict_proba(frame)
    assert np.abs(got - expected).max() <= PARITY


@pytest.fixture
def tiny_run(compose_cfg, tmp_path):
    train_tiny(compose_cfg, tmp_path / "run")
    return tmp_path / "run"


def _exit_2(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_existing_output_needs_overwrite(tiny_run, tmp_path, capsys):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    err = _exit_2(capsys, [f"checkpoint={tiny_run}", f"output={target}"])
    assert "already exists; pass overwrite=true" in err
    assert target.read_bytes() == b"old"
    main([f"checkpoint={tiny_run}", f"output={target}", "overwrite=true"])
    assert target.read_bytes()[:2] != b"ol" and target.stat().st_size > 1000


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{tmp}", "is a directory"),
        ("/proc/pricenet-no/model.onnx", "folder /proc/pricenet-no does not exist"),
        ("/proc/model.onnx", "cannot write in /proc"),
        ("{tmp}/afile/model.onnx", "afile does not exist"),
    ],
)
def test_bad_output_paths_fail_before_loading(tmp_path, capsys, output, message):
    (tmp_path / "afile").write_text("x")
    # the checkpoint does not exist: the output is checked first
    args = ["checkpoint=/nonexistent/best.pt", f"output={output.format(tmp=tmp_path)}"]
    assert message in _exit_2(capsys, args)


def test_unknown_format_and_missing_checkpoint(tmp_path, capsys):
    err = _exit_2(capsys, ["checkpoint=x", f"output={tmp_path / 'm'}", "format=tflite"])
    assert "format=tflite: choose from onnx, torchscript" in err
    err = _exit_2(capsys, [f"checkpoint={tmp_path / 'none.pt'}", f"output={tmp_path / 'm'}"])
    assert "checkpoint not found" in err
    assert not (tmp_path / "m").exists()


class _Unexportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x[:, :4].reshape(-1, 2, 2)).reshape(-1, 4)


def test_a_graph_onnx_cannot_express_is_a_clear_error(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Predictor, "probability_module", lambda _self: _Unexportable())
    with pytest.raises(CheckpointError, match="cannot be exported to onnx.*linalg_inv"):
        export(ExportOptions(checkpoint=str(tiny_run), output=str(tmp_path / "m.onnx")))
    assert capsys.readouterr().out == ""  # torch's IR dump is silenced
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_command_line_writes_a_model(tiny_run, tmp_path):
    result = run_cli(
        f"checkpoint={tiny_run}",
        f"output={tmp_path / 'model.onnx'}",
        cwd=tmp_path,
        module="pricenet.export",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path / 'model.onnx'} (onnx, ")
    assert result.stderr == ""


@pytest.mark.parametrize("command", ["export", "serve"])
def test_crafted_checkpoints_are_refused_by_export_and_serve(tiny_run, tmp_path, capsys, command):
    """The entry points load through Predictor.from_checkpoint: a stored callable path is
    refused before anything is built (issue 13's guarantee, for these loaders too)."""
    import importlib

    from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint

    marker = tmp_path / "marker"
    payload = load_checkpoint(tiny_run / "best.pt")
    payload["head"] = {
        "_target_": "torch.nn.modules.module.torch.save",
        "_args_": [[1], str(marker)],
    }
    save_checkpoint(tmp_path / "crafted.pt", payload)
    entry = importlib.import_module(f"pricenet.{command}").main
    args = [f"checkpoint={tmp_path / 'crafted.pt'}"]
    args += [f"output={tmp_path / 'm.onnx'}"] if command == "export" else ["port=0"]
    with pytest.raises(SystemExit) as exit_info:
        entry(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'head'" in err, err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------- categorical schemas

COLOURS = ["red", "green", "blue"]


def colour_frame(rows: int = 240, seed: int = 0, holes: bool = False) -> pd.DataFrame:
    """A numeric feature and a categorical one that both carry the label; with ``holes``,
    a few empty cells in each."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, rows)
    colour = np.array(COLOURS, dtype=object)[label]
    noisy = rng.random(rows) < 0.2
    colour[noisy] = rng.choice(COLOURS, noisy.sum())
    frame = pd.DataFrame({"size": label + rng.normal(0, 0.6, rows), "colour": colour})
    frame["shade"] = np.where(rng.random(rows) < 0.5, "dark", "light").astype(object)
    frame["target"] = label
    if holes:
        frame["size"] = frame["size"].astype(object)
        frame.loc[[5, 17, 40], "size"] = ""
        frame.loc[[3, 22, 61], "colour"] = ""
    return frame


def train_colours(compose_cfg, tmp_path, unknown: str = "error", holes: bool = False):
    """Train on the colour table (schema: size numeric, colour and shade categorical)."""
    colour_frame(holes=holes).to_csv(tmp_path / "colours.csv", index=False)
    categorical = {"kind": "categorical", "unknown": unknown}
    schema = {
        "label": "target",
        "classes": [0, 1, 2],
        "ordered": False,
        "features": [
            {"name": "colour", "categories": COLOURS, **categorical},
            {"name": "size", "kind": "numeric"},
            {"name": "shade", "categories": ["dark", "light"], **categorical},
        ],
    }
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    cfg = compose_cfg(
        "data=csv",
        f"data.path={tmp_path / 'colours.csv'}",
        "data.label=target",
        f"data.schema={tmp_path / 'schema.yaml'}",
        "report.plots=false",
        "report.tensorboard=false",
        "report.progress=none",
        *(["data.missing=impute"] if holes else []),
        shrink=False,
    )
    run(cfg, tmp_path / "run")
    return tmp_path / "run"


def raw_rows(unknowns: bool, holes: bool) -> pd.DataFrame:
    frame = colour_frame(rows=60, seed=7).drop(columns=["target"])
    if unknowns:
        frame.loc[[2, 9], "colour"] = "purple"
        frame.loc[4, "shade"] = "pale"
    if holes:
        frame.loc[[1, 8], "size"] = np.nan
        frame.loc[[6, 8], "colour"] = None
    return frame


def onnx_categorical_probabilities(path, frame: pd.DataFrame) -> np.ndarray:
    return onnx_session(path).run(None, onnx_inputs(read_schema(path), frame))[0]


@pytest.mark.parametrize(
    ("unknown", "holes"), [("error", False), ("map", False), ("error", True), ("map", True)]
)
def test_onnx_takes_raw_strings_and_matches_predictor(compose_cfg, tmp_path, unknown, holes):
    run_dir = train_colours(compose_cfg, tmp_path, unknown, holes)
    main([f"checkpoint={run_dir}", f"output={tmp_path / 'model.onnx'}"])
    frame = raw_rows(unknowns=unknown == "map", holes=holes)

    expected = Predictor.from_checkpoint(run_dir).predict_proba(frame)
    got = onnx_categorical_probabilities(tmp_path / "model.onnx", frame)
    assert got.shape == (60, 3)
    assert np.abs(got - expected).max() <= PARITY
    assert len(np.unique(got.round(6))) > 8  # real probabilities, not a constant
    # the categorical column matters: another colour, other probabilities
    recoloured = frame.assign(colour="red")
    assert (
        np.abs(onnx_categorical_probabilities(tmp_path / "model.onnx", recoloured) - got).max()
        > 1e-3
    )


def test_categorical_metadata_and_inputs(compose_cfg, tmp_path):
    run_dir = train_colours(compose_cfg, tmp_path)
    path = export(ExportOptions(checkpoint=str(run_dir), output=str(tmp_path / "m.onnx")))
    schema = read_schema(path)
    assert schema.feature_names == ["colour", "size", "shade"]
    assert schema.numeric_names == ["size"]
    assert schema.categories == {"colour": COLOURS, "shade": ["dark", "light"]}
    features, categories = onnx_session(path).get_inputs()
    assert (features.name, features.type, features.shape[1]) == (INPUT, "tensor(float)", 1)
    assert (categories.name, categories.type, categories.shape[1]) == (
        CATEGORIES,
        "tensor(string)",
        2,
    )


def test_a_row_pricenet_refuses_gets_nan_probabilities(compose_cfg, tmp_path):
    """unknown=error, missing=error: an unseen colour or an empty one is an error in pricenet;
    the graph cannot raise per row, so that row's probabilities are NaN, the others exact."""
    run_dir = train_colours(compose_cfg, tmp_path)
    path = export(ExportOptions(checkpoint=str(run_dir), output=str(tmp_path / "m.onnx")))
    frame = raw_rows(unknowns=False, holes=False)
    expected = Predictor.from_checkpoint(run_dir).predict_proba(frame)
    feed = onnx_inputs(read_schema(path), frame)
    feed[CATEGORIES][3, 0] = "purple"
    feed[CATEGORIES][5, 1] = ""
    got = onnx_session(path).run(None, feed)[0]
    refused = np.isnan(got).all(axis=1)
    assert refused.nonzero()[0].tolist() == [3, 5]
    assert not np.isnan(got[~refused]).any()
    assert np.abs(got[~refused] - expected[~refused]).max() <= PARITY


def test_torchscript_takes_category_codes(compose_cfg, tmp_path):
    run_dir = train_colours(compose_cfg, tmp_path, "map")
    main([f"checkpoint={run_dir}", f"output={tmp_path / 'm.ts'}", "format=torchscript"])
    extra = {"pricenet.json": ""}
    module = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    meta = json.loads(extra["pricenet.json"])
    categories = json.loads(meta["pricenet.categories"])
    frame = raw_rows(unknowns=True, holes=False)
    codes = np.stack(
        [
            [categories[name].index(v) if v in categories[name] else -1 for v in frame[name]]
            for name in json.loads(meta["pricenet.categorical_names"])
        ],
        axis=1,
    )
    features = frame[json.loads(meta["pricenet.numeric_names"])].to_numpy(dtype=np.float32)
    with torch.no_grad():
        got = module(torch.tensor(features), torch.tensor(codes)).numpy()
    expected = Predictor.from_checkpoint(run_dir).predict_proba(frame)
    assert np.abs(got - expected).max() <= PARITY


def test_members_with_different_preprocessing_layouts_are_refused(compose_cfg, tmp_path, capsys):
    """A crafted two-member checkpoint whose second preprocessor imputes while the first
    refuses gaps: each state is valid alone, but one module cannot serve both."""
    from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint

    train_tiny(compose_cfg, tmp_path / "run", "cv=kfold", "cv.folds=2")
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    assert len(payload["preprocessors"]) == 2
    Predictor.from_checkpoint(tmp_path / "run" / "best.pt")  # as written: loads
    payload["preprocessors"][1]["missing"] = "impute"
    save_checkpoint(tmp_path / "crafted.pt", payload)
    capsys.readouterr()  # the training's log
    err = _exit_2(capsys, [f"checkpoint={tmp_path / 'crafted.pt'}", f"output={tmp_path / 'm'}"])
    assert "crafted.pt: preprocessors[1]: its inputs (features, categories" in err
    assert not (tmp_path / "m").exists()


def test_graph_metadata_class_labels_are_plain_json():
    """numpy class labels (what a schema read from a table holds) are written as JSON values."""
    labels = [np.int64(0), np.str_("mid"), np.float32(2.5), np.bool_(True)]
    props = GraphMetadata(["ram"], labels, "price_range").metadata()
    assert json.loads(props["pricenet.class_labels"]) == [0, "mid", 2.5, True]
