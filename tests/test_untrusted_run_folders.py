"""Crafted run folders: a ``config.yaml`` beside a ``best.pt`` is data, never code.

``explain features`` re-creates a run's held-out rows from its ``config.yaml``. pricenet 0.1
loaded that file with OmegaConf and ``instantiate``d its data source, which builds nested
``_target_`` nodes and resolves interpolations. Each crafted case first proves that its
payload has an effect when the config is built that old way (a marker file appears), then
that explain refuses the same folder in one ``error:`` line, exit status 2, and that the
marker never appears.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from test_untrusted_checkpoints import BYPASSES, touch

from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from pricenet.explain import main as explain_main
from pricenet.inference.attribution import run_test_rows
from pricenet.inference.predictor import Predictor
from pricenet.predict import main as predict_main
from pricenet.run.fits import load_data, plan_for
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe
from pricenet.tables import make_synthetic

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")
FEATURES = ["features", "repeats=1", "steps=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small run trained on a CSV (so its data source is ``csv``, with a label and a path)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    home = tmp_path_factory.mktemp("trained")
    make_synthetic(200, seed=0).to_frame().to_csv(home / "train.csv", index=False)
    GlobalHydra.instance().clear()
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data=csv",
                f"data.path={home / 'train.csv'}",
                "trainer.epochs=2",
                "trainer.device=cpu",
                "model.hidden=[8]",
                *LEAN,
            ],
        )
    GlobalHydra.instance().clear()
    run(cfg, home / "run")
    return home / "run"


def crafted(trained: Path, tmp_path: Path, edit: dict[str, Any]) -> Path:
    """A copy of the trained run folder (best.pt, config.yaml) with ``edit`` applied to its
    config: ``{"data.source.label": value}``; the value ``DELETE`` removes the key."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(trained / "best.pt", folder / "best.pt")
    config = yaml.safe_load((trained / "config.yaml").read_text())
    for key, value in edit.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


DELETE = object()


def old_way(config_file: Path) -> None:
    """What pricenet 0.1 did with a run's config.yaml: resolve it, instantiate its source."""
    with contextlib.suppress(Exception):
        cfg = OmegaConf.load(config_file)
        OmegaConf.to_container(cfg, resolve=True)
        instantiate(cfg.data.source)


