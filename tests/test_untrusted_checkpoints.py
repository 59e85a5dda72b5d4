"""Crafted and damaged checkpoints: no string in a checkpoint chooses which code runs.

Each crafted case first proves that its payload has an effect when a config is built the way
pricenet 0.1 built a stored one (Hydra's ``instantiate``, OmegaConf resolution): it creates
a marker file. Then the same payload, written into a real checkpoint, is refused by every
loader with one ``error:`` line and exit status 2, and the marker is not created.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from pricenet.checkpoints.restore import resume_state
from pricenet.config.config import to_container
from pricenet.errors import CheckpointError
from pricenet.inference.predictor import Predictor
from pricenet.predict import main
from pricenet.run.pipeline import run
from pricenet.tables import make_synthetic

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")

# Attribute paths that start with a prefix pricenet 0.1 allowed and reach torch.save.
BYPASSES = ("torch.nn.modules.module.torch.save", "pricenet.nn.model.torch.save")


def touch(marker: Path, path: str = BYPASSES[0], **extra: Any) -> dict[str, Any]:
    """A config node that writes ``marker`` when instantiated."""
    return {"_target_": path, "_args_": [[1], str(marker)], **extra}


def partial_touch(marker: Path) -> dict[str, Any]:
    return {"_target_": BYPASSES[0], "_partial_": True, "obj": [1], "f": str(marker)}


def recursive_touch(marker: Path) -> dict[str, Any]:
    return {
        "_target_": "pricenet.nn.heads.CategoricalHead",
        "_recursive_": True,
        "num_classes": touch(marker),
    }


def proves_effect(node: Any, marker: Path) -> None:
    """Building ``node`` as pricenet 0.1 did creates ``marker``: the payload is real."""
    with contextlib.suppress(Exception):
        built = instantiate(copy.deepcopy(node))
        if callable(built):
            built()
    assert marker.exists(), "the payload should have had an effect"
    marker.unlink()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data.n_rows=200",
                "trainer.epochs=2",
                "trainer.device=cpu",
                "model.hidden=[8]",
                "activation=leaky_relu",
                *LEAN,
            ],
        )
    GlobalHydra.instance().clear()
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run(cfg, run_dir)
    return run_dir, to_container(cfg)


def poisoned(trained, tmp_path: Path, name: str, edit: Callable[[dict], None]) -> Path:
    """A copy of the trained run's ``name`` checkpoint with ``edit`` applied."""
    run_dir, _ = trained
    payload = load_checkpoint(run_dir / name)
    payload.pop("format_version")
    edit(payload)
    return save_checkpoint(tmp_path / name, payload)


def refused_by_every_loader(path: Path, config: dict, capsys, match: str) -> None:
    """Predictor API, resume (last.pt) and the predict command all refuse ``path``."""
    with pytest.raises(CheckpointError, match=match):
        Predictor.from_checkpoint(path)
    if path.name == "last.pt":
        with pytest.raises(CheckpointError, match=match):
            resume_state(path, config)
    with pytest.raises(SystemExit) as exit_info:
        main([f"checkpoint={path}", f"input={path}", f"output={path.parent / 'out.csv'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (path.parent / "out.csv").exists()


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """An edit that sets ``payload[a][b][0]...`` (dots, and digits for list items)."""

    def edit(payload: dict) -> None:
        *parents, last = path.split(".")
        node: Any = payload
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return edit


# (where the payload goes, the payload builder, what the refusal says)
NETWORK_NODES = [
    ("network", "network: expected a mapping|network: unknown key"),
    ("network.head", "network.head: .* is not one of"),
    ("network.activations.0", "network.activations\\[0\\]: unknown key"),
    ("network.activations.0.args", "network.activations\\[0\\].args: '_target_' is not an arg"),
    ("network.activations.0.args.negative_slope", "negative_slope: .* is out of range"),
    ("settings.loss.head._target_", "is not a plain value"),
    ("settings.activation", "is not a plain value"),
    ("settings.init.weight", "is not a plain value"),
    ("model", "model: does not fit the stored network"),
    ("preprocessors", "preprocessors\\[0\\]._target_: unknown key"),
]
BUILDERS = {"target": touch, "partial": partial_touch, "recursive": recursive_touch}


def _place(where: str, node: Any) -> Callable[[dict], None]:
    if where.startswith("settings."):
        key = where.removeprefix("settings.")
        return lambda payload: payload["settings"].__setitem__(key, node)
    if where in ("model", "preprocessors"):  # a config node among the tensors

        def edit(payload: dict) -> None:
            home = payload if where in payload else payload["trainer"]
            target = home[where][0] if where == "preprocessors" else home[where]
            target["_target_"] = node

        return edit
    return _set(where, node)


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize(("where", "match"), NETWORK_NODES, ids=[w for w, _ in NETWORK_NODES])
def test_config_nodes_in_every_place_are_refused(
    trained, tmp_path, capsys, name, builder, where, match
):
    marker = tmp_path / "pwned"
    node = BUILDERS[builder](marker)
    proves_effect(node, marker)
    if where in ("model", "preprocessors"):
        node = torch.zeros(1)  # tensors sit there; a stray entry is refused all the same
    path = poisoned(trained, tmp_path, name, _place(where, node))
    refused_by_every_loader(path, trained[1], capsys, match)
    assert not marker.exists()


@pytest.mark.parametrize("path", BYPASSES)
@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("network.head", "network.head: .* is not one of"),
        ("network.activations.0.name", "is not an activation pricenet builds"),
        ("settings.loss.head._target_", "settings name the head"),
    ],
)
def test_attribute_path_bypasses_are_refused(trained, tmp_path, capsys, path, where, match):
    marker = tmp_path / "pwned"
    proves_effect(touch(marker, path), marker)
    for name in ("best.pt", "last.pt"):
        file = poisoned(trained, tmp_path, name, _place(where, path))
        refused_by_every_loader(file, trained[1], capsys, match)
    assert not marker.exists()


