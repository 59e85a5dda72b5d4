"""Budget before allocation: a network's size comes from its spec, and is refused before
anything is built; checks and error lines stay linear in their input.

Each case first shows what its payload would cost without the check (computed from the spec
on a storage-less ``meta`` network, or shown with the old expression), then that it is
refused now, with one line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pricenet.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from pricenet.config.config import check_config
from pricenet.errors import CheckpointError, ConfigError, shown
from pricenet.nn.model import build_network
from pricenet.nn.spec import (
    MAX_PARAMETERS,
    ActivationSpec,
    NetworkSpec,
    SpecError,
    network_spec,
)
from pricenet.run.pipeline import run
from pricenet.tables.schema import Feature, Schema

LEAN = ("report.tensorboard=false", "report.plots=false", "report.progress=none")


def _spec(members=2, hidden=(16, 5), activation="relu", args=None, bn=False, head="coral"):
    return NetworkSpec(
        members,
        7,
        tuple(hidden),
        (ActivationSpec(activation, args or {}),) * len(hidden),
        0.1,
        bn,
        head,
        4,
    )


@pytest.mark.parametrize(
    "spec",
    [
        _spec(),
        _spec(activation="prelu", args={"num_parameters": 16}, hidden=(16,), bn=True),
        _spec(members=3, bn=True, head="ordinal"),
        _spec(members=1, hidden=(), head="categorical"),
        _spec(head="regression", activation="prelu"),
    ],
    ids=["coral", "prelu-bn", "ordinal-bn", "linear", "regression"],
)
def test_the_parameter_count_is_the_built_networks(spec):
    """The count the budget uses, from the spec alone, is what building would allocate."""
    built = build_network(spec).state_dict()
    assert spec.parameter_count() == sum(t.numel() for t in built.values())
    meta = build_network(spec, "meta").state_dict()
    assert {k: t.shape for k, t in meta.items()} == {k: t.shape for k, t in built.items()}
    assert all(t.is_meta for t in meta.values())


# ------------------------------------------------------------------ crafted checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
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
                *LEAN,
            ],
        )
    GlobalHydra.instance().clear()
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run(cfg, run_dir)
    return run_dir / "best.pt"


def bomb(best: Path, path: Path, members: int, hidden: list[int]) -> Path:
    """``best`` declaring ``members`` x ``hidden``: a few KB on disk, its old weights inside."""
    payload = load_checkpoint(best)
    payload.pop("format_version")
    network = payload["network"]
    payload["network"] = {
        **network,
        "members": members,
        "hidden": hidden,
        "activations": network["activations"][:1] * len(hidden),
    }
    payload["preprocessors"] = payload["preprocessors"] * members
    payload["temperatures"] = [1.0] * members
    payload["settings"] = {**payload["settings"], "model.hidden": hidden}
    return save_checkpoint(path, payload)


LOADER = """
import resource, sys
from pricenet.errors import CheckpointError
from pricenet.inference.predictor import Predictor
for path in sys.argv[1:]:
    try:
        Predictor.from_checkpoint(path)
        print("loaded", path)
    except CheckpointError as err:
        print("refused", err)