def explain_refuses(folder: Path, capsys, match: str) -> str:
    out = folder / "out"
    with pytest.raises(SystemExit) as exit_info:
        explain_main([*FEATURES, f"checkpoint={folder / 'best.pt'}", f"out_dir={out}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert match in err, err
    assert len(err) < 600, err
    assert not out.exists() or not list(out.iterdir()), "nothing is written for a refused folder"
    return err


class _Touch:
    """Unpickling this opens ``path`` for writing: a pickle that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payloads(tmp_path: Path, monkeypatch) -> dict[str, tuple[dict[str, Any], Path, str]]:
    """name -> (config edit, the marker it would create, the key the refusal names)."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    torch.save(_Touch(marker), evil)
    site = tmp_path / "venv" / "site-packages"
    site.mkdir(parents=True)
    (tmp_path / "payload.pth").write_text("import os; os.system('touch /tmp/pricenet-pwned')\n")
    monkeypatch.setenv("PRICENET_TEST_TARGET", BYPASSES[0])
    OmegaConf.register_new_resolver(
        "pricenet_test_touch", lambda p: Path(p).touch() or "price_range", replace=True
    )
    label = "data.source.label"
    return {
        "label_torch_load": (
            {label: {"_target_": "torch.load", "f": str(evil), "weights_only": False}},
            marker,
            label,
        ),
        "label_bypass": ({label: touch(marker)}, marker, label),
        "schema_target": ({"data.source.schema": touch(marker)}, marker, "data.source.schema"),
        "schema_nested": (
            {
                "data.source.schema": {
                    "label": "price_range",
                    "classes": [0, 1, 2, 3],
                    "features": [touch(marker)],
                }
            },
            marker,
            "data.source.schema.features[0]",
        ),
        "path_copyfile": (
            {
                "data.source.path": {
                    "_target_": "shutil.copyfile",
                    "src": str(tmp_path / "payload.pth"),
                    "dst": str(site / "pricenet_evil.pth"),
                }
            },
            site / "pricenet_evil.pth",
            "data.source.path",
        ),
        "oc_env_target": (
            {label: {"_target_": "${oc.env:PRICENET_TEST_TARGET}", "_args_": [[1], str(marker)]}},
            marker,
            label,
        ),
        "custom_resolver": (
            {label: f"${{pricenet_test_touch:'{marker}'}}"},
            marker,
            label,
        ),
        "custom_resolver_in_cv": (
            {"cv.folds": f"${{pricenet_test_touch:'{marker}'}}"},
            marker,
            "cv.folds",
        ),
    }


PAYLOADS = [
    "label_torch_load",
    "label_bypass",
    "schema_target",
    "schema_nested",
    "path_copyfile",
    "oc_env_target",
    "custom_resolver",
    "custom_resolver_in_cv",
]


@pytest.mark.parametrize("name", PAYLOADS)
def test_a_crafted_config_yaml_runs_nothing(trained, tmp_path, capsys, monkeypatch, name):
    edit, marker, key = _payloads(tmp_path, monkeypatch)[name]
    folder = crafted(trained, tmp_path, edit)
    old_way(folder / "config.yaml")
    assert marker.exists(), "the payload should have had an effect the old way"
    marker.unlink()

    explain_refuses(folder, capsys, f"{folder / 'config.yaml'}: {key}")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["label_torch_load", "path_copyfile"])
def test_the_command_refuses_a_crafted_folder(trained, tmp_path, monkeypatch, name):
    edit, marker, key = _payloads(tmp_path, monkeypatch)[name]
    folder = crafted(trained, tmp_path, edit)
    result = subprocess.run(
        [sys.executable, "-m", "pricenet.explain", *FEATURES, f"checkpoint={folder}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert f"config.yaml: {key}" in result.stderr
    assert not marker.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "config.yaml"]


def test_the_untouched_folder_gives_the_rows_the_old_way_gave(trained):
    """Read as plain values, the stored split is the one the run held out."""
    schema = Predictor.from_checkpoint(trained).schema
    rows = run_test_rows(trained, schema)
    cfg = OmegaConf.load(trained / "config.yaml")  # the old way, on a trusted folder
    table = load_data(Recipe.of(cfg).data)
    test = plan_for(Recipe.of(cfg), table)[0].test
    expected = table.to_frame(with_labels=False).iloc[test][list(schema.feature_names)]
    np.testing.assert_array_equal(rows.frame.to_numpy(), expected.to_numpy())
    np.testing.assert_array_equal(rows.labels, table.schema.decode_labels(table.labels[test]))
    assert len(rows.frame) == 32  # 15% of 200 rows, stratified


def test_a_synthetic_run_gives_the_rows_the_old_way_gave(compose_cfg, tmp_path):
    cfg = compose_cfg("data.n_rows=300", "data.seed=4", "trainer.seed=7", *LEAN)
    run(cfg, tmp_path / "run")
    rows = run_test_rows(tmp_path / "run", Predictor.from_checkpoint(tmp_path / "run").schema)
    table = load_data(Recipe.of(cfg).data)
    test = plan_for(Recipe.of(cfg), table)[0].test
    expected = table.to_frame(with_labels=False).iloc[test]
    np.testing.assert_array_equal(rows.frame.to_numpy(), expected.to_numpy())
    assert len(rows.frame) == 44  # 15% of 300 rows, stratified over 4 classes


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"data.source.label": ["a", "b"]}, "data.source.label: expected a column name or null"),
        ({"data.source.label": "x" * 1_000_000}, "data.source.label: expected a column name"),
        ({"data.source.max_bytes": "2GB"}, "data.source.max_bytes: expected a size in bytes"),
        ({"data.source.missing": {"a": 1}}, "data.source.missing: expected error or impute"),
        ({"data.source._args_": [1]}, "data.source: unexpected key '_args_'"),
        ({"data.source._recursive_": True}, "data.source: unexpected key '_recursive_'"),
        ({"data.source._target_": "pricenet.tables.sources.load_table"}, "is not one of"),
        ({"data.source._target_": "${oc.env:HOME}"}, "is not one of"),
        ({"data.source": "csv"}, "data.source: expected a data source mapping, got 'csv'"),
        ({"data.source.path": DELETE}, "data.source.path: missing"),
        ({"data.val_size": "${oc.env:HOME}"}, "data.val_size: '${oc.env:HOME}' is an interp"),
        ({"data.test_size": 1.5}, "data.test_size: expected a fraction in [0, 1), got 1.5"),
        ({"data.test_size": 0}, "the run has no test split"),
        ({"trainer.seed": -1}, "trainer.seed: expected an integer in 0..2**63-1, got -1"),
        ({"trainer.seed": True}, "trainer.seed: expected an integer"),
        ({"trainer": [1, 2]}, "trainer: expected a mapping, got a list"),
        ({"cv.folds": 5}, "a cross-validated run has no rows its ensemble never saw"),
        ({"cv.folds": 1}, "cv.folds: expected an integer >= 2 or null, got 1"),
        ({"data.val_size": 10**400}, "data.val_size: expected a fraction in [0, 1), got 1000"),
        (
            {"data.source": {"_target_": "pricenet.tables.sources.synthetic", "noise": 10**400}},
            "data.source.noise: expected a finite number >= 0",
        ),
        ({"data.source.schema": "/nonexistent/schema.yaml"}, "cannot be read"),
    ],
)
def test_wrong_values_are_one_line_naming_the_key(trained, tmp_path, capsys, edit, match):
    folder = crafted(trained, tmp_path, edit)
    explain_refuses(folder, capsys, match)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"a: &x [1, 2]\nb: *x\n", "aliases are not allowed"),
        (b"data: [" * 5000, "not valid YAML"),
        (b"- just\n- a list\n", "expected a mapping of config groups, got a list"),
        (b"data:\n  source: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
        (b"data: \xff\xfe", "not valid YAML"),
        (b"#" * (9 * 1024**2), "bytes, more than the 8,388,608 a config or schema file may have"),
    ],
)
def test_a_damaged_config_yaml_is_one_line(trained, tmp_path, capsys, text, match):
    folder = crafted(trained, tmp_path, {})
    (folder / "config.yaml").write_bytes(text)
    explain_refuses(folder, capsys, match)


