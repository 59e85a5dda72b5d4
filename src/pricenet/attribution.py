"""Why a phone lands in a price class: permutation importance and integrated gradients.

* **Permutation importance** (Breiman 2001): shuffle one feature column of held-out rows,
  so it carries no information, and measure how much the Predictor's accuracy drops; the
  mean and std over ``repeats`` shuffles. It uses only ``Predictor.predict``, so it sees the
  model exactly as the service and the command line do, labels decoded by the head.
* **Integrated gradients** (Sundararajan et al. 2017) of each class probability, on
  ``Predictor.probability_module()`` (raw features in, calibrated probabilities out): for a
  row x and a baseline x', ``IG_f = (x_f - x'_f) * mean_a dp_k/dx_f(x' + a (x - x'))`` over
  ``steps`` midpoints a in (0, 1). The baseline is the held-out rows' mean (an "average
  phone"), so an attribution says how much a feature moves the probability away from it;
  they add up to ``p_k(x) - p_k(x')`` (completeness, checked by the tests). This is the
  algorithm Captum's ``IntegratedGradients`` implements; twenty lines of autograd here save
  a dependency. A regression head's probabilities are one-hot, so its gradients are zero.

Which rows: a labelled CSV given as ``data=``, else the run's held-out test split,
re-created from the run's ``config.yaml`` by :func:`run_test_rows` (the one place that knows
how the pipeline splits data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pricenet.errors import ConfigError, DataError
from pricenet.plots import DPI

if TYPE_CHECKING:
    import pandas as pd

    from pricenet.predict import Predictor

# The data sources a run's config.yaml may name; anything else is refused, never imported.
KNOWN_SOURCES = ("pricenet.tables.sources.csv", "pricenet.tables.sources.synthetic")


@dataclass
class HeldOut:
    """Rows to explain: the raw feature columns, their true labels (original values)."""

    frame: pd.DataFrame
    labels: np.ndarray
    source: str


@dataclass
class Attributions:
    """Per feature (schema order): permutation importance and mean |IG| per class."""

    features: list[str]
    classes: list[Any]
    baseline_accuracy: float
    permutation_mean: np.ndarray  # (F,)
    permutation_std: np.ndarray  # (F,)
    integrated_gradients: np.ndarray  # (K, F): mean over rows of |IG|
    rows: int
    repeats: int
    source: str

    def table(self) -> pd.DataFrame:
        """Ranked by accuracy drop (then by total |IG|), most important first."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "feature": self.features,
                "permutation_mean": self.permutation_mean,
                "permutation_std": self.permutation_std,
                "ig_abs_mean": self.integrated_gradients.mean(axis=0),
            }
        )
        for k, cls in enumerate(self.classes):
            frame[f"ig_abs_{cls}"] = self.integrated_gradients[k]
        frame = frame.sort_values(
            ["permutation_mean", "ig_abs_mean"], ascending=False, kind="stable"
        )
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- which rows


def run_test_rows(run_dir: Path, feature_names: list[str]) -> HeldOut:
    """The run's held-out test rows, re-created from its ``config.yaml`` by replaying its plan
    (the same data source, split sizes and seed). A cross-validated run has none: every row
    was seen by some fold model of its ensemble."""
    from omegaconf import OmegaConf

    from pricenet.members import load_data, plan_for

    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml to re-create the test split; pass data=CSV")
    cfg = OmegaConf.load(config_file)
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    if not isinstance(source, dict) or source.get("_target_") not in KNOWN_SOURCES:
        raise ConfigError(f"{config_file}: data.source is not one of {', '.join(KNOWN_SOURCES)}")
    if cfg.get("cv", {}).get("folds"):
        raise ConfigError(
            f"{config_file}: a cross-validated run has no rows its ensemble never saw; "
            "pass data=<a labelled CSV>"
        )
    table = load_data(cfg)
    test = plan_for(cfg, table)[0].test
    if len(test) == 0:
        raise ConfigError(
            f"{config_file}: the run has no test split (data.test_size=0); pass data="
        )
    frame = table.to_frame(with_labels=False).iloc[test][feature_names].reset_index(drop=True)
    labels = table.schema.decode_labels(table.labels[test])
    return HeldOut(frame, labels, f"test split of {run_dir} ({len(test)} rows)")