print("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_a_small_file_declaring_a_huge_network_is_refused_without_allocating(trained, tmp_path):
    """The issue's bomb: 16 members of two 8192-wide layers (4.3 GB of weights; before, predict
    built them, 4.6 GB peak, 40 s, then refused); 1024 members (274 GB: an allocation
    traceback); and 3 members, within the load ceiling (805 MB), whose tensors do not fit."""
    cases = {
        "bomb16.pt": (16, [8192, 8192]),
        "bomb1024.pt": (1024, [8192, 8192]),
        "fits_budget.pt": (3, [8192, 8192]),
    }
    paths = []
    for name, (members, hidden) in cases.items():
        path = bomb(trained, tmp_path / name, members, hidden)
        assert path.stat().st_size < 20_000
        shapes = build_network(
            NetworkSpec(
                members,
                20,
                tuple(hidden),
                (ActivationSpec("relu"),) * 2,
                0,
                False,
                "categorical",
                4,
            ),
            "meta",
        ).state_dict()
        # what building it would have allocated: at least 800 MB each
        assert sum(t.numel() for t in shapes.values()) * 4 > 800e6
        paths.append(str(path))
    result = subprocess.run(
        [sys.executable, "-c", LOADER, *paths], capture_output=True, text=True, timeout=120
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused ") and "parameters (16 member(s)" in lines[0]
    assert "over the limit of 268,435,456" in lines[0]
    assert lines[1].startswith("refused ") and "(1024 member(s)" in lines[1]
    assert lines[2].startswith("refused ") and "does not fit the stored network" in lines[2]
    peak_mb = int(lines[3].split()[1])
    assert peak_mb < 700, result.stdout  # torch and pandas alone take ~260 MB


def test_the_load_ceiling_is_checked_from_the_spec(trained, tmp_path, capsys):
    from pricenet.predict import main

    path = bomb(trained, tmp_path / "best.pt", 16, [8192, 8192])
    with pytest.raises(SystemExit) as exit_info:
        main([f"checkpoint={path}", f"input={path}", f"output={tmp_path / 'out.csv'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is over the limit of {MAX_PARAMETERS:,}" in err, err


def _edit(best: Path, path: Path, edit) -> Path:
    payload = load_checkpoint(best)
    payload.pop("format_version")
    edit(payload)
    return save_checkpoint(path, payload)


def test_an_expanded_view_claiming_more_values_than_stored_is_refused(trained, tmp_path):
    def expand(payload):
        weight = payload["model"]["0.weight"]
        payload["model"]["0.weight"] = torch.zeros(1).expand(weight.shape)

    path = _edit(trained, tmp_path / "best.pt", expand)
    loaded = load_checkpoint(path)["model"]["0.weight"]
    assert loaded.numel() * 4 > loaded.untyped_storage().nbytes()  # 4 bytes stand for 640
    with pytest.raises(CheckpointError, match="0.weight claims more values than its stored"):
        from pricenet.inference.predictor import Predictor

        Predictor.from_checkpoint(path)


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_sparse_and_meta_tensors_are_refused(trained, tmp_path, kind):
    from pricenet.inference.predictor import Predictor

    def swap(payload):
        weight = payload["model"]["0.weight"]
        payload["model"]["0.weight"] = (
            weight.to_sparse() if kind == "sparse" else torch.empty(weight.shape, device="meta")
        )

    path = _edit(trained, tmp_path / "best.pt", swap)
    loaded = load_checkpoint(path)["model"]["0.weight"]
    with pytest.raises((NotImplementedError, RuntimeError)):  # the old check's traceback
        bool(torch.isfinite(loaded).all())
    with pytest.raises(CheckpointError, match=f"0.weight is a {kind if kind == 'meta' else ''}"):
        Predictor.from_checkpoint(path)


def test_a_prelu_that_does_not_fit_its_layer_is_refused(trained, tmp_path):
    from pricenet.inference.predictor import Predictor

    spec = _spec(members=1, hidden=(8,), activation="prelu", args={"num_parameters": 3})
    with pytest.raises(RuntimeError):  # loads, then every prediction failed
        build_network(spec)(torch.zeros(2, 7))

    def prelu(payload):
        payload["network"]["activations"] = [{"name": "prelu", "args": {"num_parameters": 3}}]
        payload["model"]["1.weight"] = torch.full((1, 1, 3), 0.25)

    path = _edit(trained, tmp_path / "best.pt", prelu)
    with pytest.raises(CheckpointError, match="num_parameters: 3 does not fit its layer of 8"):
        Predictor.from_checkpoint(path)


def test_hardtanh_with_min_above_max_is_refused():
    with pytest.raises(AssertionError):  # what building it raised: a traceback
        torch.nn.Hardtanh(min_val=2.0, max_val=1.0)
    node = {"name": "hardtanh", "args": {"min_val": 2.0}}  # max_val's default is 1
    with pytest.raises(SpecError, match="hardtanh needs min_val < max_val"):
        ActivationSpec.from_dict(node, "network.activations[0]")


# ------------------------------------------------------------------ train time


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.hidden=[70000]", r"model.hidden\[0\]=70000 is invalid: at most 65,536 units"),
        ("trainer.seeds=1025", "1,025 fits .* more than the 1024 one checkpoint holds"),
        ("model.hidden=[8000,8000]", "parameters .* over trainer.max_parameters of 50,000,000"),
        ("trainer.batch_size=3000000", "needs .* bytes of activations .* trainer.max_activation"),
    ],
)
def test_a_network_over_the_budget_is_refused_before_its_folder(
    compose_cfg, tmp_path, override, match
):
    cfg = compose_cfg(override, *LEAN)
    hidden = [int(h) for h in cfg.model.hidden]
    if hidden == [70000] or cfg.trainer.seeds > 1:  # what training wrote could not be loaded
        described = {"members": cfg.trainer.seeds, "in_features": 20, "hidden": hidden}
        with pytest.raises(SpecError):
            NetworkSpec.from_dict({**_spec(hidden=hidden).to_dict(), **described})
    with pytest.raises(ConfigError, match=match):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_tables_width_is_checked_before_the_folder_is_claimed(compose_cfg, tmp_path):
    """The config's checks see one input; the table's 20 inputs push this network over the
    limit, which is found before the folder is claimed or any member's data prepared."""
    cfg = compose_cfg("trainer.max_parameters=1000", *LEAN)
    check_config(cfg)  # one input: 388 parameters, within the limit
    with pytest.raises(ConfigError, match="1,604 parameters"):
        network_spec(cfg, 20, 4)  # the table's width
    with pytest.raises(ConfigError, match="1,604 parameters .*20 inputs.*max_parameters of 1,000"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("+model.layer_activations.3={_target_:torch.nn.Tanh}", "layer_activations.3: no such"),
        ("+model.layer_inits.2={weight:null}", "layer_inits.2: no such layer; .* 2 linear"),
        ("+model.layer_activations.x={_target_:torch.nn.Tanh}", "layer_activations.x: no such"),
    ],
)
def test_layer_keys_beyond_the_last_layer_are_refused(compose_cfg, tmp_path, override, match):
    cfg = compose_cfg(override, *LEAN)
    if "activations.3" in override:  # the builder ignores it: no Tanh anywhere
        assert {a.name for a in network_spec(cfg, 20, 4).activations} == {"relu"}
    with pytest.raises(ConfigError, match=match):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ linear checks, short lines


@pytest.mark.parametrize("what", ["features", "categories", "classes"])
def test_duplicate_names_are_found_in_linear_time(what):
    """100k names whose duplicate comes last: the old ``list.count`` per name took minutes
    (20k names: 11-14 s); one pass takes well under a second for the check itself."""
    n = 100_000
    names = [f"f{i}" for i in range(n)] + [f"f{n - 1}"]
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"'f{n - 1}' appears more than once|{n - 1} appears"):
        if what == "features":
            Schema(tuple(Feature(x, "numeric") for x in names), "y", (0, 1), False)
        elif what == "categories":
            Feature("c", "categorical", categories=tuple(names))
        else:
            Schema((Feature("a", "numeric"),), "y", (*range(n), n - 1), False)
    assert time.perf_counter() - started < 30


def test_a_huge_or_deep_value_is_quoted_by_a_short_prefix():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(RecursionError):
        repr(deep)  # what quoting it did before
    assert shown(deep).startswith("[[[[") and len(shown(deep)) <= 60
    label = "x" * 10_000_000
    assert shown(label) == repr("x" * 56)[:-1] + "..."
    with pytest.raises(ConfigError) as err:
        Schema((Feature("a", "numeric"),), label, (0, 1), False, id=label)
    assert len(str(err.value)) < 200


def test_an_error_line_escapes_newlines_and_is_capped(tmp_path, capsys):
    from pricenet.errors import exit_on_user_error
    from pricenet.inference.predictor import Predictor

    odd = tmp_path / "a\nb"
    with pytest.raises(CheckpointError, match="a\nb: checkpoint not found"):  # two lines
        Predictor.from_checkpoint(odd)
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(Predictor.from_checkpoint)(odd)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/a\\nb: checkpoint not found" in err, err
    with pytest.raises(SystemExit):
        exit_on_user_error(Predictor.from_checkpoint)(tmp_path / ("y" * 5000))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) <= 2010 and " ... " in err


def test_archives_that_unpack_beyond_their_size_are_refused_before_loading(tmp_path):
    """torch.load allocates what a file declares: a deflated entry (a zip bomb) and the
    legacy format are refused before it runs."""
    import zipfile

    from pricenet.checkpoints.checkpoint import FORMAT_VERSION

    saved = tmp_path / "zeros.pt"
    torch.save({"format_version": FORMAT_VERSION, "model": {"w": torch.zeros(2_000_000)}}, saved)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    size = deflated.stat().st_size
    assert torch.load(deflated, weights_only=True)["model"]["w"].numel() * 4 > 100 * size
    with pytest.raises(CheckpointError, match="is compressed; torch.save stores tensors"):
        load_checkpoint(deflated)

    legacy = tmp_path / "legacy.pt"
    torch.save({"format_version": FORMAT_VERSION}, legacy, _use_new_zipfile_serialization=False)
    assert torch.load(legacy, weights_only=True)["format_version"] == FORMAT_VERSION
    with pytest.raises(CheckpointError, match="legacy format"):
        load_checkpoint(legacy)
