"""Every choice in every config group composes, validates and trains for 2 epochs."""

from __future__ import annotations

import itertools
import json
import math
from importlib.resources import files

import pytest

from pricenet.config import validate
from pricenet.data import make_synthetic
from pricenet.pipeline import run

GROUPS = ("data", "model", "activation", "init", "loss", "optim", "scheduler", "experiment")


def choices(group: str) -> list[str]:
    folder = files("pricenet.conf") / group
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


ALL = [(g, c) for g in GROUPS for c in choices(g)]


@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "train.csv"
    make_synthetic(200, seed=3).to_frame().to_csv(path, index=False)
    return path


def train_ok(cfg, run_dir) -> dict:
    metrics, artifacts = run(cfg, run_dir)
    assert metrics["status"] == "done"
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert math.isfinite(metrics["history"]["train_loss"][-1])
    assert json.loads(artifacts["metrics.json"].read_text())["test_acc"] == metrics["test_acc"]
    for name in ("best.pt", "last.pt", "config.yaml", "summary.txt", "metrics.csv"):
        assert artifacts[name].is_file(), name
    return metrics


def test_every_group_has_the_documented_choices():
    assert choices("activation") == sorted(
        [
            "sigmoid",
            "tanh",
            "relu",
            "leaky_relu",
            "prelu",
            "rrelu",
            "elu",
            "identity",
            "gelu",
            "silu",
        ]
    )
    assert choices("init") == sorted(
        ["default", "uniform", "normal", "constant", "zeros", "ones"]
        + ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform"]
    )
    assert choices("loss") == ["bce", "coral", "cross_entropy", "l1", "mse", "smooth_l1"]
    assert choices("optim") == ["adagrad", "adam", "adamw", "momentum", "rmsprop", "sgd"]
    assert choices("scheduler") == ["cosine", "exponential", "multistep", "none", "plateau", "step"]
    assert choices("model") == ["linear", "mlp", "tutorial"]


@pytest.mark.parametrize(("group", "choice"), ALL, ids=[f"{g}={c}" for g, c in ALL])
def test_every_choice_trains(compose_cfg, tmp_path, small_csv, group, choice):
    extra = [f"data.path={small_csv}"] if (group, choice) == ("data", "csv") else []
    # experiments set their own sizes; shrink them again afterwards
    shrink = ["trainer.epochs=2", "data.n_rows=200"] if group == "experiment" else []
    cfg = compose_cfg(f"{group}={choice}", *extra, *shrink)
    validate(cfg)
    train_ok(cfg, tmp_path / "run")


PAIRS = [
    *(("loss", a, "optim", b) for a, b in itertools.product(choices("loss"), choices("optim"))),
    *(
        ("activation", a, "init", b)
        for a, b in itertools.product(choices("activation"), choices("init"))
    ),
    *(
        ("scheduler", a, "model", b)
        for a, b in itertools.product(choices("scheduler"), choices("model"))
    ),
]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}={b},{c}={d}" for a, b, c, d in PAIRS])
def test_pairwise_choices_train(compose_cfg, tmp_path, pair):
    g1, c1, g2, c2 = pair
    cfg = compose_cfg(f"{g1}={c1}", f"{g2}={c2}", "data.n_rows=120", "trainer.epochs=1")
    train_ok(cfg, tmp_path / "run")


def test_batch_norm_and_per_layer_overrides(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "model.batch_norm=true",
        "model.hidden=[16,8]",
        "+model.layer_activations.1={_target_:torch.nn.Tanh}",
        "+model.layer_inits.2={weight:{_target_:torch.nn.init.zeros_,_partial_:true}}",
    )

    import torch

    from pricenet.model import build_model
    from pricenet.spec import network_spec

    spec = network_spec(cfg, 20, 4)
    model = build_model(cfg, spec, [torch.Generator().manual_seed(0)])
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "PackedLinear",
        "PackedBatchNorm1d",
        "ReLU",
        "PackedDropout",
        "PackedLinear",
        "PackedBatchNorm1d",
        "Tanh",
        "PackedDropout",
        "PackedLinear",
    ]
    assert float(model[-1].weight.abs().sum()) == 0.0
    train_ok(cfg, tmp_path / "run")
