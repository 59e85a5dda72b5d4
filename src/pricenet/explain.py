"""The tutorial's figures, drawn from pricenet's own configs, and a trained model's features.

    python -m pricenet.explain [activations] [schedulers] [ema] [out_dir=DIR] [epochs=N]
    python -m pricenet.explain features checkpoint=RUN [method=M] [data=CSV] [out_dir=DIR]

* ``activations``: every ``activation/`` config with its derivative (by autograd);
* ``schedulers``: the lr that every ``scheduler/`` config sets, epoch by epoch, over N epochs;
* ``ema``: the exponentially weighted average of a noisy series for several betas;
* ``features``: ``features.csv`` and ``features.png``, the checkpoint's features ranked by
  permutation importance, with Captum's attributions per class: integrated gradients, feature
  ablation or Shapley value sampling (see :mod:`pricenet.inference.attribution`).

Adding a config adds it to the figure: nothing here lists the choices. The output folder is
checked before any work.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import pricenet.config.config  # noqa: F401  (registers the config schemas)
from pricenet.config.cli import check_output_dir, parse_options
from pricenet.errors import ConfigError, exit_on_user_error
from pricenet.inference.attribution import METHODS
from pricenet.run.plots import DPI, ema, save_png

FIGURES = ("activations", "schedulers", "ema")
MODEL_FIGURES = ("features",)

USAGE = """\
usage: pricenet-explain [activations] [schedulers] [ema] [out_dir=DIR] [epochs=N]
       pricenet-explain features checkpoint=PATH [method=integrated_gradients] [data=CSV]
                        [out_dir=DIR] [repeats=10] [steps=64] [samples=25] [seed=0]

  activations  every activation config and its derivative (autograd)
  schedulers   the lr of every scheduler config per epoch (optim: the default config)
  ema          exponentially weighted averages of a noisy series for several betas
  features     features.csv + features.png: permutation importance (accuracy drop) and
               Captum's attributions per class of the checkpoint's model
  (no figure named: features when checkpoint= is given, else the first three)

  out_dir      where the files go (default <paths.root_dir>/outputs/explain; for features
               the checkpoint's run folder)
  epochs       length of the scheduler curves (default 200)
  checkpoint   features: a best.pt, or a run folder
  method       features: integrated_gradients (default), feature_ablation,
               shapley_value_sampling, or permutation (accuracy drop alone)
  data         features: a labelled CSV to explain on (default: the run's test split,
               re-created from its config.yaml)
  repeats      features: shuffles per feature (default 10)
  steps        features: integrated-gradient steps (default 64)
  samples      features: random feature orders of Shapley value sampling (default 25)
  seed         features: seed of the shuffles and orders (default 0)"""


@dataclass
class ExplainOptions:
    out_dir: str | None = None
    epochs: int = 200
    checkpoint: str | None = None
    method: str = "integrated_gradients"
    data: str | None = None
    repeats: int = 10
    steps: int = 64
    samples: int = 25
    seed: int = 0


def _grid(count: int, columns: int, cell: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A figure with ``count`` subplots in rows of ``columns``; unused cells hidden."""
    from matplotlib.figure import Figure

    rows = math.ceil(count / columns)
    fig = Figure(figsize=(cell[0] * columns, cell[1] * rows + 0.6), dpi=DPI, layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _describe(node: DictConfig) -> str:
    """``StepLR(step_size=30, gamma=0.5)`` for a ``_target_`` config."""
    args = ", ".join(f"{k}={v}" for k, v in node.items() if not str(k).startswith("_"))
    return f"{str(node._target_).rsplit('.', 1)[-1]}({args})"


def plot_activations(configs: dict[str, DictConfig], path: Path) -> Path:
    """Each activation ``f`` with ``f'`` computed by autograd, on [-4, 4]."""
    fig, axes = _grid(len(configs), 5, (3.2, 2.9))
    x = torch.linspace(-4, 4, 801, requires_grad=True)
    for ax, (name, node) in zip(axes, configs.items(), strict=True):
        module = instantiate(node).eval()  # eval: RReLU uses its mean slope, not a random one
        y = module(x)
        (slope,) = torch.autograd.grad(y.sum(), x)
        xs = x.detach().numpy()
        ax.axhline(0, color="gray", lw=0.6)
        ax.axvline(0, color="gray", lw=0.6)
        ax.plot(xs, y.detach().numpy(), lw=2, label="f(x)")
        ax.plot(xs, slope.numpy(), lw=1.5, ls="--", label="f'(x) by autograd")
        ax.set_title(f"activation={name}\n{_describe(node)}", fontsize=9)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", ncols=2)
    fig.suptitle("activations and their derivatives", fontsize=13)
    return save_png(fig, path)


def lr_curve(cfg: DictConfig, epochs: int) -> list[float]:
    """The lr each epoch trains with, stepping the scheduler as the trainer does.

    ReduceLROnPlateau is stepped with a made-up validation accuracy that rises for the first
    quarter of the epochs and then stays flat.
    """
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = instantiate(cfg.optim, _convert_="all")([param])
    scheduler = instantiate(cfg.scheduler, _convert_="all")(optimizer)
    rise = max(1, epochs // 4)
    lrs = []
    for epoch in range(1, epochs + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: changes nothing, but keeps the step order torch expects
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(min(epoch, rise) / rise)
        else:
            scheduler.step()
    return lrs


def plot_schedulers(configs: dict[str, DictConfig], epochs: int, path: Path) -> Path:
    """The lr per epoch of each scheduler config (with the default optimizer's lr)."""
    fig, axes = _grid(len(configs), 3, (4.4, 3.2))
    optim = next(iter(configs.values())).optim
    for ax, (name, cfg) in zip(axes, configs.items(), strict=True):
        lrs = lr_curve(cfg, epochs)
        ax.plot(range(1, epochs + 1), lrs, drawstyle="steps-post", lw=2)
        plateau = str(cfg.scheduler._target_).endswith("ReduceLROnPlateau")
        note = f" (val acc flat after epoch {max(1, epochs // 4)})" if plateau else ""
        ax.set_title(f"scheduler={name}{note}\n{_describe(cfg.scheduler)}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"learning rate per epoch over {epochs} epochs, starting from {_describe(optim)}",
        fontsize=12,
    )
    return save_png(fig, path)


def plot_ema(path: Path, betas: tuple[float, ...] = (0.5, 0.9, 0.98), seed: int = 0) -> Path:
    """A noisy seasonal series and its bias-corrected EMAs; one EMA also without correction."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    days = np.arange(1, 181)
    series = 12 + 8 * np.sin(2 * np.pi * (days - 30) / 180) + rng.normal(0, 2.5, len(days))
    fig = Figure(figsize=(9, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.scatter(days, series, s=8, color="gray", alpha=0.6, label="noisy values θ_t")
    for beta in betas:
        ax.plot(days, ema(series, beta), lw=2, label=f"β={beta:g} (≈ last {1 / (1 - beta):.0f})")
    worst = max(betas)
    ax.plot(
        days,
        ema(series, worst, bias_correction=False),
        lw=1.5,
        ls="--",
        color="black",
        label=f"β={worst:g} without bias correction",
    )
    ax.set_xlabel("t")
    ax.set_ylabel("value")
    ax.set_title("exponentially weighted average v_t = β·v_{t-1} + (1-β)·θ_t, shown bias-corrected")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return save_png(fig, path)


def explain_features(options: ExplainOptions, out_dir: Path) -> list[Path]:
    """``features.csv`` and ``features.png`` for ``options.checkpoint`` in ``out_dir``."""
    from pricenet.atomic import atomic_write_text
    from pricenet.inference.attribution import attribute, csv_rows, plot_features, run_test_rows
    from pricenet.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(options.checkpoint)
    if options.data:
        rows = csv_rows(options.data, predictor)
    else:
        rows = run_test_rows(_run_dir(options.checkpoint), predictor.schema)
    result = attribute(
        predictor,
        rows,
        options.method,
        repeats=options.repeats,
        steps=options.steps,
        samples=options.samples,
        seed=options.seed,
    )
    table = result.table()
    csv = atomic_write_text(
        out_dir / "features.csv", table.to_csv(index=False, float_format="%.6g")
    )
    png = plot_features(result, out_dir / "features.png")
    ig = options.method == "integrated_gradients"
    if ig and not np.nan_to_num(result.per_class).any():
        print("note: integrated gradients are 0: this head's probabilities are one-hot")
    if ig and predictor.categorical_features:
        print(
            "note: categorical features "
            f"({', '.join(predictor.categorical_features)}) are ranked by permutation "
            "importance only: a category has no path to integrate gradients along"
        )
    top = ", ".join(table["feature"].head(4))
    print(f"accuracy {result.baseline_accuracy:.4f} on {rows.source}; top features: {top}")
    return [csv, png]


def _run_dir(checkpoint: str) -> Path:
    path = Path(checkpoint).expanduser()
    return path if path.is_dir() else path.parent


def _check_options(figures: list[str], options: ExplainOptions) -> None:
    unknown = [f for f in figures if f not in FIGURES + MODEL_FIGURES]
    if unknown:
        choices = ", ".join(FIGURES + MODEL_FIGURES)
        raise ConfigError(f"unknown figure {unknown[0]!r}: choose from {choices}")
    if options.epochs < 1:
        raise ConfigError(f"epochs={options.epochs} is invalid: must be an integer >= 1")
    if options.method not in METHODS:
        raise ConfigError(f"method={options.method!r} is unknown: choose from {', '.join(METHODS)}")
    for key in ("repeats", "steps", "samples"):
        if getattr(options, key) < 1:
            raise ConfigError(f"{key}={getattr(options, key)} is invalid: must be an integer >= 1")
    if "features" in figures and not options.checkpoint:
        raise ConfigError("features: missing checkpoint=... (a best.pt or a run folder)")


def explain(figures: list[str], options: ExplainOptions) -> list[Path]:
    """Draw ``figures`` (names from :data:`FIGURES` and ``features``); return the files written.

    The options and the output folder are checked before any work.
    """
    _check_options(figures, options)
    written: list[Path] = []
    if "features" in figures:
        out_dir = check_output_dir(options.out_dir or _run_dir(options.checkpoint))
        written += explain_features(options, out_dir)
    figures = [f for f in figures if f in FIGURES]
    if not figures:
        return written
    if options.out_dir:
        check_output_dir(options.out_dir)
    GlobalHydra.instance().clear()  # a config composed earlier in this process
    with initialize_config_module("pricenet.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        base = compose("config")
        out_dir = check_output_dir(
            options.out_dir or Path(base.paths.root_dir) / "outputs" / "explain"
        )
        if "activations" in figures:
            configs = {
                name: compose("config", overrides=[f"activation={name}"]).activation
                for name in loader.get_group_options("activation")
            }
            written.append(plot_activations(configs, out_dir / "activations.png"))
        if "schedulers" in figures:
            epochs = f"trainer.epochs={options.epochs}"  # cosine's T_max follows it
            runs = {
                name: compose("config", overrides=[f"scheduler={name}", epochs])
                for name in loader.get_group_options("scheduler")
            }
            written.append(plot_schedulers(runs, options.epochs, out_dir / "schedulers.png"))
    if "ema" in figures:
        written.append(plot_ema(out_dir / "ema.png"))
    return written


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """The ``pricenet-explain`` command."""
    args = sys.argv[1:] if argv is None else argv
    figures = [a for a in args if "=" not in a and not a.startswith("-")]
    options = parse_options([a for a in args if a not in figures], ExplainOptions, USAGE)
    default = list(MODEL_FIGURES) if options.checkpoint else list(FIGURES)
    for path in explain(figures or default, options):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