def test_a_schema_file_named_by_the_config_is_plain_data(trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    schema = Predictor.from_checkpoint(trained).schema
    good = tmp_path / "schema.yaml"
    good.write_text(schema.to_yaml())
    folder = crafted(trained, tmp_path, {"data.source.schema": str(good)})
    explain_main([*FEATURES, f"checkpoint={folder}", f"out_dir={tmp_path / 'ok'}"])
    assert (tmp_path / "ok" / "features.csv").is_file()
    capsys.readouterr()

    bad = schema.to_dict()
    bad["features"][0] = touch(marker)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    (folder / "config.yaml").write_text(
        (folder / "config.yaml").read_text().replace(str(good), str(tmp_path / "bad.yaml"))
    )
    explain_refuses(folder, capsys, "features[0]: '_target_' node")
    assert not marker.exists()


def test_rows_without_the_models_columns_are_refused(trained, tmp_path, capsys):
    schema = {
        "label": "price_range",
        "classes": [0, 1, 2, 3],
        "features": [{"name": "ram", "kind": "numeric"}],
    }
    folder = crafted(trained, tmp_path, {"data.source.schema": schema})
    explain_refuses(folder, capsys, "its rows have no column 'battery_power' the model needs")


def test_a_huge_synthetic_table_is_refused_before_it_is_made(trained, tmp_path, capsys):
    folder = crafted(
        trained,
        tmp_path,
        {"data.source": {"_target_": "pricenet.tables.sources.synthetic", "n_rows": 10**12}},
    )
    explain_refuses(folder, capsys, "data.source.n_rows: expected an integer in 8..1000000")


# --------------------------------------------------------------------------- property test

PLACES = [
    "data.source.path",
    "data.source.label",
    "data.source.id",
    "data.source.schema",
    "data.source.missing",
    "data.source.ranges",
    "data.source.max_bytes",
    "data.source._target_",
    "data.source._args_",
    "data.source",
    "data.val_size",
    "data.test_size",
    "trainer.seed",
    "trainer",
    "cv.folds",
    "cv",
    "data",
]


def _deep(depth: int) -> Any:
    deep: Any = "x"
    for _ in range(depth):
        deep = [deep]
    return deep


# Payloads as builders of fresh values (a shared object would be dumped as a YAML alias).
BUILDERS = [
    touch,
    lambda m: touch(m, BYPASSES[1]),
    lambda m: {"_target_": "shutil.copyfile", "src": __file__, "dst": str(m)},
    lambda m: {"_target_": "pricenet.tables.sources.csv", "path": __file__, "label": touch(m)},
    lambda m: f"${{pricenet_test_touch:'{m}'}}",
    lambda m: "${oc.env:HOME}",
    lambda m: "${data.path}",
    lambda m: "x" * 1_000_000,
    lambda m: _deep(2000),
    lambda m: {"label": "price_range", "classes": [0, 1], "features": [touch(m)]},
    lambda m: None,
    lambda m: True,
    lambda m: [],
    lambda m: {},
    lambda m: -1,
    lambda m: 0.5,
    lambda m: 10**30,
    lambda m: float("nan"),
    lambda m: "error",
    lambda m: "price_range",
]
VALUES = st.one_of(
    st.sampled_from(BUILDERS),
    st.text(max_size=20).map(lambda t: lambda m: t),
    st.integers().map(lambda i: lambda m: i),
    st.floats().map(lambda f: lambda m: f),
)


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if skip not in p.parents and p != skip
    }


