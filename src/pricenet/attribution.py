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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pricenet.errors import ConfigError, DataError, shown
from pricenet.plots import DPI

if TYPE_CHECKING:
    import pandas as pd

    from pricenet.predict import Predictor
    from pricenet.tables import Schema, Table


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
    integrated_gradients: np.ndarray  # (K, F): mean over rows of |IG|; NaN: categorical
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


def run_test_rows(run_dir: Path, schema: Schema) -> HeldOut:
    """The run's held-out test rows, re-created from its ``config.yaml`` by replaying its
    split (the same data source, split sizes and seed). A cross-validated run has none: every
    row was seen by some fold model of its ensemble.

    The file is read as plain data (:class:`~pricenet.stored.StoredConfig`): the data source is
    one of the two pricenet ships, called directly with checked values, never instantiated.
    """
    from pricenet.plan import make_plan, split_groups
    from pricenet.stored import StoredConfig, is_int, is_number
    from pricenet.tables.duplicates import POLICIES, apply_policy
    from pricenet.tables.sources import load_stored_source

    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml to re-create the test split; pass data=CSV")
    stored = StoredConfig(config_file)
    folds = stored.value(
        "cv.folds", "an integer >= 2 or null", lambda v: v is None or is_int(v) and v >= 2, None
    )
    if folds is not None:
        raise ConfigError(
            f"{config_file}: a cross-validated run has no rows its ensemble never saw; "
            "pass data=<a labelled CSV>"
        )
    fraction = ("a fraction in [0, 1)", lambda v: is_number(v) and 0 <= v < 1)
    val_size = stored.value("data.val_size", *fraction)
    test_size = stored.value("data.test_size", *fraction)
    if val_size + test_size >= 1:
        raise ConfigError(f"{config_file}: data.val_size + data.test_size must be < 1")
    seed = stored.value(
        "trainer.seed", "an integer in 0..2**63-1", lambda v: is_int(v) and 0 <= v < 2**63
    )
    if test_size == 0:
        raise ConfigError(
            f"{config_file}: the run has no test split (data.test_size=0); pass data="
        )
    # a config written before data.duplicates existed kept repeated rows, as it did then
    policy = stored.value(
        "data.duplicates", "group, keep, drop or error", lambda v: v in POLICIES, "keep"
    )
    group = stored.value("data.group", "a column name or null", lambda v: v is None or v, None)
    table = load_stored_source(stored.node("data.source"), f"{config_file}: data.source")
    _check_same_data(table.schema, schema, f"{config_file}: data.source")
    if table.labels is None:
        raise DataError(f"{table.source}: no {schema.label!r} column; pass data=")
    table, found = apply_policy(table, policy)
    table = replace(table, duplicates=found)
    (member,) = make_plan(
        table.labels,
        table.schema,
        groups=split_groups(table, group),
        cv={"folds": None},
        val_size=val_size,
        test_size=test_size,
        seed=seed,
        seeds=1,
        source=table.source,
    )
    test = member.test
    frame = table.to_frame(with_labels=False).iloc[test][list(schema.feature_names)]
    labels = table.schema.decode_labels(table.labels[test])
    return HeldOut(
        frame.reset_index(drop=True), labels, f"test split of {run_dir} ({len(test)} rows)"
    )


def _check_same_data(data: Schema, model: Schema, where: str) -> None:
    """The rows must have the model's features and classes, or the accuracy means nothing."""
    absent = [name for name in model.feature_names if name not in data.feature_names]
    if absent:
        raise ConfigError(
            f"{where}: its rows have no column {shown(absent[0])} the model needs; "
            "pass data=<a labelled CSV>"
        )
    if (data.label, list(data.classes)) != (model.label, list(model.classes)):
        raise ConfigError(
            f"{where}: its label {shown(data.label)} (classes {shown(list(data.classes))}) is "
            f"not the model's {shown(model.label)} (classes {shown(list(model.classes))}); "
            "pass data="
        )


def csv_rows(path: str | Path, predictor: Predictor) -> HeldOut:
    """A labelled CSV's rows, read and validated by the same reader as ``predict``'s."""
    table = predictor.read(Path(path).expanduser())
    if table.labels is None:
        raise DataError(
            f"data={path}: column {predictor.label_name!r} missing: permutation importance "
            "needs labels"
        )
    frame = table.to_frame(with_labels=False)[predictor.feature_names]
    labels = predictor.schema.decode_labels(table.labels)
    return HeldOut(frame, labels, f"{path} ({len(frame)} rows)")


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
    module: torch.nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    steps: int = 64,
    codes: torch.Tensor | None = None,
) -> torch.Tensor:
    """IG of every class probability: ``(n, K, F)``, by the midpoint rule over ``steps``.

    ``codes`` (categorical features, see :meth:`Predictor.probability_module`) stay fixed at
    each row's own: a category has no straight path to a baseline, so no gradient either.
    """
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    delta = x - baseline
    with torch.enable_grad():
        path = (baseline + alphas[:, None, None] * delta[None]).reshape(-1, x.shape[1])
        path.requires_grad_(True)
        probs = module(path) if codes is None else module(path, codes.repeat(steps, 1))
        grads = []
        for k in range(probs.shape[1]):
            (grad,) = torch.autograd.grad(
                probs[:, k].sum(), path, retain_graph=k < probs.shape[1] - 1, allow_unused=True
            )
            grad = torch.zeros_like(path) if grad is None else grad
            grads.append(grad.reshape(steps, *x.shape).mean(dim=0) * delta)
    return torch.stack(grads, dim=1).detach()


def category_codes(table: Table) -> torch.Tensor:
    """Each categorical value's position in its categories, as the probability module reads
    them: :data:`~pricenet.predict.UNKNOWN_CODE` outside them, ``MISSING_CODE`` when absent."""
    from pricenet.predict import MISSING_CODE, UNKNOWN_CODE

    columns = []
    for feature in table.schema.features:
        if feature.kind != "categorical":
            continue
        position = {value: i for i, value in enumerate(feature.categories)}
        columns.append(
            [
                MISSING_CODE if value is None else position.get(value, UNKNOWN_CODE)
                for value in table.frame[feature.name]
            ]
        )
    return torch.tensor(columns, dtype=torch.int64).T.reshape(len(table), len(columns))


def attribute(
    predictor: Predictor, rows: HeldOut, repeats: int = 10, steps: int = 64, seed: int = 0
) -> Attributions:
    """Permutation importance of every feature, and integrated gradients of the numeric ones
    (a categorical feature's are NaN: they have no path to integrate along)."""
    names = predictor.feature_names
    base, mean, std = permutation_importance(predictor, rows, repeats, seed)
    table = predictor.table(rows.frame)
    numeric = [j for j, f in enumerate(table.schema.features) if f.numeric]
    x = torch.tensor(table.numeric_array(np.float32))
    codes = category_codes(table) if len(numeric) < len(names) else None
    module = predictor.probability_module().cpu().eval()
    ig = integrated_gradients(module, x, x.nanmean(dim=0), steps, codes)
    per_feature = np.full((len(predictor.class_labels), len(names)), np.nan)
    per_feature[:, numeric] = ig.abs().nanmean(dim=0).numpy()
    return Attributions(
        features=names,
        classes=predictor.class_labels,
        baseline_accuracy=base,
        permutation_mean=mean,
        permutation_std=std,
        integrated_gradients=per_feature,
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
        values = np.nan_to_num(table[f"ig_abs_{cls}"].to_numpy())  # categorical: no IG
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