def csv_rows(path: str | Path, feature_names: list[str], label: str) -> HeldOut:
    """A labelled CSV's rows (validated by the Predictor when predicted)."""
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data={path}: file not found")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"data={path}: cannot be read as CSV ({err})") from None
    if label not in frame.columns:
        raise DataError(
            f"data={path}: column {label!r} missing: permutation importance needs labels"
        )
    return HeldOut(frame, frame[label].to_numpy(), f"{path} ({len(frame)} rows)")


# --------------------------------------------------------------------------- the measures


def accuracy(predictor: Predictor, frame: pd.DataFrame, labels: np.ndarray) -> float:
    predicted = predictor.predict(frame)[predictor.label_name].to_numpy()
    return float(np.mean(predicted == labels))


def permutation_importance(
    predictor: Predictor, rows: HeldOut, repeats: int = 10, seed: int = 0
) -> tuple[float, np.ndarray, np.ndarray]:
    """Baseline accuracy, and the accuracy drop's mean and std per feature over ``repeats``."""
    names = predictor.feature_names
    rng = np.random.default_rng(seed)
    base = accuracy(predictor, rows.frame, rows.labels)
    drops = np.empty((len(names), repeats))
    for j, name in enumerate(names):
        column = rows.frame[name].to_numpy()
        for r in range(repeats):
            shuffled = rows.frame.copy()
            shuffled[name] = rng.permutation(column)
            drops[j, r] = base - accuracy(predictor, shuffled, rows.labels)
    return base, drops.mean(axis=1), drops.std(axis=1)


def integrated_gradients(
    module: torch.nn.Module, x: torch.Tensor, baseline: torch.Tensor, steps: int = 64
) -> torch.Tensor:
    """IG of every class probability: ``(n, K, F)``, by the midpoint rule over ``steps``."""
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    delta = x - baseline
    with torch.enable_grad():
        path = (baseline + alphas[:, None, None] * delta[None]).reshape(-1, x.shape[1])
        path.requires_grad_(True)
        probs = module(path)
        grads = []
        for k in range(probs.shape[1]):
            (grad,) = torch.autograd.grad(
                probs[:, k].sum(), path, retain_graph=k < probs.shape[1] - 1, allow_unused=True
            )
            grad = torch.zeros_like(path) if grad is None else grad
            grads.append(grad.reshape(steps, *x.shape).mean(dim=0) * delta)
    return torch.stack(grads, dim=1).detach()


def attribute(
    predictor: Predictor, rows: HeldOut, repeats: int = 10, steps: int = 64, seed: int = 0
) -> Attributions:
    """Permutation importance and integrated gradients of ``predictor`` on ``rows``."""
    names = predictor.feature_names
    base, mean, std = permutation_importance(predictor, rows, repeats, seed)
    features, _ = predictor.validate(rows.frame)
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    module = predictor.probability_module().cpu().eval()
    ig = integrated_gradients(module, x, x.mean(dim=0), steps)
    return Attributions(
        features=names,
        classes=predictor.class_labels,
        baseline_accuracy=base,
        permutation_mean=mean,
        permutation_std=std,
        integrated_gradients=ig.abs().mean(dim=0).numpy(),
        rows=len(rows.frame),
        repeats=repeats,
        source=rows.source,
    )


# --------------------------------------------------------------------------- the figure


def plot_features(result: Attributions, path: str | Path) -> Path:
    """Ranked bars: accuracy drop (mean ± std) beside mean |IG| stacked by class."""
    from matplotlib.figure import Figure

    table = result.table().iloc[::-1]  # most important at the top
    names = table["feature"].tolist()
    y = np.arange(len(names))
    fig = Figure(figsize=(12, 0.32 * len(names) + 2.2), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(y, table["permutation_mean"], xerr=table["permutation_std"], color="tab:blue")
    left.set_yticks(y, names)
    left.axvline(0, color="gray", lw=0.8)
    left.set_xlabel("accuracy drop when the feature is shuffled")
    left.set_title(
        f"permutation importance (mean ± std over {result.repeats} shuffles)\n"
        f"accuracy {result.baseline_accuracy:.3f} on {result.rows} held-out rows"
    )
    left.grid(axis="x", alpha=0.3)
    start = np.zeros(len(names))
    for cls in result.classes:
        values = table[f"ig_abs_{cls}"].to_numpy()
        right.barh(y, values, left=start, label=f"class {cls}")
        start += values
    right.set_xlabel("mean |integrated gradient| of the class probability")
    right.set_title("integrated gradients per class (baseline: the rows' mean)")
    right.legend(fontsize=8, loc="lower right")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(f"feature importance: {result.source}", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