def _crafted_checkpoint(source: Path, target: Path, kind: str, marker: Path) -> None:
    if kind == "clean":
        shutil.copy(source, target)
    elif kind == "truncated":
        target.write_bytes(source.read_bytes()[:2000])
    else:  # a config node among the stored settings
        payload = load_checkpoint(source)
        payload.pop("format_version")
        payload["settings"]["activation"] = touch(marker)
        save_checkpoint(target, payload)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    edits=st.lists(st.tuples(st.sampled_from(PLACES), VALUES), min_size=1, max_size=3),
    checkpoint=st.sampled_from(["clean", "clean", "truncated", "settings_node"]),
)
def test_random_crafted_folders_refuse_in_one_line_or_do_no_harm(
    trained, tmp_path_factory, capsys, edits, checkpoint
):
    home = tmp_path_factory.mktemp("crafted")
    marker = home / "pwned"
    OmegaConf.register_new_resolver(
        "pricenet_test_touch", lambda p: Path(p).touch() or "x", replace=True
    )
    config = yaml.safe_load((trained / "config.yaml").read_text())
    for place, build in edits:
        value = build(marker)
        *parents, last = place.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[last] = value
    folder = home / "run"
    folder.mkdir()
    try:
        text = yaml.safe_dump(config, sort_keys=False)
    except RecursionError:
        text = "data: " + "[" * 3000 + "]" * 3000
    (folder / "config.yaml").write_text(text)
    _crafted_checkpoint(trained / "best.pt", folder / "best.pt", checkpoint, marker)
    make_synthetic(20, seed=1).to_frame().to_csv(home / "input.csv", index=False)
    out = home / "out"
    out.mkdir()
    before = _snapshot(home, out)

    for command, args in (
        (explain_main, [*FEATURES, f"checkpoint={folder}", f"out_dir={out}"]),
        (predict_main, [f"checkpoint={folder}", f"input={home / 'input.csv'}", f"output={out}/p"]),
    ):
        try:
            command(args)
            event(f"{command.__module__}: ran")
        except SystemExit as exit_info:
            assert exit_info.code == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert len(err) < 1000
            event(f"{command.__module__}: refused")
        capsys.readouterr()

    assert not marker.exists()
    assert _snapshot(home, out) == before