def test_a_target_string_in_the_settings_is_data_never_built(trained, tmp_path):
    """Settings are compared on resume and otherwise ignored: a path there runs nothing."""
    marker = tmp_path / "pwned"
    proves_effect(touch(marker), marker)
    edit = _place("settings.init.weight._target_", BYPASSES[0])
    Predictor.from_checkpoint(poisoned(trained, tmp_path, "best.pt", edit))
    last = poisoned(trained, tmp_path, "last.pt", edit)
    with pytest.raises(CheckpointError, match=r"init\.weight\._target_ .*torch\.save"):
        resume_state(last, trained[1])
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["env", "resolver"])
def test_interpolations_are_refused(trained, tmp_path, capsys, monkeypatch, kind):
    marker = tmp_path / "pwned"
    if kind == "env":
        monkeypatch.setenv("PRICENET_SECRET", "s3cret")
        value = "${oc.env:PRICENET_SECRET}"
        assert OmegaConf.create({"x": value}).x == "s3cret"  # resolving would leak it
    else:
        OmegaConf.register_new_resolver("pwn", lambda p: Path(p).touch() or 0.5, replace=True)
        value = f"${{pwn:{marker}}}"
        OmegaConf.to_container(OmegaConf.create({"x": value}), resolve=True)
        assert marker.exists()
        marker.unlink()
    for where, match in [
        ("settings.optim.lr", "is an interpolation"),
        ("network.activations.0.args.negative_slope", "is out of range"),
        ("network.dropout", "is not in \\[0, 1\\)"),
    ]:
        for name in ("best.pt", "last.pt"):
            path = poisoned(trained, tmp_path, name, _place(where, value))
            refused_by_every_loader(path, trained[1], capsys, match)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("where", "value", "match"),
    [
        ("network", "relu", "network is a str, expected dict"),
        ("network.activations.0", "leaky_relu", "activations\\[0\\]: expected a mapping"),
        ("network.hidden", "8", "network.hidden: expected a list"),
        ("preprocessors", "standard", "preprocessors is a str, expected list"),
        ("model", "weights", "model is a str, expected dict"),
        ("settings", "lr=0.1", "settings is a str, expected dict"),
        ("schema", "ram", "schema is a str, expected dict"),
        ("schema.features", "ram", "schema.features"),
    ],
)
def test_strings_where_mappings_belong_are_refused(trained, tmp_path, capsys, where, value, match):
    path = poisoned(trained, tmp_path, "best.pt", _set(where, value))
    refused_by_every_loader(path, trained[1], capsys, match)


def test_a_head_that_disagrees_with_the_settings_is_refused(trained, tmp_path, capsys):
    edit = _place("settings.loss.head._target_", "pricenet.nn.heads.CoralHead")
    path = poisoned(trained, tmp_path, "best.pt", edit)
    refused_by_every_loader(path, trained[1], capsys, "settings name the head .*CoralHead")


SAMPLE_ROWS = make_synthetic(20, seed=5).to_frame().drop(columns=["price_range"])


def _old_module_paths(payload: dict) -> None:
    """The settings as a checkpoint written before the subpackages names them."""
    for key, value in payload["settings"].items():
        if key.endswith("._target_") and isinstance(value, str):
            payload["settings"][key] = value.replace("pricenet.nn.heads.", "pricenet.heads.")


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_a_checkpoint_naming_the_old_module_paths_still_loads(trained, tmp_path, name):
    run_dir, config = trained
    path = poisoned(trained, tmp_path, name, _old_module_paths)
    settings = load_checkpoint(path)["settings"]
    # The edit had an effect: the head is named where it used to live.
    assert settings["loss.head._target_"] == "pricenet.heads.CategoricalHead"
    expected = Predictor.from_checkpoint(run_dir / name).predict_proba(SAMPLE_ROWS)
    assert (Predictor.from_checkpoint(path).predict_proba(SAMPLE_ROWS) == expected).all()
    if name == "last.pt":
        assert resume_state(path, config) is not None  # the same settings: no difference


