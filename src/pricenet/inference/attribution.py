"""Why a phone lands in a price class: permutation importance and Captum's attributions.

* **Permutation importance** (Breiman 2001): shuffle one feature column of held-out rows,
  so it carries no information, and measure how much the Predictor's accuracy drops; the
  mean and std over ``repeats`` shuffles. It uses only ``Predictor.predict``, so it sees the
  model exactly as the service and the command line do, labels decoded by the head. It ranks
  the table. (Captum's ``FeaturePermutation`` is not the same measure: it compares the
  torch output of one batch, not the decoded labels' accuracy, and cannot shuffle a
  categorical column's codes as inputs it attributes to.)
* **Per-class attributions** by Captum (``method=``) of each class probability of
  ``Predictor.probability_module()`` (raw features in, calibrated probabilities out), each
  relative to a baseline row: the held-out rows' mean for a numeric feature (an "average
  phone"), their most frequent category for a categorical one:

  - ``integrated_gradients`` (Sundararajan et al. 2017), Captum's ``IntegratedGradients``
    by the midpoint rule over ``steps`` points (``riemann_middle``; Captum's default
    Gauss-Legendre rule is no closer on a ReLU network's kinked paths): ``(x_f - x'_f)``
    times the mean gradient along the straight path from the baseline; they add up to
    ``p_k(x) - p_k(x')``
    (completeness, checked by the tests). A category has no path: NaN. A regression head's
    probabilities are one-hot, so its gradients are zero.
  - ``feature_ablation``: the change in ``p_k`` when one feature is set to the baseline's.
  - ``shapley_value_sampling`` (Castro et al. 2009): the mean change in ``p_k`` as the
    feature goes from the baseline's value to the row's, over ``samples`` random orders in
    which the features do so: an estimate of its Shapley value.
  - ``permutation``: permutation importance alone, no per-class columns.

  The table holds each feature's mean over rows of ``|attribution|`` per class.

Which rows: a labelled CSV given as ``data=``, else the run's held-out test split,
re-created from the run's ``config.yaml`` by :func:`run_test_rows` (the one place that knows
how the pipeline splits data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pricenet.errors import ConfigError, DataError, shown
from pricenet.nn.spec import PREDICT_ROWS
from pricenet.run.plots import DPI, save_png

if TYPE_CHECKING:
    import pandas as pd

    from pricenet.inference.predictor import Predictor
    from pricenet.tables import Schema, Table


@dataclass
class HeldOut:
    """Rows to explain: the raw feature columns, their true labels (original values)."""

    frame: pd.DataFrame
    labels: np.ndarray
    source: str


# method -> (column prefix, name in the figure, x-axis label of the figure)
METHODS: dict[str, tuple[str, str, str] | None] = {
    "integrated_gradients": (
        "ig",
        "integrated gradients",
        "mean |integrated gradient| of the class probability",
    ),
    "feature_ablation": (
        "ablation",
        "feature ablation",
        "mean |change of the class probability| when set to the baseline",
    ),
    "shapley_value_sampling": (
        "shapley",
        "Shapley value sampling",
        "mean |Shapley value| of the class probability",
    ),
    "permutation": None,
}


@dataclass
class Attributions:
    """Per feature (schema order): permutation importance and, unless ``method`` is
    ``permutation``, the mean |attribution| of each class probability."""

    features: list[str]
    classes: list[Any]
    method: str
    baseline_accuracy: float
    permutation_mean: np.ndarray  # (F,)
    permutation_std: np.ndarray  # (F,)
    per_class: np.ndarray | None  # (K, F): mean over rows of |attribution|; NaN: undefined
    rows: int
    repeats: int
    source: str

    @property
    def prefix(self) -> str | None:
        """The per-class columns' prefix (``ig``, ``ablation``, ``shapley``), None if none."""
        described = METHODS[self.method]
        return described[0] if described else None

    def table(self) -> pd.DataFrame:
        """Ranked by accuracy drop (then by total |attribution|), most important first."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "feature": self.features,
                "permutation_mean": self.permutation_mean,
                "permutation_std": self.permutation_std,
            }
        )
        order = ["permutation_mean"]
        if self.per_class is not None:
            frame[f"{self.prefix}_abs_mean"] = self.per_class.mean(axis=0)
            for k, cls in enumerate(self.classes):
                frame[f"{self.prefix}_abs_{cls}"] = self.per_class[k]
            order.append(f"{self.prefix}_abs_mean")
        frame = frame.sort_values(order, ascending=False, kind="stable")
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
    from pricenet.run.plan import make_plan, split_groups
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


def category_codes(table: Table) -> torch.Tensor:
    """Each categorical value's position in its categories, as the probability module reads
    them: :data:`~pricenet.tables.prep.UNKNOWN_CODE` outside them, ``MISSING_CODE`` when absent."""
    from pricenet.tables.prep import MISSING_CODE, UNKNOWN_CODE

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


def class_attributions(
    method: str,
    module: torch.nn.Module,
    features: torch.Tensor,
    codes: torch.Tensor | None,
    classes: int,
    *,
    steps: int = 64,
    samples: int = 25,
    seed: int = 0,
    chunk_rows: int = PREDICT_ROWS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Captum's ``method`` attribution of every class probability of ``module``:
    ``(n, K, numeric features)`` and ``(n, K, categorical features)`` (None without codes,
    or for integrated gradients: a category has no path to integrate along).

    The baseline is the rows' mean of each numeric feature and the most frequent code of
    each categorical one; ``seed`` fixes Shapley value sampling's random orders (the same
    for every row). Rows are attributed a few at a time, so that no forward pass of
    ``module`` (a row times its steps or its perturbations) is over ``chunk_rows`` rows.
    """
    baseline = features.nanmean(dim=0, keepdim=True)
    code_baseline = None if codes is None else codes.mode(dim=0).values[None]
    width = features.shape[1] + (0 if codes is None else codes.shape[1])
    per_row = steps if method == "integrated_gradients" else min(width, chunk_rows)
    rows = max(1, chunk_rows // per_row)
    parts = [
        _attribute_rows(
            method,
            module,
            (features[start : start + rows], baseline),
            None if codes is None else (codes[start : start + rows], code_baseline),
            classes,
            steps=steps,
            samples=samples,
            seed=seed,
            chunk_rows=chunk_rows,
        )
        for start in range(0, len(features), rows) or range(1)
    ]
    numeric = torch.cat([numeric for numeric, _ in parts])
    categorical = None if parts[0][1] is None else torch.cat([c for _, c in parts])
    return numeric, categorical


def _attribute_rows(
    method: str,
    module: torch.nn.Module,
    features: tuple[torch.Tensor, torch.Tensor],
    codes: tuple[torch.Tensor, torch.Tensor] | None,
    classes: int,
    *,
    steps: int,
    samples: int,
    seed: int,
    chunk_rows: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`class_attributions` of a few rows: ``features`` and ``codes`` are (rows,
    baseline) pairs; a forward pass of ``module`` takes at most ``chunk_rows`` rows."""
    from captum.attr import FeatureAblation, IntegratedGradients, ShapleyValueSampling

    x, baseline = features
    if method == "integrated_gradients":
        extra = None if codes is None else (codes[0],)
        # one row's steps in passes of chunk_rows when they are more (else: every step at once)
        batch = chunk_rows if len(x) * steps > chunk_rows else None
        per_class = [
            IntegratedGradients(_class_total(module, k)).attribute(
                x,
                baseline,
                additional_forward_args=extra,
                n_steps=steps,
                method="riemann_middle",
                internal_batch_size=batch,
            )
            if x.shape[1]
            else torch.zeros_like(x)
            for k in range(classes)
        ]
        return torch.stack(per_class, dim=1).detach(), None
    inputs: tuple[torch.Tensor, ...] = (x,)
    baselines: tuple[torch.Tensor, ...] = (baseline,)
    masks = (torch.arange(x.shape[1])[None],)
    if codes is not None:
        inputs += (codes[0],)
        baselines += (codes[1],)
        masks += (x.shape[1] + torch.arange(codes[0].shape[1])[None],)
    if method == "feature_ablation":
        algorithm, options = FeatureAblation(module), {}
    elif method == "shapley_value_sampling":
        algorithm, options = ShapleyValueSampling(module), {"n_samples": samples}
    else:
        raise ValueError(f"no per-class attribution called {method!r}")
    perturbations = min(sum(m.shape[1] for m in masks), chunk_rows)
    per_class = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)  # every chunk of rows: the same orders
        for k in range(classes):
            per_class.append(
                algorithm.attribute(
                    inputs,
                    baselines,
                    target=k,
                    feature_mask=masks,
                    perturbations_per_eval=perturbations,
                    **options,
                )
            )
    numeric = torch.stack([a[0] for a in per_class], dim=1)
    categorical = None if codes is None else torch.stack([a[1] for a in per_class], dim=1)
    return numeric, categorical


def _class_total(module: torch.nn.Module, k: int) -> Callable[..., torch.Tensor]:
    """The batch's summed probability of class ``k``, shape ``(1,)``: the module scores each
    row alone, so its gradient for a row is that row's own. Given per-row outputs, Captum
    takes the gradient of each of them apart (one per row and step), some 20 times slower."""

    def forward(features: torch.Tensor, *codes: torch.Tensor) -> torch.Tensor:
        return module(features, *codes)[:, k].sum().reshape(1)

    return forward


def attribute(
    predictor: Predictor,
    rows: HeldOut,
    method: str = "integrated_gradients",
    *,
    repeats: int = 10,
    steps: int = 64,
    samples: int = 25,
    seed: int = 0,
) -> Attributions:
    """Permutation importance of every feature and, unless ``method`` is ``permutation``,
    its per-class attributions (see :func:`class_attributions`)."""
    names = predictor.feature_names
    classes = predictor.class_labels
    base, mean, std = permutation_importance(predictor, rows, repeats, seed)
    per_class = None
    if METHODS[method] is not None:
        table = predictor.table(rows.frame)
        numeric = [j for j, f in enumerate(table.schema.features) if f.numeric]
        categorical = [j for j in range(len(names)) if j not in numeric]
        x = torch.tensor(table.numeric_array(np.float32))
        codes = category_codes(table) if categorical else None
        module = predictor.probability_module().cpu().eval()
        on_numeric, on_categorical = class_attributions(
            method, module, x, codes, len(classes), steps=steps, samples=samples, seed=seed
        )
        # a missing value stays missing in every perturbation (Captum mixes x (1 - m) + x' m,
        # and NaN * 0 is NaN): it has no attribution, so average over the rows that have one
        on_numeric = on_numeric.masked_fill(x.isnan()[:, None, :], float("nan"))
        per_class = np.full((len(classes), len(names)), np.nan)
        per_class[:, numeric] = on_numeric.abs().nanmean(dim=0).numpy()
        if on_categorical is not None:
            per_class[:, categorical] = on_categorical.abs().nanmean(dim=0).numpy()
    return Attributions(
        features=names,
        classes=classes,
        method=method,
        baseline_accuracy=base,
        permutation_mean=mean,
        permutation_std=std,
        per_class=per_class,
        rows=len(rows.frame),
        repeats=repeats,
        source=rows.source,
    )


# --------------------------------------------------------------------------- the figure


def plot_features(result: Attributions, path: str | Path) -> Path:
    """Ranked bars: accuracy drop (mean ± std), beside the mean |attribution| stacked by
    class unless the method is ``permutation``."""
    from matplotlib.figure import Figure

    table = result.table().iloc[::-1]  # most important at the top
    names = table["feature"].tolist()
    y = np.arange(len(names))
    described = METHODS[result.method]
    width = 12 if described else 6.5
    fig = Figure(figsize=(width, 0.32 * len(names) + 2.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2 if described else 1, sharey=True, squeeze=False)[0]
    left = axes[0]
    left.barh(y, table["permutation_mean"], xerr=table["permutation_std"], color="tab:blue")
    left.set_yticks(y, names)
    left.axvline(0, color="gray", lw=0.8)
    left.set_xlabel("accuracy drop when the feature is shuffled")
    left.set_title(
        f"permutation importance (mean ± std over {result.repeats} shuffles)\n"
        f"accuracy {result.baseline_accuracy:.3f} on {result.rows} held-out rows"
    )
    left.grid(axis="x", alpha=0.3)
    if described:
        prefix, title, xlabel = described
        right = axes[1]
        start = np.zeros(len(names))
        for cls in result.classes:
            values = np.nan_to_num(table[f"{prefix}_abs_{cls}"].to_numpy())  # NaN: undefined
            right.barh(y, values, left=start, label=f"class {cls}")
            start += values
        right.set_xlabel(xlabel)
        baseline = "mean" if result.method == "integrated_gradients" else "mean, commonest category"
        right.set_title(f"{title} per class (baseline: the rows' {baseline})")
        right.legend(fontsize=8, loc="lower right")
        right.grid(axis="x", alpha=0.3)
    fig.suptitle(f"feature importance: {result.source}", fontsize=11)
    return save_png(fig, path)
