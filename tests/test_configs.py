"""Every choice in every config group takes effect: the built objects are what it names.

Each choice (and each pair of choices from two groups) is composed, validated and built into
a Trainer without training, and the model, head, criterion, optimizer, scheduler and data are
checked against what the choice's YAML asks for. One choice per group also trains (smoke).
Model internals are read through tests/helpers.py only.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from importlib.resources import files

import numpy as np
import pytest
import torch
from helpers import (
    FEATURES,
    activation_types,
    activations,
    build,
    layer_shapes,
    linear_biases,
    linear_weights,
    modules_of,
    output_width,
)
from torch import nn

from pricenet.config.config import validate
from pricenet.engine.loop import Trainer
from pricenet.nn import heads
from pricenet.nn.embeddings import PackedPeriodicEmbeddings, PackedPiecewiseLinearEmbeddings
from pricenet.nn.network import Network
from pricenet.nn.tabm import PackedBatchEnsembleLinear, PackedTabM
from pricenet.run.pipeline import run
from pricenet.tables import make_synthetic

GROUPS = (
    "data",
    "model",
    "embedding",
    "activation",
    "init",
    "loss",
    "optim",
    "scheduler",
    "cv",
    "experiment",
)
N_FEATURES = len(FEATURES)
WIDE = 256  # a hidden width that gives the init statistics enough samples


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


# ---------------------------------------------------------------- what each choice must build

ACTIVATIONS: dict[str, tuple[type[nn.Module], dict[str, float]]] = {
    "elu": (nn.ELU, {"alpha": 1.0}),
    "gelu": (nn.GELU, {}),
    "identity": (nn.Identity, {}),
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": 0.01}),
    "prelu": (nn.PReLU, {}),  # one learned slope per member, checked below
    "relu": (nn.ReLU, {}),
    "rrelu": (nn.RReLU, {"lower": 0.125, "upper": 0.3333333333}),
    "sigmoid": (nn.Sigmoid, {}),
    "softmax": (nn.Softmax, {"dim": -1}),
    "silu": (nn.SiLU, {}),
    "tanh": (nn.Tanh, {}),
}

# Kaiming's gain for a layer followed by each activation (torch.nn.init.calculate_gain).
GAINS = {
    "relu": math.sqrt(2),
    "elu": math.sqrt(2),
    "gelu": math.sqrt(2),
    "silu": math.sqrt(2),
    "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
    "prelu": math.sqrt(2 / (1 + 0.25**2)),
    "rrelu": math.sqrt(2 / (1 + ((0.125 + 0.3333333333) / 2) ** 2)),
    "tanh": 5 / 3,
    "sigmoid": 1.0,
    "identity": 1.0,
    "softmax": math.sqrt(2),  # no gain of its own: kaiming treats it as ReLU-like
}

LOSSES: dict[str, tuple[type[heads.Head], type[nn.Module], int]] = {
    "bce": (heads.OrdinalHead, nn.BCEWithLogitsLoss, 3),
    "coral": (heads.CoralHead, nn.BCEWithLogitsLoss, 3),
    "cross_entropy": (heads.CategoricalHead, nn.CrossEntropyLoss, 4),
    "l1": (heads.RegressionHead, nn.L1Loss, 1),
    "mse": (heads.RegressionHead, nn.MSELoss, 1),
    "smooth_l1": (heads.RegressionHead, nn.SmoothL1Loss, 1),
}

OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, object]]] = {
    "adagrad": (torch.optim.Adagrad, {"lr": 0.01, "weight_decay": 0.0}),
    "adam": (torch.optim.Adam, {"lr": 0.01, "betas": (0.9, 0.999), "weight_decay": 0.0}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "betas": (0.9, 0.999), "weight_decay": 0.01}),
    "lbfgs": (torch.optim.LBFGS, {"lr": 1.0, "max_iter": 20, "line_search_fn": "strong_wolfe"}),
    "momentum": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": False}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.001, "alpha": 0.99, "momentum": 0.0}),
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0}),
}

SCHEDULERS: dict[str, tuple[type, dict[str, object]]] = {
    "cosine": (torch.optim.lr_scheduler.CosineAnnealingLR, {"T_max": 2, "eta_min": 0.0}),
    "exponential": (torch.optim.lr_scheduler.ExponentialLR, {"gamma": 0.98}),
    "multistep": (torch.optim.lr_scheduler.MultiStepLR, {"gamma": 0.3}),
    "none": (torch.optim.lr_scheduler.ConstantLR, {"factor": 1.0, "total_iters": 0}),
    "plateau": (torch.optim.lr_scheduler.ReduceLROnPlateau, {"mode": "max", "factor": 0.5}),
    "step": (torch.optim.lr_scheduler.StepLR, {"step_size": 30, "gamma": 0.5}),
}

MODELS = {
    "linear": ([(4, N_FEATURES)], 0.0),
    "mlp": ([(64, N_FEATURES), (4, 64)], 0.1),
    "tutorial": ([(64, N_FEATURES), (128, 64), (4, 128)], 0.9),
    "tabm": None,  # checked by its own branch of check_model
}


def check_data(trainer: Trainer, choice: str) -> None:
    table, data = trainer.prepared.table, trainer.members[0]
    y_test = trainer.prepared.tests[0][1]
    assert len(table) == 200
    assert len(data.y_train) + len(data.y_val) + len(y_test) == 200
    if choice == "synthetic":
        assert table.source.startswith("synthetic(n_rows=200"), table.source
    else:
        assert table.source.endswith("train.csv"), table.source


def check_model(trainer: Trainer, choice: str) -> None:
    if choice == "tabm":  # 3 BatchEnsemble blocks of 256, k=8 submodels per fit, dropout 0.1
        model = trainer.model
        assert isinstance(model, Network) and isinstance(model.backbone, PackedTabM)
        assert (model.backbone.k, model.backbone.arch, model.submodels) == (8, "tabm", 8)
        blocks = modules_of(model, PackedBatchEnsembleLinear)
        assert [tuple(b.weight.shape[1:]) for b in blocks] == [
            (N_FEATURES, 256),
            (256, 256),
            (256, 256),
        ]
        assert [m.p for m in modules_of(model, nn.Dropout)] == [0.1] * 3
        x = trainer.members[0].x_train[:5]
        assert model(x, submodels=True).shape == (1, 5, 8, 4)  # 8 submodels ...
        assert model(x).shape == (1, 5, 4)  # ... combined into one prediction
        return
    shapes, dropout = MODELS[choice]
    assert layer_shapes(trainer.model) == shapes
    found = modules_of(trainer.model, nn.Dropout)
    assert [m.p for m in found] == [dropout] * (len(shapes) - 1 if dropout else 0)
    assert not modules_of(trainer.model, nn.BatchNorm1d)


def check_embedding(trainer: Trainer, choice: str) -> None:
    model = trainer.model
    if choice == "none":
        assert not isinstance(model, Network)
        return
    embedding = model.embedding
    assert embedding.numeric == tuple(range(N_FEATURES))  # every phone feature is numeric
    inner = embedding.inner
    first = model.backbone.linears()[0]
    if choice == "piecewise_linear":  # bins fitted on the fit's own training rows
        assert isinstance(inner, PackedPiecewiseLinearEmbeddings)
        assert (inner.max_bins, inner.d_embedding, inner.version) == (48, 16, "B")
        x = trainer.members[0].x_train[:, 0]
        counts = inner.n_bins[0]
        assert int(counts[0]) == 48 and int(counts.min()) >= 1  # a 0/1 column: fewer bins
        assert float(inner.edges[0, 0, 0]) == pytest.approx(float(x.min()))
        assert float(inner.edges[0, 0, 48]) == pytest.approx(float(x.max()))
        assert first.weight.shape[1] == N_FEATURES * 16
    else:
        assert isinstance(inner, PackedPeriodicEmbeddings)
        assert (inner.n_frequencies, inner.d_embedding, inner.lite) == (48, 24, False)
        assert first.weight.shape[1] == N_FEATURES * 24


def check_activation(trainer: Trainer, choice: str) -> None:
    kind, attrs = ACTIVATIONS[choice]
    found = activations(trainer.model)
    hidden = len(linear_weights(trainer.model)) - 1
    assert activation_types(trainer.model) == [kind] * hidden
    for module in found:
        for name, value in attrs.items():
            assert getattr(module, name) == pytest.approx(value), name
    if choice == "prelu":
        assert found[0].weight.shape[-1] == 1
        assert float(found[0].weight.detach()[0].squeeze()) == pytest.approx(0.25)


def _std_close(w: torch.Tensor, expected: float, rel: float) -> None:
    assert float(w.std()) == pytest.approx(expected, rel=rel), (float(w.std()), expected)


def check_init(trainer: Trainer, choice: str, activation: str = "relu") -> None:
    """The weight statistics of the first (hidden) and last (output) linear layers."""
    weights, biases = linear_weights(trainer.model), linear_biases(trainer.model)
    first, last = weights[0], weights[-1]
    if choice != "default":
        assert all(float(b.abs().max()) == 0.0 for b in biases)
    if choice == "zeros":
        assert all(float(w.abs().max()) == 0.0 for w in weights)
    elif choice == "ones":
        assert all(bool((w == 1).all()) for w in weights)
    elif choice == "constant":
        assert all(bool((w == 0.05).all()) for w in weights)
    elif choice == "normal":
        assert abs(float(first.mean())) < 0.005
        _std_close(first, 0.05, 0.1)
    elif choice == "uniform":
        assert all(float(w.abs().max()) <= 0.1 for w in weights)
        assert float(first.max()) > 0.09 and float(first.min()) < -0.09
        _std_close(first, 0.2 / math.sqrt(12), 0.1)
    elif choice.startswith("kaiming"):
        # the hidden layer follows the activation's gain, the output layer is linear
        _std_close(first, GAINS[activation] / math.sqrt(N_FEATURES), 0.1)
        _std_close(last, 1 / math.sqrt(last.shape[1]), 0.15)
    elif choice.startswith("xavier"):
        for w in (first, last):
            _std_close(w, math.sqrt(2 / (w.shape[0] + w.shape[1])), 0.15)
    else:  # default: torch's kaiming_uniform(a=sqrt(5)), bound 1/sqrt(fan_in), uniform biases
        assert choice == "default"
        bound = 1 / math.sqrt(N_FEATURES)
        assert float(first.abs().max()) <= bound
        _std_close(first, bound / math.sqrt(3), 0.1)
        assert float(biases[0].abs().max()) > 0
    if choice.endswith("_uniform") or choice in ("uniform", "default"):
        assert float(first.abs().max()) < 3 * float(first.std()) * 1.01  # no normal tails


def check_loss(trainer: Trainer, choice: str) -> None:
    head_cls, criterion_cls, width = LOSSES[choice]
    assert type(trainer.head) is head_cls
    assert type(trainer.criterion) is criterion_cls
    assert trainer.head.num_classes == 4
    assert output_width(trainer.model, N_FEATURES) == width
    if choice == "coral":  # one shared score, then the rank biases
        assert layer_shapes(trainer.model)[-1][0] == 1
    if choice == "smooth_l1":
        assert trainer.criterion.beta == 1.0


def check_optim(trainer: Trainer, choice: str) -> None:
    kind, hparams = OPTIMIZERS[choice]
    assert type(trainer.optimizer) is kind
    group = trainer.optimizer.param_groups[0]
    for name, value in hparams.items():
        assert group[name] == (pytest.approx(value) if isinstance(value, float) else value), name
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in trainer.model.parameters()}


def check_scheduler(trainer: Trainer, choice: str) -> None:
    kind, hparams = SCHEDULERS[choice]
    assert type(trainer.scheduler) is kind
    for name, value in hparams.items():
        assert getattr(trainer.scheduler, name) == value, name
    if choice == "multistep":
        assert sorted(trainer.scheduler.milestones) == [50, 100, 150]
    assert trainer.scheduler.optimizer is trainer.optimizer


def check_tabular(trainer: Trainer) -> None:
    """experiment=tabular: what its YAML names is what the trainer holds."""
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(files("pricenet.conf") / "experiment" / "tabular.yaml")
    model, backbone = trainer.model, trainer.model.backbone
    assert isinstance(backbone, PackedTabM)
    assert (backbone.arch, backbone.k) == (recipe.model.arch, recipe.model.k)
    assert len(modules_of(model, nn.Dropout)) == recipe.model.blocks
    assert model.embedding is not None
    kind = recipe.defaults[1]["override /embedding"]
    assert {"piecewise_linear": PackedPiecewiseLinearEmbeddings}.get(
        kind, PackedPeriodicEmbeddings
    ) is type(model.embedding.inner)
    group = trainer.optimizer.param_groups[0]
    assert type(trainer.optimizer) is torch.optim.AdamW
    assert (group["lr"], group["weight_decay"]) == (recipe.optim.lr, recipe.optim.weight_decay)
    assert trainer.batch_size == recipe.trainer.batch_size
    assert trainer.early_stopping.patience == recipe.trainer.patience
    assert len(trainer.members[0].y_val) > 0  # early stopping on the ensemble's val score
    smoothing = recipe.get("loss", {}).get("label_smoothing", 0.0)
    assert trainer.criterion.label_smoothing == smoothing


def check_experiment(trainer: Trainer, choice: str) -> None:
    if choice == "tabular":
        check_tabular(trainer)
        return
    data, (_, y_test) = trainer.members[0], trainer.prepared.tests[0]
    assert len(data.y_val) == 0  # both recipes train on every non-test row
    if choice == "tutorial":
        assert layer_shapes(trainer.model) == MODELS["tutorial"][0]
        assert [m.p for m in modules_of(trainer.model, nn.Dropout)] == [0.9, 0.9]
        assert type(trainer.optimizer) is torch.optim.SGD
        assert trainer.optimizer.param_groups[0]["lr"] == 0.1
        assert trainer.batch_size == 8
        assert len(y_test) == 40  # 20% of 200
        # raw features: the training split is not centred
        assert float(data.x_train.mean(dim=0).abs().max()) > 1.0
    else:
        assert choice == "recommended"
        assert layer_shapes(trainer.model) == [(1, N_FEATURES)]
        assert type(trainer.head) is heads.CoralHead
        assert type(trainer.optimizer) is torch.optim.LBFGS
        assert trainer.optimizer.param_groups[0]["line_search_fn"] == "strong_wolfe"
        assert type(trainer.scheduler) is torch.optim.lr_scheduler.ConstantLR
        assert trainer.early_stopping.patience is None
        assert float(data.x_train.mean(dim=0).abs().max()) < 1e-4  # standardized


def check_cv(trainer: Trainer, choice: str) -> None:
    prepared = trainer.prepared
    if choice == "none":
        assert len(prepared.plan) == 1 and prepared.plan[0].fold is None
        return
    assert [m.fold for m in prepared.plan] == [0, 1, 2, 3, 4]
    assert trainer.model.members == 5
    held = np.concatenate([m.test for m in prepared.plan])
    assert sorted(held) == list(range(200))  # every row held out exactly once


CHECKS: dict[str, Callable[[Trainer, str], None]] = {
    "data": check_data,
    "model": check_model,
    "embedding": check_embedding,
    "activation": check_activation,
    "init": check_init,
    "loss": check_loss,
    "optim": check_optim,
    "scheduler": check_scheduler,
    "cv": check_cv,
    "experiment": check_experiment,
}


# ---------------------------------------------------------------- the tests


def test_every_group_has_the_documented_choices():
    assert choices("activation") == sorted(ACTIVATIONS)
    assert choices("init") == sorted(
        ["default", "uniform", "normal", "constant", "zeros", "ones"]
        + ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform"]
    )
    assert choices("loss") == sorted(LOSSES)
    assert choices("optim") == sorted(OPTIMIZERS)
    assert choices("scheduler") == sorted(SCHEDULERS)
    assert choices("model") == sorted(MODELS)
    assert choices("data") == ["csv", "synthetic"]
    assert choices("embedding") == ["none", "periodic", "piecewise_linear"]
    assert choices("experiment") == ["recommended", "tabular", "tutorial"]


def overrides_for(group: str, choice: str, small_csv) -> list[str]:
    extra = [f"data.path={small_csv}"] if (group, choice) == ("data", "csv") else []
    if group == "init":
        extra.append(f"model.hidden=[{WIDE}]")
    if group == "experiment":  # keep the recipe's batch size; shrink the rest again
        extra += ["trainer.epochs=2", "data.n_rows=200", "trainer.device=cpu"]
    return [f"{group}={choice}", *extra]


@pytest.mark.parametrize(("group", "choice"), ALL, ids=[f"{g}={c}" for g, c in ALL])
def test_every_choice_takes_effect(compose_cfg, small_csv, group, choice):
    cfg = compose_cfg(*overrides_for(group, choice, small_csv), shrink=group != "experiment")
    validate(cfg)
    CHECKS[group](build(cfg), choice)


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
def test_pairwise_choices_both_take_effect(compose_cfg, pair):
    g1, c1, g2, c2 = pair
    wide = [f"model.hidden=[{WIDE}]"] if g2 == "init" else []
    cfg = compose_cfg(f"{g1}={c1}", f"{g2}={c2}", *wide)
    trainer = build(cfg)
    CHECKS[g1](trainer, c1)
    if g2 == "init":
        check_init(trainer, c2, activation=c1)
    else:
        CHECKS[g2](trainer, c2)


def train_ok(cfg, run_dir) -> dict:
    metrics, artifacts = run(cfg, run_dir)
    assert metrics["status"] == "done"
    assert metrics["epochs_run"] == cfg.trainer.epochs
    assert len(metrics["history"]["train_loss"]) == cfg.trainer.epochs
    assert all(math.isfinite(v) for v in metrics["history"]["train_loss"])
    assert json.loads(artifacts["metrics.json"].read_text())["test_acc"] == metrics["test_acc"]
    for name in ("best.pt", "last.pt", "config.yaml", "summary.txt", "metrics.csv"):
        assert artifacts[name].is_file(), name
    return metrics


# One training run per group, on a choice that exercises an unusual path of the loop.
SMOKE = {
    "data": "csv",
    "model": "tutorial",
    "activation": "prelu",
    "init": "default",
    "loss": "coral",
    "optim": "rmsprop",
    "scheduler": "plateau",
    "experiment": "recommended",
}


@pytest.mark.parametrize(
    ("group", "choice"), SMOKE.items(), ids=[f"{g}={c}" for g, c in SMOKE.items()]
)
def test_one_choice_per_group_trains(compose_cfg, tmp_path, small_csv, group, choice):
    overrides = [o for o in overrides_for(group, choice, small_csv) if "hidden" not in o]
    cfg = compose_cfg(*overrides, shrink=group != "experiment")
    train_ok(cfg, tmp_path / "run")


def test_batch_norm_and_per_layer_overrides(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "model.batch_norm=true",
        "model.hidden=[16,8]",
        "+model.layer_activations.1={_target_:torch.nn.Tanh}",
        "+model.layer_inits.2={weight:{_target_:torch.nn.init.zeros_,_partial_:true}}",
    )
    trainer = build(cfg)
    assert activation_types(trainer.model) == [nn.ReLU, nn.Tanh]
    assert [m.features for m in modules_of(trainer.model, nn.BatchNorm1d)] == [16, 8]
    assert len(modules_of(trainer.model, nn.Dropout)) == 2
    weights = linear_weights(trainer.model)
    assert float(weights[-1].abs().sum()) == 0.0
    assert float(weights[0].abs().sum()) > 0.0
    train_ok(cfg, tmp_path / "run")