def _drop(path: str) -> Callable[[dict], None]:
    def edit(payload: dict) -> None:
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return edit


def _nan_weights(payload: dict) -> None:
    payload["model"]["0.weight"][0, 0] = float("nan")


def _wider_network(payload: dict) -> None:
    """Weights of a hidden layer of 8 under a network (and settings) that say 16."""
    payload["network"]["hidden"] = [16]
    payload["settings"]["model.hidden"] = [16]


def _wider_scaler(payload: dict) -> None:
    prep = payload["preprocessors"][0]
    prep["mean"] = torch.cat([prep["mean"], prep["mean"][:1]])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_wider_network, "0.weight has shape \\(1, 20, 8\\), but .* needs \\(1, 20, 16\\)"),
        (_set("network.num_classes", 5), "network.num_classes=5 but the schema has 4 classes"),
        (_set("schema.classes", [0, 1, 2, 3, 4]), "the schema has 5 classes"),
        (_drop("model"), "holds no model weights"),
        (_drop("preprocessors.0.mean"), "preprocessors\\[0\\].mean: missing"),
        (_wider_scaler, "preprocessors\\[0\\].mean"),
        (_set("network.head", 3), "network.head: 3 is not one of"),
        (_set("network.head", ["categorical"]), "network.head: \\['categorical'\\] is not one of"),
        (_nan_weights, "model: 0.weight holds NaN or infinite values"),
        (_set("temperatures", [-1.0]), "temperatures \\[-1.0\\] must be 1 number"),
        (_set("network.members", 10**9), "network.members: 1000000000 is not in 1..1024"),
    ],
    ids=[
        "hidden",
        "classes",
        "schema-classes",
        "no-model",
        "no-mean",
        "scaler-width",
        "head-int",
        "head-list",
        "nan",
        "temperature",
        "members",
    ],
)
def test_damaged_checkpoints_are_one_line_errors(trained, tmp_path, capsys, edit, match):
    path = poisoned(trained, tmp_path, "best.pt", edit)
    refused_by_every_loader(path, trained[1], capsys, match)


def test_resume_refuses_a_last_pt_without_trainer_state(trained, tmp_path):
    path = poisoned(trained, tmp_path, "last.pt", _drop("trainer"))
    with pytest.raises(CheckpointError, match="holds no trainer state"):
        resume_state(path, trained[1])


def test_the_untouched_checkpoint_loads(trained):
    """The control: the same file, unedited, is accepted by the same loaders."""
    run_dir, config = trained
    assert Predictor.from_checkpoint(run_dir / "best.pt").head.num_classes == 4
    assert resume_state(run_dir / "last.pt", config).state["fit"]["epoch"] == 2


def _overflowing(payload: dict) -> None:
    """Finite values in range whose outputs overflow: huge output weights, a tiny temperature."""
    home = payload["model"] if "model" in payload else payload["trainer"]["model"]
    output = [key for key in home if key.endswith(".weight")][-1]
    home[output] = home[output] * 1e30
    payload["temperatures"] = [1e-30]


def test_a_checkpoint_whose_outputs_overflow_is_refused(trained, tmp_path, capsys):
    from pricenet.nn.model import build_network
    from pricenet.nn.spec import NetworkSpec, build_head

    path = poisoned(trained, tmp_path, "best.pt", _overflowing)
    payload = load_checkpoint(path)
    spec = NetworkSpec.from_dict(payload["network"])
    network = build_network(spec).eval()
    network.load_state_dict(payload["model"])  # every tensor is finite and fits
    head = build_head(spec.head, spec.num_classes)
    with torch.no_grad():
        outputs = head.combine(network(torch.randn(5, spec.in_features)) / 1e-30)
    assert torch.isnan(head.probabilities(outputs)).all()  # what predict returned before
    refused_by_every_loader(path, trained[1], capsys, "non-finite outputs .* on a probe row")


def test_exports_self_check_fails_on_nan():
    import numpy as np

    from pricenet.export import _self_check

    expected = np.array([[0.2, 0.8], [np.nan, np.nan], [np.nan, np.nan]], dtype=np.float32)
    got = expected.copy()
    assert np.array_equal(np.isnan(got), np.isnan(expected))  # the old check's condition
    refused = np.array([False, True, False])  # row 1 is refused by design; row 2 is not
    with pytest.raises(CheckpointError, match="non-finite probabilities on 1 of 2 valid probe"):
        _self_check(got, expected, refused, "m.pt", "onnx")
    _self_check(got[:2], expected[:2], refused[:2], "m.pt", "onnx")  # NaN where refused: fine
    got[0, 0] += 0.1
    with pytest.raises(CheckpointError, match="disagrees with torch"):
        _self_check(got[:2], expected[:2], refused[:2], "m.pt", "onnx")
