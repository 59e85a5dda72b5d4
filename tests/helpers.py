"""Helpers shared by the test modules (so no test module imports another).

The model-inspecting helpers (``linear_weights``, ``activation_types``, ``output_width`` ...)
are the one place that knows how a built model holds its layers: when the model's layout
changes (e.g. several models packed into batched weights), only these change.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from pricenet.config.seed import set_seed
from pricenet.engine.loop import Trainer
from pricenet.errors import ConfigError, exit_on_user_error
from pricenet.nn import packed
from pricenet.nn.tabm import TabMDropout
from pricenet.run.fits import build_trainer, load_data, plan_for, prepare
from pricenet.run.pipeline import run
from pricenet.run.recipe import Recipe
from pricenet.tables import MOBILE_PRICE

FEATURES = list(MOBILE_PRICE.feature_names)
LABEL = MOBILE_PRICE.label

# The packed model's layers, and the torch module each stands for (member by member).
PACKED_AS = {
    packed.PackedLinear: nn.Linear,
    packed.PackedDropout: nn.Dropout,
    packed.PackedBatchNorm1d: nn.BatchNorm1d,
    packed.PackedPReLU: nn.PReLU,
    packed.PackedRReLU: nn.RReLU,
    TabMDropout: nn.Dropout,
}
# Modules that are layers of an MLP but not its activation.
_NOT_ACTIVATIONS = (
    packed.PackedLinear,
    packed.PackedDropout,
    packed.PackedBatchNorm1d,
    packed.PackedRankBiases,
    packed.PackedMLP,
)


# ---------------------------------------------------------------- building without training


def build(cfg: DictConfig) -> Trainer:
    """Data, head, model, optimizer and scheduler of ``cfg`` on the CPU, wired, not trained.

    The trainer also carries ``prepared`` (the table, plan and member tensors) for the checks.
    """
    set_seed(cfg.trainer.seed)
    recipe = Recipe.of(cfg)
    table = load_data(recipe.data)
    prepared = prepare(recipe, table, plan_for(recipe, table), torch.device("cpu"))
    trainer = build_trainer(recipe, prepared)
    trainer.prepared = prepared
    return trainer


# ---------------------------------------------------------------- what a built model holds
# The model is packed (weights [M, in, out]); these read member 0 as a plain MLP would hold it.


def linears(model: nn.Module) -> list[packed.PackedLinear]:
    """The model's linear layers, input first."""
    return [m for m in model.modules() if isinstance(m, packed.PackedLinear)]


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    """Each linear layer's weight (member 0) as an ``(out, in)`` tensor, input layer first."""
    return [layer.weight.detach()[0].T for layer in linears(model)]


def linear_biases(model: nn.Module) -> list[torch.Tensor]:
    """Each linear layer's bias (member 0) as an ``(out,)`` tensor, input layer first."""
    return [layer.bias.detach()[0, 0] for layer in linears(model)]


def layer_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """``(out, in)`` of each linear layer, input layer first."""
    return [tuple(w.shape) for w in linear_weights(model)]


def activations(model: nn.Module) -> list[nn.Module]:
    """The activation modules between the linear layers, in order."""
    return [
        m for m in model.modules() if not isinstance(m, _NOT_ACTIVATIONS) and not list(m.children())
    ]


def activation_types(model: nn.Module) -> list[type[nn.Module]]:
    """The torch class each activation module is (or stands for, when packed), in order."""
    return [PACKED_AS.get(type(m), type(m)) for m in activations(model)]


def modules_of(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    """Every module that is, or stands for, ``kind`` (Dropout, BatchNorm1d ...)."""
    return [m for m in model.modules() if PACKED_AS.get(type(m), type(m)) is kind]


def output_width(model: nn.Module, n_features: int) -> int:
    """How many outputs the model gives per row (in eval mode, on a probe batch)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(3, n_features))
    model.train(was_training)
    return int(out.shape[-1])


# ---------------------------------------------------------------- shared by several modules


def train(compose_cfg: Callable[..., DictConfig], run_dir: Path, *overrides: str):
    """Train a small run; return its metrics and its test split as a Kaggle frame with ids."""
    cfg = compose_cfg("data.n_rows=400", "trainer.epochs=3", "report.plots=false", *overrides)
    metrics, _ = run(cfg, run_dir)
    recipe = Recipe.of(cfg)
    table = load_data(recipe.data)
    test = plan_for(recipe, table)[0].test
    frame: pd.DataFrame = table.to_frame().iloc[test].reset_index(drop=True)
    frame.insert(0, "id", [f"phone-{i:04d}" for i in test])
    return metrics, frame


def assert_refused_before_the_run(
    cfg: DictConfig, run_dir: Path, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cfg`` is refused with a ConfigError matching ``message`` before ``run_dir`` exists,
    and from the command line as one ``error:`` line and exit status 2."""
    with pytest.raises(ConfigError, match=message):
        run(cfg, run_dir)
    assert not run_dir.exists()
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(run)(cfg, run_dir)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def assert_png(path: Path, min_size: tuple[int, int] = (400, 300)) -> None:
    """A real PNG, at least ``min_size`` pixels, and not a blank canvas."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size > 10_000, path
    with Image.open(path) as image:
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 128).mean() > 0.005, f"{path}: almost nothing drawn"


def full_disk_on_savefig(monkeypatch) -> None:
    """Make every matplotlib figure's ``savefig`` write half a PNG, then fail as a full disk
    does (ENOSPC): what a writer that is not atomic leaves behind shows."""
    from matplotlib.figure import Figure

    def half_then_fail(self, target, **kwargs):
        handle = open(target, "wb") if isinstance(target, str | Path) else target  # noqa: SIM115
        handle.write(b"\x89PNG\r\n\x1a\n half a picture")
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
